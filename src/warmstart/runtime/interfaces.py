"""The seam between the endpoint controller and the container runtime of a node.

The controller (``warmstart.serving``) only talks to a :class:`Runtime`; the real driver is
``warmstart.runtime.containerd.ContainerdRuntime`` (``ctr`` + runc), and
``warmstart.runtime.memory.MemoryRuntime`` is the in-memory one for tests (like httpx's
transports). A replica's life: ``pull`` -> ``create`` -> ``start`` -> (``status``/``logs``) ->
``stop`` -> ``delete``. Every phase is timed and the durations travel on the results, so a
benchmark can split a replica's start into fetch, unpack, create and start. A replica's model
comes from the node's agent, not the runtime: a read-only :class:`Mount` (at
``/opt/ml/model``) of the directory the agent materialised.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol, TypedDict, Unpack

DEFAULT_PORT = 8080  # the SageMaker hosting contract
DEFAULT_STOP_TIMEOUT = 10.0


class ReplicaError(Exception):
    """Base of the errors a Runtime raises; the message is one line."""


class ImagePullError(ReplicaError):
    """The image could not be pulled (not found, registry and agent unreachable, ...)."""


class ImageNotPresent(ReplicaError):
    """``create`` was asked for an image the node does not have: ``pull`` it first."""


class ReplicaExists(ReplicaError):
    """A replica with this id already exists on the node."""


class ReplicaNotFound(ReplicaError):
    """The node has no replica with this id (never created, or deleted)."""


class RuntimeUnavailable(ReplicaError):
    """The runtime itself failed (``ctr`` missing, containerd down, an unexpected error)."""


class ReplicaState(enum.StrEnum):
    CREATED = "created"  # container exists, no process yet
    RUNNING = "running"
    EXITED = "exited"  # the process ended; ``exit_code`` says how


@dataclass(frozen=True)
class Mount:
    """A bind mount from the node into the replica (read-only unless said otherwise)."""

    source: str
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class ReplicaSpec:
    """What to run. ``args`` replace the image's CMD (the ENTRYPOINT stays), as with
    ``docker run IMAGE ARGS``. ``PORT`` is always set in the environment to ``port``."""

    id: str
    image: str
    port: int = DEFAULT_PORT
    env: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    host_network: bool = True
    mounts: tuple[Mount, ...] = ()

    def environment(self) -> dict[str, str]:
        """The environment the replica gets on top of the image's: ``env`` plus ``PORT``."""
        return {**self.env, "PORT": str(self.port)}


@dataclass(frozen=True)
class PullTiming:
    """One ``pull``: wall time split into fetching blobs and unpacking them into snapshots.

    ``fetch_seconds`` includes resolving the reference (and attempts that broke mid-transfer);
    ``unpack_seconds`` is what the runtime reported for the unpack (0 when it was already
    unpacked or it did not say). ``attempts``: 1, or more when a transfer broke and was retried."""

    reference: str
    digest: str | None
    fetch_seconds: float
    unpack_seconds: float
    total_seconds: float
    attempts: int = 1


@dataclass(frozen=True)
class ReplicaTimings:
    """Seconds per phase of one replica; ``None`` for a phase that has not happened.

    ``model_seconds``: bringing the replica's model to the node (its agent's pre-warm, which
    materialises it), run alongside the image's pull; ``None`` for a replica without a model.
    """

    pull: PullTiming | None = None
    create_seconds: float | None = None
    start_seconds: float | None = None
    model_seconds: float | None = None

    @property
    def fetch_seconds(self) -> float:
        """The image's pull and the model's fetch, which run at once: the longer of the two."""
        pulled = self.pull.total_seconds if self.pull is not None else 0.0
        return max(pulled, self.model_seconds or 0.0)

    @property
    def start_path_seconds(self) -> float | None:
        """fetch (pull, or the model if it took longer) + create + start: the runtime's share
        of a replica's time to ready."""
        if self.create_seconds is None or self.start_seconds is None:
            return None
        return self.fetch_seconds + self.create_seconds + self.start_seconds


class TimingChanges(TypedDict, total=False):
    """The fields of :class:`ReplicaTimings` that :meth:`Replica.with_timings` may change."""

    pull: PullTiming | None
    create_seconds: float | None
    start_seconds: float | None
    model_seconds: float | None


@dataclass(frozen=True)
class Replica:
    """A created replica: its spec, the runtime's own id for it, and the phase timings.

    ``start`` returns a copy with ``start_seconds`` filled in."""

    spec: ReplicaSpec
    container_id: str
    timings: ReplicaTimings = ReplicaTimings()

    @property
    def id(self) -> str:
        return self.spec.id

    def with_timings(self, **changes: Unpack[TimingChanges]) -> Replica:
        return replace(self, timings=replace(self.timings, **changes))


@dataclass(frozen=True)
class ReplicaStatus:
    state: ReplicaState
    exit_code: int | None = None  # set once EXITED (128 + signal when killed by a signal)
    pid: int | None = None  # on the node, while RUNNING

    @property
    def running(self) -> bool:
        return self.state is ReplicaState.RUNNING


class Runtime(Protocol):
    """Starting and stopping model replicas on one node."""

    async def pull(self, reference: str) -> PullTiming:
        """Make the image ready to run on this node (content and unpacked rootfs)."""
        ...

    async def create(self, spec: ReplicaSpec, *, pull: PullTiming | None = None) -> Replica:
        """Create the replica (not started); ``pull`` is recorded on its timings."""
        ...

    async def start(self, replica: Replica) -> Replica:
        """Start the replica's process (detached); returns the replica with ``start_seconds``."""
        ...

    async def stop(self, replica: Replica, grace: float = DEFAULT_STOP_TIMEOUT) -> ReplicaStatus:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the final (exited) status.
        Stopping a replica that is not running is not an error."""
        ...

    async def delete(self, replica: Replica) -> None:
        """Remove the replica and everything it holds (process, container, rootfs snapshot,
        log). Deleting a running replica kills it; deleting an unknown one is not an error."""
        ...

    async def status(self, replica: Replica) -> ReplicaStatus:
        """Raises :class:`ReplicaNotFound` for a replica that does not exist."""
        ...

    async def logs(self, replica: Replica) -> str:
        """Everything the replica wrote to stdout and stderr so far."""
        ...

    async def list(self) -> list[Replica]:
        """The replicas of this runtime on the node (created by it, not yet deleted)."""
        ...
