"""``warmstart serve``: one endpoint on a set of containerd nodes, its controller and router.

A node is given as ``NAME=SOCKET,AGENT_URL`` with optional ``key=value`` extras::

    node-a=/run/containerd/containerd.sock,http://127.0.0.1:5050
    node-b=/srv/b/containerd.sock,http://10.0.0.2:5050,host=10.0.0.2,slots=2,netns=node-b

- ``SOCKET``: the node's containerd socket; replicas run in containerd namespace ``namespace``
  (the agent's ``containerd_namespace`` should be the same, so a hot pre-warm is what the
  replicas start from).
- ``AGENT_URL``: the node's ``warmstart agent`` (``-`` for none: pulls go to the registry).
- ``host``: where the node's replicas are reachable (host networking; default 127.0.0.1).
- ``slots``: replicas the node may run (default 4); ``netns``: run ``ctr`` in that network
  namespace (``/run/netns/NAME``), as a process on that node would.

An endpoint with a ``model`` needs an agent on every node: the agent fetches the model and
materialises the directory its replicas get at ``/opt/ml/model``.

The serving process answers ``POST /invocations`` and ``GET /ping`` (the router),
``GET /router/status`` and ``GET /endpoint/status`` (replicas, nodes, tiers, queue, events;
``warmstart status`` reads it), and ``GET /metrics`` (Prometheus, refreshed every second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from warmstart.agent.api import PrewarmRequest
from warmstart.agent.client import AgentClient
from warmstart.containerd.ctr import Ctr
from warmstart.runtime.containerd import ContainerdRuntime
from warmstart.runtime.interfaces import ReplicaError
from warmstart.serving.controller import Controller
from warmstart.serving.metrics import CONTENT_TYPE, EndpointMetrics
from warmstart.serving.replicas import NodeHandle, StaticTiers
from warmstart.serving.router import Router, RouterConfig, create_router_app
from warmstart.serving.spec import EndpointSpec
from warmstart.serving.tiers import AgentTiers
from warmstart.token_file import TokenFileError, read_token_file

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "warmstart"
DEFAULT_SLOTS = 4
PING_TIMEOUT = 2.0
PREWARM_TIMEOUT = 1800.0
METRICS_INTERVAL = 1.0
_NODE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
_NETNS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HOST = re.compile(r"^[A-Za-z0-9.:\[\]-]{1,255}$")


class NodeOptionError(ValueError):
    """A ``--node`` value that cannot be used; the message is one line."""


@dataclass(frozen=True)
class NodeOption:
    name: str
    socket: Path
    agent_url: str | None
    host: str = "127.0.0.1"
    slots: int = DEFAULT_SLOTS
    netns: str | None = None


def _agent_url(text: str, where: str) -> str | None:
    if text in ("", "-"):
        return None
    if not re.match(r"^https?://[^/\s]+/?$", text):
        raise NodeOptionError(f"{where}: agent URL must be http(s)://HOST:PORT, not {text!r}")
    return text.rstrip("/")


def parse_node_option(text: str) -> NodeOption:
    """``NAME=SOCKET,AGENT_URL[,host=IP][,slots=N][,netns=NAME]`` (pure)."""
    where = f"--node {text[:80]!r}"
    name, sep, rest = text.partition("=")
    if not sep:
        raise NodeOptionError(f"{where}: expected NAME=SOCKET,AGENT_URL")
    name = name.strip()
    if not _NODE_NAME.match(name):
        raise NodeOptionError(
            f"{where}: node name must be 1-32 of a-z, 0-9 and '-' (no '-' at the ends)"
        )
    parts = [p.strip() for p in rest.split(",")]
    if len(parts) < 2:
        raise NodeOptionError(f"{where}: expected NAME=SOCKET,AGENT_URL (use - for no agent)")
    socket, agent = parts[0], parts[1]
    if not socket.startswith("/"):
        raise NodeOptionError(f"{where}: the containerd socket must be an absolute path")
    extras: dict[str, str] = {}
    for part in parts[2:]:
        key, eq, value = part.partition("=")
        if not eq or key not in ("host", "slots", "netns"):
            raise NodeOptionError(f"{where}: unknown extra {part!r} (host=, slots=, netns=)")
        if key in extras:
            raise NodeOptionError(f"{where}: {key}= given twice")
        extras[key] = value
    host = extras.get("host", "127.0.0.1")
    if not _HOST.match(host):
        raise NodeOptionError(f"{where}: host= must be an address, not {host!r}")
    try:
        slots = int(extras.get("slots", DEFAULT_SLOTS))
    except ValueError:
        raise NodeOptionError(f"{where}: slots= must be a whole number") from None
    if not 1 <= slots <= 256:
        raise NodeOptionError(f"{where}: slots= must be 1..256")
    netns = extras.get("netns")
    if netns is not None and not _NETNS.match(netns):
        raise NodeOptionError(f"{where}: netns= must be a network namespace name")
    return NodeOption(name, Path(socket), _agent_url(agent, where), host, slots, netns)


def parse_node_options(texts: Sequence[str]) -> list[NodeOption]:
    if not texts:
        raise NodeOptionError("give at least one --node NAME=SOCKET,AGENT_URL")
    nodes = [parse_node_option(t) for t in texts]
    seen: set[str] = set()
    for n in nodes:
        if n.name in seen:
            raise NodeOptionError(f"node {n.name!r} is given twice")
        seen.add(n.name)
    return nodes


@dataclass
class ServeOptions:
    spec: EndpointSpec
    nodes: list[NodeOption]
    work_dir: Path
    namespace: str = DEFAULT_NAMESPACE
    insecure_registries: frozenset[str] = frozenset()
    router: RouterConfig = field(default_factory=RouterConfig)
    interval: float = 1.0
    prewarm: bool = True
    port_base: int = 18080
    # False: the nodes' URLs are plain mirrors (e.g. a docker-registry pull-through cache),
    # not warmstart agents: no tiers from /status, no pre-warm.
    agent_api: bool = True
    # The cluster's peer token (the agents' ``peer_token``): their /prewarm needs it.
    peer_token: str | None = field(default=None, repr=False)


def build_runtime(node: NodeOption, options: ServeOptions) -> ContainerdRuntime:
    prefix = ("nsenter", f"--net=/run/netns/{node.netns}") if node.netns else ()
    return ContainerdRuntime(
        Ctr(node.socket, options.namespace, prefix=prefix),
        options.work_dir / node.name,
        id_prefix=f"ws-{node.name}",
        agent_url=node.agent_url,
        insecure_registries=options.insecure_registries,
    )


class EndpointService:
    """The controller, router and their HTTP app for one endpoint (also used in-process by the
    benchmark). :meth:`start` cleans replicas a previous run left behind on the nodes."""

    def __init__(self, options: ServeOptions, *, clock: Callable[[], float] | None = None) -> None:
        self.options = options
        router_config = options.router
        if options.spec.replica_concurrency is not None:
            # A hard cap per replica: requests beyond it wait in the router's queue, so a
            # replica that joins takes over the backlog at once.
            router_config = replace(
                router_config, max_concurrency_per_replica=options.spec.replica_concurrency
            )
        self.metrics = EndpointMetrics(options.spec.name)
        self.router = Router(router_config, on_request_done=self.metrics.observe_request)
        self.runtimes = {n.name: build_runtime(n, options) for n in options.nodes}
        self.handles = [
            NodeHandle(
                n.name,
                self.runtimes[n.name],
                slots=n.slots,
                host=n.host,
                agent_url=n.agent_url,
                port_base=options.port_base,
            )
            for n in options.nodes
        ]
        self._session: aiohttp.ClientSession | None = None
        self._prewarm_session: aiohttp.ClientSession | None = None
        self.controller: Controller | None = None
        self._clock = clock
        self._refresher: asyncio.Task[None] | None = None

    async def open(self) -> Controller:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=PING_TIMEOUT, sock_connect=PING_TIMEOUT)
        )
        self._prewarm_session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=PREWARM_TIMEOUT, sock_connect=10)
        )
        extra: dict[str, Any] = {} if self._clock is None else {"clock": self._clock}
        self.controller = Controller(
            self.options.spec,
            self.handles,
            self.router,
            ping=self._ping,
            tiers=(
                AgentTiers(self._session, token=self.options.peer_token)
                if self.options.agent_api
                else StaticTiers()
            ),
            prewarm=self._prewarm if self.options.prewarm and self.options.agent_api else None,
            agents=self._model_agent if self.options.agent_api else None,
            **extra,
        )
        await self.clean_leftovers()
        self._refresher = asyncio.create_task(self._refresh_metrics())
        return self.controller

    def refresh_metrics(self) -> None:
        if self.controller is None:
            return
        decision = self.controller.last_decision
        self.metrics.update(
            self.router.snapshot(),
            [(r.id, r.node, r.state) for r in self.controller.replicas.values()],
            decision.desired if decision is not None else 0,
        )

    async def _refresh_metrics(self) -> None:
        while True:
            self.refresh_metrics()
            await asyncio.sleep(METRICS_INTERVAL)

    async def clean_leftovers(self) -> int:
        """Delete replicas of this endpoint's nodes that a previous run did not (a crash)."""
        removed = 0
        for node, runtime in self.runtimes.items():
            try:
                leftovers = await runtime.list()
            except ReplicaError as e:
                log.warning("cannot list replicas on %s: %s", node, e)
                continue
            for replica in leftovers:
                with contextlib.suppress(ReplicaError):
                    await runtime.delete(replica)
                    removed += 1
        return removed

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self.controller is not None:
            await self.controller.shutdown()
        for session in (self._session, self._prewarm_session):
            if session is not None:
                await session.close()

    async def _ping(self, url: str) -> bool:
        assert self._session is not None
        try:
            async with self._session.get(url + "/ping") as resp:
                await resp.read()
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    def agent(self, node: NodeHandle, session: aiohttp.ClientSession) -> AgentClient:
        """The client of ``node``'s agent (on a shared session)."""
        if not node.agent_url:
            raise RuntimeError("the node has no agent")
        return AgentClient(
            node.agent_url, token=self.options.peer_token, session=session, timeout=None
        )

    async def _prewarm(self, node: NodeHandle, image: str) -> None:
        """A hot pre-warm; an :class:`AgentError` (one line) says why it failed."""
        assert self._prewarm_session is not None
        agent = self.agent(node, self._prewarm_session)
        await agent.prewarm(PrewarmRequest.of(image, hot=True))

    def _model_agent(self, node: NodeHandle) -> AgentClient:
        """The node's agent, for the endpoint's model (a replica's pinned fetch, its unpin,
        and the model's pre-warm); on the pre-warm session, whose time limit fits a fetch."""
        assert self._prewarm_session is not None
        if not node.agent_url:
            raise RuntimeError(f"node {node.name} has no agent to fetch the model")
        return self.agent(node, self._prewarm_session)

    def status(self) -> dict[str, Any]:
        assert self.controller is not None
        body = self.controller.status().to_dict()
        body["endpoint"] = self.options.spec.name
        body["image"] = self.options.spec.image
        body["model"] = self.options.spec.model
        return body

    def app(self) -> web.Application:
        app = create_router_app(self.router)

        async def endpoint_status(request: web.Request) -> web.Response:
            return web.json_response(self.status())

        async def metrics(request: web.Request) -> web.Response:
            self.refresh_metrics()
            return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

        app.router.add_get("/endpoint/status", endpoint_status)
        app.router.add_get("/metrics", metrics)
        return app


async def serve_endpoint(
    options: ServeOptions,
    host: str,
    port: int,
    stop: asyncio.Event,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Run until ``stop`` is set; then drain and stop every replica this run started."""
    service = EndpointService(options)
    controller = await service.open()
    runner = web.AppRunner(service.app(), handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        if ready is not None:
            ready(f"http://{host}:{port}")
        await controller.run(stop, options.interval)
    finally:
        await service.close()
        await runner.cleanup()


__all__ = [
    "EndpointService",
    "NodeOption",
    "NodeOptionError",
    "ServeOptions",
    "TokenFileError",
    "build_runtime",
    "parse_node_option",
    "parse_node_options",
    "read_token_file",
    "serve_endpoint",
]
