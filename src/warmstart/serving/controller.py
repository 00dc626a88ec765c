"""The endpoint controller: the reconcile loop that applies the pure policies.

Each :meth:`Controller.tick` samples the router's concurrency, asks the autoscaler
(:func:`warmstart.serving.autoscaler.decide`) for a replica count, and acts: new replicas go
where :func:`~warmstart.serving.placement.place` says (the node where the image's bytes are
most ready), surplus ones are chosen by :func:`~warmstart.serving.placement.choose_victims` and
drained from the router first, nodes that the endpoint may scale to are pre-warmed ``--hot``
ahead of time (:func:`~warmstart.serving.prewarm_ahead.prewarm_targets`), and replicas that
crashed are removed (the autoscaler then replaces them).

A node's pre-warm that failed (its agent is down, or the image does not fit its store budget)
is tried again only after a backoff (:mod:`warmstart.prewarm_backoff`), not on every
tick; a node that appears (it is added to the node list, or the tier source reports it again
after leaving it out) starts with a clean slate, so it is pre-warmed on the next tick.

Starting a replica runs as a task: pull through the node's agent, create, start, then poll
``GET /ping`` until it answers 200; only then does the router send it traffic. A replica that
never passes ``/ping`` within ``replica_start_timeout`` is stopped, deleted and reported as an
event; the endpoint keeps serving with what it has.

An endpoint with a ``model``: its replica's start asks the node's agent for the model
materialised and pinned (:mod:`warmstart.serving.models`) *while* the runtime pulls the image,
so the image's unpack overlaps the model's transfer; the replica is created once both are
there, with the model's directory mounted read-only at ``/opt/ml/model``. The node's pin is
released when the last replica that uses the model there is gone. Placement ranks nodes by
both tiers (:func:`~warmstart.serving.placement.start_rank`) and a pre-warm ahead brings the
model hot (materialised) beside the image. What the controller works with (nodes, tier
sources, managed replicas, events, its status) is :mod:`warmstart.serving.replicas`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from warmstart.oci.tiers import Tier
from warmstart.prewarm_backoff import (
    PrewarmFailure,
    prewarm_due,
    prewarm_failed,
    prewarm_retry_delay,
)
from warmstart.runtime.interfaces import (
    Mount,
    PullTiming,
    ReplicaError,
    ReplicaNotFound,
    ReplicaSpec,
    ReplicaState,
)
from warmstart.serving.autoscaler import LoadSnapshot, ScaleDecision, ScalerState, decide
from warmstart.serving.models import (
    UNPIN_TIMEOUT,
    ModelAgent,
    ModelUsers,
    materialised_path,
    model_mount,
    pin_holder,
    prewarm_model_request,
    replica_model_request,
)
from warmstart.serving.placement import Node, NodeTiers, PlacedReplica, choose_victims, place
from warmstart.serving.prewarm_ahead import prewarm_targets
from warmstart.serving.replicas import (
    ControllerStatus,
    Event,
    ManagedReplica,
    NodeHandle,
    StaticTiers,
    TierSource,
    describe_phases,
)
from warmstart.serving.router import Router
from warmstart.serving.spec import EndpointSpec

log = logging.getLogger(__name__)

PingFn = Callable[[str], Awaitable[bool]]
PrewarmFn = Callable[["NodeHandle", str], Awaitable[None]]
AgentFor = Callable[["NodeHandle"], ModelAgent]  # the client of a node's agent
PING_INTERVAL = 0.2


class _Abandoned(Exception):
    """A replica still starting was stopped (a scale-down chose it): its start ends here."""


class Controller:
    def __init__(
        self,
        spec: EndpointSpec,
        nodes: Sequence[NodeHandle],
        router: Router,
        *,
        ping: PingFn,
        tiers: TierSource | None = None,
        prewarm: PrewarmFn | None = None,
        agents: AgentFor | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_events: int = 500,
    ) -> None:
        if not nodes:
            raise ValueError("an endpoint needs at least one node")
        if spec.model is not None and agents is None:
            raise ValueError(
                "an endpoint with a model needs the nodes' agents: they fetch and materialise it"
            )
        self.spec = spec
        self.nodes = {n.name: n for n in nodes}
        self.router = router
        self._ping = ping
        self._tiers = tiers or StaticTiers()
        self._prewarm = prewarm
        self._agents = agents
        self._clock = clock
        self._state = ScalerState()
        self._samples: deque[tuple[float, float]] = deque()
        self.replicas: dict[str, ManagedReplica] = {}
        self.events: deque[Event] = deque(maxlen=max_events)
        self._tasks: set[asyncio.Task[None]] = set()
        self._bring_ups: dict[str, asyncio.Task[None]] = {}  # replica id -> its start
        self._prewarming: set[str] = set()
        self._prewarm_events: dict[str, asyncio.Event] = {}  # set when a node's pre-warm ends
        self._prewarmed: dict[str, float] = {}  # node -> when its pre-warm succeeded
        self._prewarm_failures: dict[str, PrewarmFailure] = {}  # node -> failures in a row
        self._known: set[str] = set()  # nodes the last tier answer named
        self._ids = itertools.count(1)
        self.last_decision: ScaleDecision | None = None
        self.node_tiers: dict[str, Tier] = {}  # from the last placement lookup
        self.node_model_tiers: dict[str, Tier] = {}  # the same for the model, if any
        self.model_users = ModelUsers()  # replicas using the model, per node
        self._model_locks: dict[str, asyncio.Lock] = {}  # per node: pin, unpin in order

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Reconcile every ``interval`` seconds until ``stop`` is set; then tear down."""
        try:
            while not stop.is_set():
                await self.tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
        finally:
            await self.shutdown()

    async def tick(self) -> ScaleDecision:
        now = self._clock()
        await self._reap_crashed(now)
        snap = self.router.snapshot()
        self._samples.append((now, float(snap.concurrency)))
        horizon = now - max(self.spec.stable_window, self.spec.panic_window) - 1
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        ready = sum(1 for r in self.replicas.values() if r.state == "ready")
        starting = sum(1 for r in self.replicas.values() if r.state == "starting")
        snapshot = LoadSnapshot(
            now=now, ready=ready, starting=starting, samples=tuple(self._samples)
        )
        decision, self._state = decide(self.spec, snapshot, self._state)
        self.last_decision = decision
        current = ready + starting
        nodes = await self._placement_nodes()
        placed = self._placement_replicas()
        if decision.desired > current:
            self._event(now, "scale", f"{current} -> {decision.desired}: {decision.reason}")
            for node in place(decision.desired - current, nodes, placed):
                self._start_replica(node.name, now)
        elif decision.desired < current:
            self._event(now, "scale", f"{current} -> {decision.desired}: {decision.reason}")
            for victim in choose_victims(current - decision.desired, placed, nodes):
                self._spawn(self._stop_replica(self.replicas[victim.id]))
        if self._prewarm is not None:
            # Judge headroom with the replicas this tick started or stopped already counted.
            after = LoadSnapshot(
                now=now,
                ready=sum(1 for r in self.replicas.values() if r.state == "ready"),
                starting=sum(1 for r in self.replicas.values() if r.state == "starting"),
                samples=snapshot.samples,
            )
            for node in prewarm_targets(self.spec, after, nodes, self._placement_replicas()):
                due = prewarm_due(
                    now, self._prewarmed.get(node.name), self._prewarm_failures.get(node.name)
                )
                if node.name not in self._prewarming and due:
                    self._prewarming.add(node.name)
                    self._prewarm_events[node.name] = asyncio.Event()
                    self._spawn(self._prewarm_node(self.nodes[node.name], node))
        return decision

    @property
    def prewarms_in_flight(self) -> int:
        return len(self._prewarming)

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(self._stop_replica(r) for r in list(self.replicas.values())), return_exceptions=True
        )

    def status(self) -> ControllerStatus:
        snap = self.router.snapshot()
        return ControllerStatus(
            desired=self.last_decision.desired if self.last_decision else 0,
            replicas=[r.to_dict() for r in self.replicas.values()],
            queue_length=snap.queue_length,
            in_flight=snap.in_flight,
            last_decision=self.last_decision.reason if self.last_decision else "",
            events=list(self.events),
            nodes=[
                {
                    "name": name,
                    "tier": self.node_tiers.get(name, Tier.COLD),
                    "model_tier": self.node_model_tiers.get(name),
                    "replicas": sum(1 for r in self.replicas.values() if r.node == name),
                    "slots": node.slots,
                }
                for name, node in self.nodes.items()
            ],
        )

    # -- placement inputs -------------------------------------------------------------------

    async def _placement_nodes(self) -> list[Node]:
        handles = list(self.nodes.values())
        model = self.spec.model
        try:
            tiers = await self._tiers.tiers(self.spec.image, handles, model=model)
        except Exception as e:  # a tier lookup failing must not stop scaling
            log.warning("tier lookup failed: %s", e)
            tiers = None
        if tiers is not None:  # a failed lookup says nothing about which nodes are there
            self._node_appeared(set(tiers) & set(self.nodes))
        unknown = NodeTiers(Tier.COLD, Tier.COLD if model is not None else None)
        found = {h.name: (tiers or {}).get(h.name, unknown) for h in handles}
        self.node_tiers = {name: t.image for name, t in found.items()}
        self.node_model_tiers = {
            name: t.model or Tier.COLD for name, t in found.items() if model is not None
        }
        return [
            Node(
                h.name,
                h.slots,
                self.node_tiers[h.name],
                model_tier=self.node_model_tiers.get(h.name),
            )
            for h in handles
        ]

    def _node_appeared(self, known: set[str]) -> None:
        """Forget the pre-warm history of nodes that were not known at the last tier lookup
        (new in the node list, or left out of the last answer): what it said is stale."""
        for name in known - self._known:
            self._prewarm_failures.pop(name, None)
            self._prewarmed.pop(name, None)
        self._known = known

    def _placement_replicas(self) -> list[PlacedReplica]:
        return [
            PlacedReplica(r.id, r.node, ready=r.state == "ready", started_at=r.started_at)
            for r in self.replicas.values()
            if r.state != "stopping"
        ]

    # -- replica life -----------------------------------------------------------------------

    def _free_port(self, node: NodeHandle) -> int:
        # Replicas use host networking: two nodes that share an address share its ports.
        taken = {r.port for r in self.replicas.values() if r.host == node.host}
        candidates = node.ports or range(node.port_base, node.port_base + 1000)
        for port in candidates:
            if port not in taken:
                return port
        raise RuntimeError(f"node {node.name} has no free replica port")

    def _start_replica(self, node_name: str, now: float) -> None:
        node = self.nodes[node_name]
        rid = f"{self.spec.name}-{next(self._ids)}"
        managed = ManagedReplica(
            rid,
            node_name,
            self._free_port(node),
            now,
            host=node.host,
            tier=self.node_tiers.get(node_name, Tier.COLD),
            model_tier=self.node_model_tiers.get(node_name),
        )
        self.replicas[rid] = managed
        self._event(now, "started", f"{rid} on {node_name} (port {managed.port})")
        task = self._spawn(self._bring_up(node, managed))
        self._bring_ups[rid] = task
        task.add_done_callback(lambda _: self._bring_ups.pop(rid, None))

    async def _bring_up(self, node: NodeHandle, managed: ManagedReplica) -> None:
        started = managed.started_at  # the moment the controller decided to start it
        try:
            # A pre-warm of this image on this node is already pulling and unpacking it: wait
            # for it instead of doing the same work beside it on the same disk and CPU.
            deadline = started + self.spec.replica_start_timeout
            in_flight = self._prewarm_events.get(node.name)
            if in_flight is not None and node.name in self._prewarming:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(in_flight.wait(), max(0.0, deadline - self._clock()))
            _check_wanted(managed)
            pull_started = self._clock()
            managed.phases["wait"] = pull_started - started
            timing, pulled_at, mounts, fetched_at = await self._fetch(node, managed)
            _check_wanted(managed)
            # The pull's wall time on this clock, split as the runtime reports it (its unpack;
            # the rest is fetching), so that the phases add up to ready_seconds.
            pull_wall = pulled_at - pull_started
            unpack = min(max(timing.unpack_seconds, 0.0), pull_wall)
            managed.phases["pull"] = pull_wall - unpack
            managed.phases["unpack"] = unpack
            if self.spec.model is not None:
                managed.model_seconds = fetched_at - pull_started
                managed.phases["model"] = max(0.0, fetched_at - pulled_at)
            ready_to_create = max(pulled_at, fetched_at)
            spec = ReplicaSpec(
                id=managed.id,
                image=self.spec.image,
                port=managed.port,
                env=dict(self.spec.env),
                mounts=mounts,
            )
            replica = await node.runtime.create(spec, pull=timing)
            if managed.model_seconds is not None:
                replica = replica.with_timings(model_seconds=managed.model_seconds)
            managed.runtime_replica = replica
            _check_wanted(managed)
            managed.runtime_replica = await node.runtime.start(replica)
            running_at = self._clock()
            managed.phases["start"] = running_at - ready_to_create
            _check_wanted(managed)
            self.router.add_replica(managed.id, managed.url, ready=False)
            while not await self._ping_ok(managed.url):
                _check_wanted(managed)
                if self._clock() >= deadline:
                    raise TimeoutError(
                        f"did not answer /ping 200 within {self.spec.replica_start_timeout:.0f}s"
                    )
                status = await node.runtime.status(managed.runtime_replica)
                if status.state is ReplicaState.EXITED:
                    raise ReplicaError(f"exited with status {status.exit_code} before /ping")
                await asyncio.sleep(PING_INTERVAL)
            _check_wanted(managed)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if managed.state == "stopping":  # stopped while it started: remove what it made
                await self._teardown(node, managed)
                return
            self._event(self._clock(), "failed", f"{managed.id} on {node.name}: {e}")
            await self._stop_replica(managed)
            return
        ready_at = self._clock()
        managed.state = "ready"
        managed.ready_seconds = ready_at - started
        managed.phases["load"] = ready_at - running_at
        self.router.set_ready(managed.id, True)
        self._event(
            self._clock(),
            "ready",
            f"{managed.id} on {node.name} in {managed.ready_seconds:.2f}s "
            f"({describe_phases(managed)})",
        )

    async def _fetch(
        self, node: NodeHandle, managed: ManagedReplica
    ) -> tuple[PullTiming, float, tuple[Mount, ...], float]:
        """Pull the image and, for an endpoint with a model, fetch the model at once (the
        image's unpack overlaps the model's transfer). Returns the pull's timing, when it
        ended, the replica's mounts and when the model was there (the pull's end without one).
        Both run to their end even when one fails, so a model pinned meanwhile is counted and
        released with the replica."""

        async def pull() -> tuple[PullTiming, float]:
            timing = await node.runtime.pull(self.spec.image)
            return timing, self._clock()

        if self.spec.model is None:
            timing, pulled_at = await pull()
            return timing, pulled_at, (), pulled_at

        async def fetch_model() -> tuple[str, float]:
            path = await self._acquire_model(node, managed)
            return path, self._clock()

        pulled, fetched = await asyncio.gather(pull(), fetch_model(), return_exceptions=True)
        if isinstance(pulled, BaseException):
            raise pulled
        if isinstance(fetched, BaseException):
            raise fetched
        (timing, pulled_at), (path, fetched_at) = pulled, fetched
        managed.model_path = path
        return timing, pulled_at, (model_mount(path),), fetched_at

    def _model_lock(self, node: str) -> asyncio.Lock:
        return self._model_locks.setdefault(node, asyncio.Lock())

    def _agent(self, node: NodeHandle) -> ModelAgent:
        if self._agents is None:
            raise ReplicaError("no agents to fetch the model from")
        return self._agents(node)

    async def _acquire_model(self, node: NodeHandle, managed: ManagedReplica) -> str:
        """The model materialised on ``node`` and pinned there; the replica counts as one of
        the node's model users from now until it is gone (:meth:`_release_model`)."""
        model = self.spec.model
        assert model is not None
        self.model_users.acquire(node.name)
        managed.holds_model = True
        # In order with the node's unpins: an unpin for the last replica that went must not
        # land after this pin.
        async with self._model_lock(node.name):
            try:
                answer = await self._agent(node).prewarm(
                    replica_model_request(model, self.spec.name)
                )
                return materialised_path(answer, model)
            except Exception as e:
                raise ReplicaError(f"model {model}: {e}") from None

    async def _release_model(self, node: NodeHandle, managed: ManagedReplica) -> None:
        """One model user fewer on ``node``; the last one releases the node's pin."""
        if not managed.holds_model:
            return
        managed.holds_model = False
        model = self.spec.model
        assert model is not None
        if not self.model_users.release(node.name):
            return
        async with self._model_lock(node.name):
            if self.model_users.count(node.name) > 0:
                return  # a replica that started meanwhile pinned it again
            try:
                await self._agent(node).unpin(
                    model, holder=pin_holder(self.spec.name), time_limit=UNPIN_TIMEOUT
                )
            except Exception as e:  # the pin stays until the agent restarts
                self._event(self._clock(), "unpin-failed", f"{model} on {node.name}: {e}")

    async def _ping_ok(self, url: str) -> bool:
        try:
            return await self._ping(url)
        except Exception:
            return False

    async def _stop_replica(self, managed: ManagedReplica) -> None:
        """Drain the replica from the router, stop and delete it, release its model. A replica
        still starting (a scale-down may choose it) is left to its start task, which removes
        what it created at its next step: a container started after this must not linger."""
        if managed.state == "stopping":
            return
        managed.state = "stopping"
        node = self.nodes[managed.node]
        starting = self._bring_ups.get(managed.id)
        mid_start = (
            starting is not None and not starting.done() and starting is not asyncio.current_task()
        )
        try:
            if managed.id in self.router.replica_ids():
                await self.router.remove_replica(managed.id, drain=True)
            if not mid_start:
                await self._remove_container(node, managed)
        finally:
            self.replicas.pop(managed.id, None)
            self._event(self._clock(), "stopped", f"{managed.id} on {managed.node}")
            if not mid_start:
                await self._release_model(node, managed)

    async def _remove_container(self, node: NodeHandle, managed: ManagedReplica) -> None:
        try:
            if managed.runtime_replica is not None:
                await node.runtime.stop(managed.runtime_replica)
                await node.runtime.delete(managed.runtime_replica)
        except ReplicaError as e:
            self._event(self._clock(), "failed", f"stopping {managed.id}: {e}")

    async def _teardown(self, node: NodeHandle, managed: ManagedReplica) -> None:
        """What a start that was stopped midway created goes: its router entry, its
        container, its use of the model."""
        try:
            if managed.id in self.router.replica_ids():
                await self.router.remove_replica(managed.id, drain=False)
            await self._remove_container(node, managed)
        finally:
            await self._release_model(node, managed)

    async def _reap_crashed(self, now: float) -> None:
        for managed in [r for r in self.replicas.values() if r.state == "ready"]:
            node = self.nodes[managed.node]
            assert managed.runtime_replica is not None
            try:
                status = await node.runtime.status(managed.runtime_replica)
            except ReplicaNotFound:
                status = None
            except ReplicaError as e:  # the runtime did not answer: judge it next tick
                log.warning("status of %s on %s: %s", managed.id, node.name, e)
                continue
            if status is None or status.state is ReplicaState.EXITED:
                code = status.exit_code if status is not None else "unknown"
                self._event(now, "crashed", f"{managed.id} on {node.name} (exit {code})")
                if managed.id in self.router.replica_ids():
                    await self.router.remove_replica(managed.id, drain=False)
                await self._stop_replica(managed)

    async def _prewarm_node(self, node: NodeHandle, placed: Node) -> None:
        """Bring what is not hot on ``node`` hot: the image (unpacked) and the model
        (materialised), both at once."""
        assert self._prewarm is not None
        prewarm = self._prewarm
        model = self.spec.model
        want_model = model is not None and placed.model_tier != Tier.HOT
        want_image = placed.tier != Tier.HOT or not want_model
        jobs: list[Awaitable[None]] = []
        done: list[str] = []
        if want_image:
            jobs.append(prewarm(node, self.spec.image))
            done.append(f"{self.spec.image} hot")
        if want_model:
            assert model is not None
            jobs.append(self._prewarm_model(node, model))
            done.append(f"model {model} materialised")
        try:
            outcomes = await asyncio.gather(*jobs, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            self._prewarmed[node.name] = self._clock()
            self._prewarm_failures.pop(node.name, None)
            self._event(self._clock(), "prewarm", f"{' and '.join(done)} on {node.name}")
        except Exception as e:
            failure = prewarm_failed(self._prewarm_failures.get(node.name), self._clock())
            self._prewarm_failures[node.name] = failure
            retry = prewarm_retry_delay(failure.count)
            self._event(
                self._clock(), "prewarm-failed", f"{node.name}: {e} (next try in {retry:.0f}s)"
            )
        finally:
            self._prewarming.discard(node.name)
            prewarm_event = self._prewarm_events.pop(node.name, None)
            if prewarm_event is not None:
                prewarm_event.set()

    async def _prewarm_model(self, node: NodeHandle, model: str) -> None:
        try:
            answer = await self._agent(node).prewarm(prewarm_model_request(model))
            materialised_path(answer, model)
        except Exception as e:
            raise ReplicaError(f"model {model}: {e}") from None

    # -- bookkeeping ------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _event(self, at: float, kind: str, message: str) -> None:
        self.events.append(Event(at, kind, message))
        log.info("%s: %s", kind, message)

    async def settle(self) -> None:
        """Wait for the replica starts, stops and pre-warms in flight (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _check_wanted(managed: ManagedReplica) -> None:
    """End a start whose replica was stopped meanwhile (:class:`_Abandoned`)."""
    if managed.state == "stopping":
        raise _Abandoned(f"{managed.id} was stopped while it started")
