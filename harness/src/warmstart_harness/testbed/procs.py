"""Small helpers for daemons started by tests and benchmarks: free ports, waiting, stopping."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self, TypeAlias

# a process started in binary or in text mode: the functions here touch neither pipe
AnyPopen: TypeAlias = subprocess.Popen[bytes] | subprocess.Popen[str]


def wait_ready(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    proc: AnyPopen | None = None,
    log: Path | None = None,
) -> None:
    """Poll ``check`` until it is true; raise with the daemon's log tail if it never is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.02)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    state = (
        f" (exited with {proc.returncode})" if proc is not None and proc.poll() is not None else ""
    )
    raise RuntimeError(f"{what} did not become ready in {timeout:.0f}s{state}{tail}")


def stop_process(proc: AnyPopen, timeout: float = 10.0) -> None:
    """Stop a process we started, by its PID: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


class Daemon:
    """What the test bed's daemon processes share: ``proc`` listening on ``bind_host:port``,
    :meth:`start` and :meth:`stop` (also on leaving a ``with`` block)."""

    proc: subprocess.Popen[bytes] | None
    bind_host: str
    port: int

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _start_now(self) -> None:
        """Start; if that fails, stop what the attempt left behind before the error goes on."""
        try:
            self.start()
        except BaseException:
            self.stop()
            raise

    @property
    def host(self) -> str:
        return f"{self.bind_host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
