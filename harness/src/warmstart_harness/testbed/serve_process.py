"""``warmstart serve`` as a child process on 127.0.0.1:<free port>; stopped by its PID."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from warmstart_harness.testbed.net import free_port, wait_until
from warmstart_harness.testbed.procs import stop_process


class ServeError(RuntimeError):
    """The serve process exited or did not reach a state in time (message has its log)."""


def http_json(url: str, body: Any = None, timeout: float = 60) -> tuple[int, Any, dict[str, str]]:
    """GET (or POST ``body`` as JSON); returns status, decoded JSON body and headers."""
    raw = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=raw, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), dict(e.headers)


class ServeProcess:
    def __init__(
        self,
        spec: Path,
        node_options: Sequence[str],
        log: Path,
        *,
        extra_args: Sequence[str] = (),
        start_timeout: float = 30,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [
            sys.executable, "-m", "warmstart.cli.main", "serve", str(spec),
            "--listen", f"127.0.0.1:{self.port}", *extra_args,
        ]  # fmt: skip
        for option in node_options:
            cmd += ["--node", option]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            self.wait(self.up, start_timeout, "the router to listen")
        except BaseException:
            self.stop()
            raise

    def up(self) -> bool:
        try:
            return http_json(self.url + "/ping", timeout=5)[0] in (200, 503)
        except (urllib.error.URLError, ConnectionError):
            return False

    def status(self) -> dict[str, Any]:
        code, body, _ = http_json(self.url + "/endpoint/status", timeout=10)
        if code != 200 or not isinstance(body, dict):
            raise ServeError(f"/endpoint/status answered {code}")
        return body

    def ready(self) -> list[dict[str, Any]]:
        return [r for r in self.status()["replicas"] if r["state"] == "ready"]

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.status()["events"] if kind is None or e["kind"] == kind]

    def wait(self, predicate: Callable[[], object], timeout: float, what: str) -> None:
        def check() -> bool:
            if self.proc.poll() is not None:
                raise ServeError(f"serve exited {self.proc.returncode}:\n{self.log_tail()}")
            return bool(predicate())

        if not wait_until(check, timeout, interval=0.2):
            raise ServeError(f"timed out waiting for {what}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM (serve drains and deletes its replicas), SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                stop_process(self.proc)
        return self.proc.returncode
