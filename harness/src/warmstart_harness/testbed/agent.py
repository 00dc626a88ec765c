"""``warmstart agent`` as a subprocess for tests and benchmarks.

:class:`AgentProcess` picks a free port, starts ``python -m warmstart.cli.main agent --listen
127.0.0.1:PORT --store DIR --upstream REGISTRY=URL --peer URL ...`` (settings without a flag,
such as the containerd socket, go into a TOML file passed with ``--config``), waits until
``GET /healthz`` answers 200, and stops it by PID: :meth:`stop` (SIGTERM, then SIGKILL) or
:meth:`kill` (SIGKILL at once, for crash tests). :meth:`start` again reuses the port and store.

With ``netns`` the agent runs inside that network namespace (``nsenter --net=...``) and
:meth:`wait_ready` probes it from inside the namespace too.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from warmstart.containerd.hosts import toml_string
from warmstart.fetch.interfaces import PEER_TOKEN_HEADER
from warmstart_harness.testbed.net import LOOPBACK, free_port
from warmstart_harness.testbed.procs import Daemon, stop_process, wait_ready


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return toml_string(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def render_config(settings: Mapping[str, Any]) -> str:
    """A flat TOML document (plus one level of tables, e.g. ``upstreams``)."""
    lines = []
    tables = []
    for key, value in settings.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        elif value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables:
        for sub, entry in table.items():
            lines.append(f"\n[{name}.{toml_string(str(sub))}]")
            for key, value in entry.items():
                if value is not None:
                    lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


class AgentProcess(Daemon):
    """One ``warmstart agent`` on 127.0.0.1:<free port> (inside ``netns`` if given)."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        upstreams: Mapping[str, str] | None = None,
        peers: Sequence[str] = (),
        store: Path | None = None,
        port: int | None = None,
        settings: Mapping[str, Any] | None = None,
        extra_args: Sequence[str] = (),
        netns: str | None = None,
        env: Mapping[str, str] | None = None,
        start: bool = True,
        ready_timeout: float = 30.0,
        listen_host: str = LOOPBACK,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="ws-agent-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.store = store if store is not None else self.workdir / "store"
        self.upstreams = dict(upstreams or {})
        self.peers = list(peers)
        self.settings = dict(settings or {})
        self.extra_args = list(extra_args)
        self.netns = netns
        self.bind_host = listen_host
        self.env = dict(env or {})
        self.port = port or free_port()
        self.log = self.workdir / "agent.log"
        self.config_file = self.workdir / "agent.toml"
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        if start:
            self._start_now()

    # -- addresses --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def peer_token(self) -> str | None:
        """The cluster's peer token from ``settings``; :meth:`post_json` sends it."""
        token = self.settings.get("peer_token")
        return str(token) if token else None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # -- lifecycle --------------------------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [
            *(["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []),
            sys.executable,
            "-m",
            "warmstart.cli.main",
            "agent",
            "--listen",
            self.host,
            "--store",
            str(self.store),
        ]
        if self.settings:
            cmd += ["--config", str(self.config_file)]
        for registry, url in self.upstreams.items():
            cmd += ["--upstream", f"{registry}={url}"]
        for peer in self.peers:
            cmd += ["--peer", peer]
        return [*cmd, *self.extra_args]

    def start(self) -> Self:
        if self.running:
            raise RuntimeError(f"agent on {self.url} is already running")
        if self.settings:
            self.config_file.write_text(render_config(self.settings))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_ready(
            self.healthy, self.ready_timeout, f"warmstart agent {self.url}", self.proc, self.log
        )
        return self

    def healthy(self) -> bool:
        try:
            status, _ = self.get("/healthz", timeout=1)
        except OSError:
            return False
        return status == 200

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL if it lingers; always reaped."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL by PID (a crash: no cleanup runs), then reap."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- a tiny client (from inside the agent's netns, if it has one; the product's client is
    # warmstart.agent.client.AgentClient, which cannot dial into a netns) -----------------
    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.netns is not None:
            from warmstart_harness.testbed.netns import NetnsHTTPConnection

            return NetnsHTTPConnection(self.netns, self.bind_host, self.port, timeout=timeout)
        return http.client.HTTPConnection(self.bind_host, self.port, timeout=timeout)

    def get(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        conn = self._connection(timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def post_json(self, path: str, body: Any, timeout: float = 600) -> tuple[int, Any]:
        conn = self._connection(timeout)
        headers = {"Content-Type": "application/json"}
        if self.peer_token:
            headers[PEER_TOKEN_HEADER] = self.peer_token
        try:
            conn.request("POST", path, body=json.dumps(body), headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(data)
        except ValueError:
            return resp.status, data.decode("utf-8", "replace")

    def status(self) -> Any:
        code, body = self.get("/status")
        if code != 200:
            raise RuntimeError(f"GET /status answered {code}: {body[:200]!r}")
        return json.loads(body)

    def prewarm(
        self,
        reference: str,
        *,
        hot: bool = False,
        platform: str | None = None,
        model: bool = False,
        pin: bool = False,
    ) -> tuple[int, Any]:
        body: dict[str, Any] = {"reference": reference, "platform": platform, "hot": hot}
        if model:
            body["model"] = True
        if pin:
            body["pin"] = True
        return self.post_json("/prewarm", body)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
