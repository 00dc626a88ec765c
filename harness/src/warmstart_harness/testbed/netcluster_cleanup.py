"""What undoes a :class:`~warmstart_harness.testbed.netcluster.NetCluster`: the processes, namespaces and
root links it made (held by a finalizer, so they must not reference the cluster), and
SIGTERM/SIGHUP turned into SystemExit so with-blocks and finalizers run."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from warmstart_harness.testbed.netns import NETNS_DIR, run_cmd
from warmstart_harness.testbed.procs import stop_process

if TYPE_CHECKING:
    pass


# -- cleanup state (held by the finalizer, so it must not reference the cluster) --------------


class _Stoppable(Protocol):
    """Anything with ``stop()`` (RegistryProcess, AgentProcess, ContainerdProcess)."""

    def stop(self) -> None: ...


S = TypeVar("S", bound=_Stoppable)
T = TypeVar("T")


@dataclass
class Resources:
    """What one cluster created and must remove, newest last; entries go once removed."""

    processes: list[subprocess.Popen[Any] | _Stoppable] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    root_links: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.processes or self.namespaces or self.root_links)

    def cleanup(self) -> None:
        """Remove everything; each step runs even if an earlier one failed or was interrupted.

        The first exception (e.g. a second Ctrl-C) is raised at the end; what could not be
        removed stays listed so the finalizer can try again at exit.
        """
        errors: list[BaseException] = []
        for proc in reversed(list(self.processes)):
            self._step(errors, self.processes, proc, _stop_one)
        for ns in reversed(list(self.namespaces)):
            self._step(errors, self.namespaces, ns, _delete_netns)
        for link in reversed(list(self.root_links)):
            self._step(errors, self.root_links, link, _delete_root_link)
        if errors:
            raise errors[0]

    @staticmethod
    def _step(
        errors: list[BaseException], items: list[T], item: T, fn: Callable[[T], object]
    ) -> None:
        try:
            fn(item)
            items.remove(item)
        except BaseException as exc:
            errors.append(exc)


def _stop_one(proc: subprocess.Popen[Any] | _Stoppable) -> None:
    if isinstance(proc, subprocess.Popen):
        stop_process(proc, timeout=5)
    else:
        proc.stop()


def _delete_netns(ns: str) -> None:
    if not (NETNS_DIR / ns).exists():
        return
    pids = run_cmd(["ip", "netns", "pids", ns], check=False).stdout.split()
    if pids:
        warnings.warn(
            f"processes {', '.join(pids)} still run in network namespace {ns} (not started "
            "through the cluster); it is unmounted now but lives on until they exit",
            RuntimeWarning,
            stacklevel=2,
        )
    proc = run_cmd(["ip", "netns", "del", ns], check=False)
    if proc.returncode != 0 and (NETNS_DIR / ns).exists():
        raise RuntimeError(f"ip netns del {ns} failed: {proc.stderr.strip()}")


def _delete_root_link(name: str) -> None:
    """Delete a root veth end we created, if deleting its namespace did not already."""
    if Path("/sys/class/net", name).exists():
        run_cmd(["ip", "link", "del", name], check=False)


def cleanup_resources(resources: Resources) -> None:
    """The finalizer: interpreter exit or garbage collection of an unclosed cluster."""
    with contextlib.suppress(Exception):
        resources.cleanup()


# -- SIGTERM / SIGHUP -> SystemExit, so with-blocks and finalizers run ----------------------------


class ExitSignals:
    """Turns SIGTERM/SIGHUP (and SIGINT if its handler is SIG_DFL) into ``SystemExit``.

    Installed while at least one cluster is open, only over default handlers and only from the
    main thread; the previous handlers come back when the last cluster closes.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._installed: list[signal.Signals] = []

    @staticmethod
    def _raise_exit(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._users > 1 or threading.current_thread() is not threading.main_thread():
                return
            for sig in self.SIGNALS:
                if signal.getsignal(sig) == signal.SIG_DFL:
                    signal.signal(sig, self._raise_exit)
                    self._installed.append(sig)

    def release(self) -> None:
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users or threading.current_thread() is not threading.main_thread():
                return
            for sig in self._installed:
                if signal.getsignal(sig) == self._raise_exit:
                    signal.signal(sig, signal.SIG_DFL)
            self._installed = []


EXIT_SIGNALS = ExitSignals()
