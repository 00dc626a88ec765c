"""``ctr``, containerd's own client, run as a subprocess against one socket and namespace.

containerd 1.6 has no Python client that works with current protobuf, so everything that talks
to a containerd (the agent's image state and hot import, the runtime, serve) runs ``ctr``
through :class:`Ctr`. :class:`ContainerdTarget` is a node's containerd as the agent config names
it; :func:`pull_args` builds ``ctr images pull`` for both the runtime's pulls and the agent's hot
import.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

CTR_TIMEOUT = 60.0


class CtrError(RuntimeError):
    """``ctr`` could not be run or failed; the message is one line."""


def last_error_line(text: str, limit: int = 400) -> str:
    """The last meaningful line of a tool's stderr (ctr prints the error last)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[-limit:]


@dataclass(frozen=True)
class CtrResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Ctr:
    """``ctr --address SOCKET --namespace NS ...`` as an asyncio subprocess."""

    socket: Path
    namespace: str = "default"
    binary: str = "ctr"
    prefix: Sequence[str] = field(default_factory=tuple)  # e.g. ("nsenter", "--net=...")
    env: dict[str, str] | None = None

    def command(self, *args: str) -> list[str]:
        return [
            *self.prefix,
            self.binary,
            "--address",
            str(self.socket),
            "--namespace",
            self.namespace,
            *args,
        ]

    async def run(self, *args: str, time_limit: float = CTR_TIMEOUT) -> CtrResult:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command(*args),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=None if self.env is None else {**os.environ, **self.env},
            )
        except OSError as e:
            raise CtrError(f"cannot run {self.binary}: {e.strerror or e}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), time_limit)
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # our own child, by PID
            await proc.wait()
            raise
        return CtrResult(
            proc.returncode if proc.returncode is not None else -1,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
        )


# The namespace containerd's CRI plugin (the kubelet's image service) keeps its images in.
CRI_NAMESPACE = "k8s.io"


@dataclass(frozen=True)
class ContainerdTarget:
    """The node's containerd, as the agent config names it."""

    socket: Path
    namespace: str = "default"  # Kubernetes (CRI) uses CRI_NAMESPACE, "k8s.io"
    snapshotter: str | None = None  # None: containerd's default (overlayfs)
    ctr_binary: str = "ctr"
    prefix: tuple[str, ...] = ()  # e.g. ("nsenter", "--net=/run/netns/node1")

    def ctr(self) -> Ctr:
        return Ctr(self.socket, self.namespace, self.ctr_binary, self.prefix)


def pull_args(
    reference: str, hosts_dir: Path, platform: str | None, snapshotter: str | None
) -> list[str]:
    """``ctr images pull --hosts-dir DIR [--platform P] [--snapshotter S] REF``'s arguments."""
    args = ["images", "pull", "--hosts-dir", str(hosts_dir)]
    if platform:
        args += ["--platform", platform]
    if snapshotter:
        args += ["--snapshotter", snapshotter]
    return [*args, reference]


def digest_name(name: str, digest: str) -> str:
    """``registry/repository@digest``: the second name a CRI pull gives an image (its repo
    digest), beside the tag. ``name`` is ``registry/repository``."""
    return f"{name}@{digest}"
