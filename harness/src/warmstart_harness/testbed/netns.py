"""Running things inside a network namespace: commands (nsenter), Python callables and
sockets (setns in a thread), and a link's byte counters."""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import ssl
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    pass

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
CMD_TIMEOUT = 30.0


# -- running things inside a namespace ----------------------------------------------------------


def netns_path(netns: str) -> str:
    """The bind mount of a named network namespace (what ``ip netns add`` creates)."""
    return str(NETNS_DIR / netns)


def nsenter_prefix(netns: str) -> list[str]:
    """Command prefix that runs the rest of the command inside network namespace ``netns``."""
    return ["nsenter", f"--net={netns_path(netns)}"]


def _setns(fd: int) -> None:
    """Move the calling thread into the network namespace open as ``fd`` (Python 3.11: ctypes)."""
    native = getattr(os, "setns", None)
    if native is not None:
        native(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def run_in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Call ``fn`` in a short-lived thread that has joined network namespace ``netns``.

    The namespace is per thread, so the caller's thread is never moved; sockets created by
    ``fn`` stay in ``netns`` and can be used from any thread afterwards.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


class NetnsHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket is made from inside ``netns`` (e.g. to a node's
    127.0.0.1); requests on it then run in the caller's thread."""

    def __init__(self, netns: str, host: str, port: int, *, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.netns = netns

    def connect(self) -> None:
        run_in_netns(self.netns, super().connect)


class NetnsHTTPSConnection(http.client.HTTPSConnection):
    """:class:`NetnsHTTPConnection` over TLS (the handshake runs inside ``netns`` too)."""

    def __init__(
        self, netns: str, host: str, port: int, *, timeout: float, context: ssl.SSLContext | None
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.netns = netns

    def connect(self) -> None:
        run_in_netns(self.netns, super().connect)


def run_cmd(
    cmd: Sequence[str], *, check: bool = True, timeout: float = CMD_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run a short command (ip, tc, ...); raise with its stderr if ``check`` and it fails."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def link_stats(netns: str, dev: str) -> dict[str, int]:
    """``{"rx": bytes, "tx": bytes}`` of one device (``ip -s -j link show``); {} if unknown."""
    proc = run_cmd(
        [*nsenter_prefix(netns), "ip", "-s", "-j", "link", "show", "dev", dev], check=False
    )
    if proc.returncode != 0:
        return {}
    try:
        stats = json.loads(proc.stdout)[0]["stats64"]
        return {"rx": int(stats["rx"]["bytes"]), "tx": int(stats["tx"]["bytes"])}
    except (ValueError, LookupError, TypeError):
        return {}


def link_bytes_delta(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    """Per node and counter, what crossed between two :meth:`NetCluster.link_bytes` readings."""
    return {
        node: {k: v - before.get(node, {}).get(k, 0) for k, v in counters.items()}
        for node, counters in after.items()
    }
