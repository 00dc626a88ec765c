"""An in-memory :class:`~warmstart.runtime.interfaces.Runtime` for tests of the controller.

Pure: no processes, no clock. Phase durations are the configured ``durations`` (reported, not
slept). Misbehaviour on request: ``fail_next(op, error)`` makes the next call of ``op`` raise,
``gates[op]`` makes calls of ``op`` wait for an event, ``exit(replica_id, code)`` ends a
replica's process as if it crashed, ``ignore_sigterm`` makes ``stop`` need the SIGKILL.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from warmstart.runtime.interfaces import (
    DEFAULT_STOP_TIMEOUT,
    ImageNotPresent,
    ImagePullError,
    PullTiming,
    Replica,
    ReplicaError,
    ReplicaExists,
    ReplicaNotFound,
    ReplicaSpec,
    ReplicaState,
    ReplicaStatus,
)

OPERATIONS = frozenset({"pull", "create", "start", "stop", "delete", "status", "logs", "list"})
SIGTERM_EXIT = 128 + 15
SIGKILL_EXIT = 128 + 9


@dataclass(frozen=True)
class PhaseDurations:
    """What the memory runtime reports as each phase's duration, in seconds."""

    fetch: float = 0.0
    unpack: float = 0.0
    create: float = 0.0
    start: float = 0.0
    stop: float = 0.0


@dataclass
class MemoryReplica:
    spec: ReplicaSpec
    state: ReplicaState = ReplicaState.CREATED
    exit_code: int | None = None
    pid: int | None = None
    log: list[str] = field(default_factory=list)


@dataclass
class MemoryRuntime:
    """A node in memory. ``available`` are the references a pull can find (``None``: any);
    ``pulled`` are the ones present on the node."""

    available: set[str] | None = None
    pulled: set[str] = field(default_factory=set)
    durations: PhaseDurations = PhaseDurations()
    ignore_sigterm: bool = False
    replicas: dict[str, MemoryReplica] = field(default_factory=dict)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (operation, replica or ref)
    _failures: dict[str, deque[ReplicaError]] = field(default_factory=dict)
    _next_pid: int = 1000

    # -- misbehaviour -------------------------------------------------------------------------

    def fail_next(self, operation: str, error: ReplicaError, times: int = 1) -> None:
        """The next ``times`` calls of ``operation`` raise ``error``."""
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}: one of {sorted(OPERATIONS)}")
        self._failures.setdefault(operation, deque()).extend([error] * times)

    def exit(self, replica_id: str, code: int, output: str = "") -> None:
        """The replica's process ends with ``code`` (a crash, or a clean exit)."""
        replica = self._get(replica_id)
        if replica.state is not ReplicaState.RUNNING:
            raise ValueError(f"replica {replica_id} is {replica.state}, not running")
        if output:
            replica.log.append(output)
        replica.state, replica.exit_code, replica.pid = ReplicaState.EXITED, code, None

    def write_log(self, replica_id: str, text: str) -> None:
        self._get(replica_id).log.append(text)

    def running(self) -> list[str]:
        return sorted(k for k, r in self.replicas.items() if r.state is ReplicaState.RUNNING)

    async def _enter(self, operation: str, subject: str) -> None:
        self.calls.append((operation, subject))
        gate = self.gates.get(operation)
        if gate is not None:
            await gate.wait()
        queue = self._failures.get(operation)
        if queue:
            raise queue.popleft()

    def _get(self, replica_id: str) -> MemoryReplica:
        try:
            return self.replicas[replica_id]
        except KeyError:
            raise ReplicaNotFound(f"no replica {replica_id!r} on this node") from None

    # -- Runtime ------------------------------------------------------------------------------

    async def pull(self, reference: str) -> PullTiming:
        await self._enter("pull", reference)
        if self.available is not None and reference not in self.available:
            raise ImagePullError(f"{reference}: not found")
        fresh = reference not in self.pulled
        self.pulled.add(reference)
        fetch = self.durations.fetch if fresh else 0.0
        unpack = self.durations.unpack if fresh else 0.0
        return PullTiming(reference, None, fetch, unpack, fetch + unpack)

    async def create(self, spec: ReplicaSpec, *, pull: PullTiming | None = None) -> Replica:
        await self._enter("create", spec.id)
        if spec.id in self.replicas:
            raise ReplicaExists(f"replica {spec.id!r} exists")
        if spec.image not in self.pulled:
            raise ImageNotPresent(f"{spec.image} is not on this node: pull it first")
        self.replicas[spec.id] = MemoryReplica(spec)
        return Replica(spec, f"mem-{spec.id}").with_timings(
            pull=pull, create_seconds=self.durations.create
        )

    async def start(self, replica: Replica) -> Replica:
        await self._enter("start", replica.id)
        state = self._get(replica.id)
        if state.state is not ReplicaState.CREATED:
            raise ReplicaError(f"replica {replica.id} is {state.state}: cannot start it again")
        self._next_pid += 1
        state.state, state.pid = ReplicaState.RUNNING, self._next_pid
        return replica.with_timings(start_seconds=self.durations.start)

    async def stop(self, replica: Replica, grace: float = DEFAULT_STOP_TIMEOUT) -> ReplicaStatus:
        await self._enter("stop", replica.id)
        state = self._get(replica.id)
        if state.state is ReplicaState.RUNNING:
            state.exit_code = SIGKILL_EXIT if self.ignore_sigterm else SIGTERM_EXIT
            state.state, state.pid = ReplicaState.EXITED, None
        return ReplicaStatus(state.state, state.exit_code, state.pid)

    async def delete(self, replica: Replica) -> None:
        await self._enter("delete", replica.id)
        self.replicas.pop(replica.id, None)

    async def status(self, replica: Replica) -> ReplicaStatus:
        await self._enter("status", replica.id)
        state = self._get(replica.id)
        return ReplicaStatus(state.state, state.exit_code, state.pid)

    async def logs(self, replica: Replica) -> str:
        await self._enter("logs", replica.id)
        return "".join(self._get(replica.id).log)

    async def list(self) -> list[Replica]:
        await self._enter("list", "")
        return [Replica(r.spec, f"mem-{k}") for k, r in sorted(self.replicas.items())]

    def preload(self, references: Iterable[str]) -> None:
        """Images already on the node (hot): ``pull`` of them reports zero durations."""
        self.pulled.update(references)
