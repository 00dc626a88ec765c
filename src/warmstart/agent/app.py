"""Wiring the agent: the aiohttp application, its store and fetcher, and serving it.

``build_app(config)`` builds every part of the agent in one phase (:func:`build_parts`: the
content store, the tiered fetcher, the containerd linker, the pre-warmer, ...), then the
application over them (:func:`create_app`), which closes them when it stops; tests swap some
makers (:class:`PartMakers`: an in-memory fetcher, no containerd). ``serve(config)`` runs
it with the header limits from the config until SIGINT/SIGTERM, then stops gracefully: no
new connections, the responses in flight finish (up to ``config.shutdown_grace`` seconds; a
client that stalls longer is cut off), exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from warmstart.agent.api import PeerDiscovery
from warmstart.agent.config import AgentConfig, UpstreamConfig
from warmstart.agent.hooks import HotImages, Prewarmer
from warmstart.agent.httplog import AgentAccessLogger, ServerLog
from warmstart.agent.import_grants import ImportGrants
from warmstart.agent.link_setup import decide_link_setup
from warmstart.agent.linking import ImageLinker
from warmstart.agent.metrics import AgentMetrics
from warmstart.agent.middleware import observe
from warmstart.agent.node_setup import setup_node
from warmstart.agent.peer_set import PeerSet
from warmstart.agent.server import add_routes
from warmstart.agent.state import STATE, AgentParts, AgentState
from warmstart.containerd.content_link import (
    ContentDirError,
    ContentLinker,
    LinkMode,
    LinkSetup,
)
from warmstart.errors import WarmstartError
from warmstart.fetch.config import FetcherConfig, UpstreamSettings
from warmstart.fetch.interfaces import Fetcher
from warmstart.fetch.pieces import UploadSlots
from warmstart.registry import Credentials, CredentialsError, CredentialStore
from warmstart.store import ContentStore

log = logging.getLogger(__name__)

SHUTDOWN_BACKSTOP = 5.0  # seconds past the grace before aiohttp's own shutdown timeout


class AgentSetupError(WarmstartError):
    """The agent cannot start with this configuration; the message is one line."""

    code = "INVALID_CONFIG"


# -- default parts ---------------------------------------------------------------------------


def upstream_credentials(registry: str, upstream: UpstreamConfig) -> Credentials | None:
    """The agent's own credentials for ``registry``: username/password, or the entry of the
    docker config file named by ``credentials_file`` (looked up by registry name, then by the
    URL's host)."""
    if upstream.username is not None:
        return Credentials(username=upstream.username, password=upstream.password)
    if upstream.credentials_file is None:
        return None
    try:
        store = CredentialStore.from_docker_config(upstream.credentials_file)
    except CredentialsError as e:
        raise AgentSetupError(f"upstream {registry}: {e}") from None
    found = store.get(registry) or store.get(upstream.netloc(registry))
    if found is None:
        raise AgentSetupError(
            f"upstream {registry}: {upstream.credentials_file} has no credentials for it"
        )
    return found


def fetcher_config(config: AgentConfig) -> FetcherConfig:
    """The fetch layer's settings from the agent's configuration."""
    upstreams = {
        registry: UpstreamSettings(
            url=up.url,
            credentials=upstream_credentials(registry, up),
            ca_file=str(up.ca_file) if up.ca_file is not None else None,
            insecure=up.is_http,
            shared=up.shared,
        )
        for registry, up in config.upstreams.items()
    }
    return FetcherConfig(
        node_id=config.node_id,
        self_url=config.advertise_url,
        upstreams=upstreams,
        peer_token=config.peer_token,
        peer_timeout=config.peer_timeout,
        tag_ttl=config.tag_ttl,
        pieces=config.pieces,
        piece_threshold=config.piece_threshold,
        piece_min=config.piece_min,
        piece_max=min(max(config.piece_max, config.piece_min), 1 << 30),
        piece_downloads=config.piece_downloads,
    )


async def open_store(config: AgentConfig, stack: AsyncExitStack) -> ContentStore:
    """The store at ``config.store`` with ``config.budget``, closed with the agent."""
    try:
        store = await asyncio.to_thread(ContentStore, config.store, budget=config.budget)
    except OSError as e:
        raise AgentSetupError(
            f"cannot open the store at {config.store}: {e.strerror or e}"
        ) from None
    close_with(stack, store.aclose, "the store")
    return store


def given_store(store: ContentStore) -> StoreMaker:
    """A store maker that uses ``store`` as it is (whoever opened it closes it)."""

    async def make(_config: AgentConfig, _stack: AsyncExitStack) -> ContentStore:
        return store

    return make


def build_default_fetcher(
    config: AgentConfig,
    store: ContentStore,
    peers: PeerSet,
    metrics: AgentMetrics,
    stack: AsyncExitStack,
) -> Fetcher:
    """The tiered fetcher (``warmstart.fetch.build``): local store, the digest's home peer,
    other peers, then the upstream registries. It reads ``peers`` on every request, so
    ``PUT /peers`` takes effect at once; its HTTP clients close with the agent."""
    from warmstart.fetch.build import build_fetcher

    fetcher = build_fetcher(fetcher_config(config), store, peers=peers, metrics=metrics)
    close_with(stack, fetcher.aclose, "the fetcher")
    return fetcher


def build_default_prewarmer(
    config: AgentConfig,
    fetcher: Fetcher,
    store: ContentStore,
    grants: ImportGrants,
    linker: ImageLinker | None,
) -> Prewarmer | None:
    from warmstart.agent.prewarm import ContainerdPrewarmer
    from warmstart.containerd.ctr import ContainerdTarget

    target = None
    if config.containerd_socket is not None:
        target = ContainerdTarget(
            socket=config.containerd_socket,
            namespace=config.containerd_namespace,
            snapshotter=config.containerd_snapshotter,
            ctr_binary=config.ctr_binary,
        )
    return ContainerdPrewarmer(
        fetcher,
        store,
        agent_url=config.local_url,
        containerd=target,
        grants=grants,
        linker=linker,
    )


async def build_default_linker(
    config: AgentConfig,
    store: ContentStore,
    fetcher: Fetcher,
    metrics: AgentMetrics,
    stack: AsyncExitStack,
) -> tuple[LinkSetup | None, ImageLinker | None]:
    """How this node links blobs into containerd (``warmstart.agent.link_setup``)."""
    try:
        setup = await decide_link_setup(config, store.root)
    except ContentDirError as e:
        raise AgentSetupError(str(e)) from None
    if setup.message:
        (log.warning if setup.mode is LinkMode.OFF else log.info)("%s", setup.message)
    if not setup.enabled:
        return setup, None
    assert setup.content_dir is not None
    log.info("linking verified blobs into containerd's content store %s", setup.content_dir)
    linker = ImageLinker(
        ContentLinker(setup.content_dir, setup.mode), store, fetcher, on_linked=metrics.linked
    )
    close_with(stack, linker.aclose, "the containerd linker")
    return setup, linker


def build_default_hot(config: AgentConfig) -> HotImages | None:
    if config.containerd_socket is None:
        return None
    from warmstart.containerd.ctr import Ctr
    from warmstart.containerd.images import ContainerdImages

    ctr = Ctr(config.containerd_socket, config.containerd_namespace, config.ctr_binary)
    return ContainerdImages(ctr, config.containerd_snapshotter)


async def follow_kubernetes(
    config: AgentConfig, peers: PeerSet, stack: AsyncExitStack
) -> Callable[[float | None], PeerDiscovery]:
    """Start keeping ``peers`` equal to the agents' EndpointSlices (stopped with the agent);
    the follower's status. No API location configured stops the agent (AgentSetupError); an
    API that cannot be reached does not."""
    from warmstart.agent.kube_peers import KubeConfigError, start_kube_peers

    try:
        following = await start_kube_peers(config, peers)
    except KubeConfigError as e:
        raise AgentSetupError(f"peers_from_kubernetes: {e}") from None
    close_with(stack, following.stop, "the Kubernetes peer follower")
    return following.follower.status


def close_with(stack: AsyncExitStack, close: Callable[[], Awaitable[object]], what: str) -> None:
    """Close a part when the agent stops; a part that fails to close is logged, and the
    others are still closed."""

    async def quietly() -> None:
        try:
            await close()
        except Exception:
            log.exception("closing %s failed", what)

    stack.push_async_callback(quietly)


# -- the parts, built in one phase -----------------------------------------------------------


StoreMaker = Callable[[AgentConfig, AsyncExitStack], Awaitable[ContentStore]]
FetcherMaker = Callable[[AgentConfig, ContentStore, PeerSet, AgentMetrics, AsyncExitStack], Fetcher]
LinkerMaker = Callable[
    [AgentConfig, ContentStore, Fetcher, AgentMetrics, AsyncExitStack],
    Awaitable[tuple[LinkSetup | None, ImageLinker | None]],
]
PrewarmerMaker = Callable[
    [AgentConfig, Fetcher, ContentStore, ImportGrants, ImageLinker | None], Prewarmer | None
]
HotMaker = Callable[[AgentConfig], HotImages | None]


@dataclass(frozen=True)
class PartMakers:
    """How :func:`build_parts` makes each part from the configuration (and the parts made
    before it); a maker registers on the stack how its part is closed. Tests swap some (an
    in-memory fetcher, no containerd)."""

    metrics: Callable[[], AgentMetrics] = AgentMetrics
    store: StoreMaker = open_store
    fetcher: FetcherMaker = build_default_fetcher
    linker: LinkerMaker = build_default_linker
    prewarmer: PrewarmerMaker = build_default_prewarmer
    hot: HotMaker = build_default_hot


async def build_parts(
    config: AgentConfig, stack: AsyncExitStack, makers: PartMakers = PartMakers()
) -> AgentParts:
    """Every part of the agent, ready to serve; ``stack`` closes them, last made first."""
    peers = PeerSet(config.peers, self_url=config.advertise_url)
    metrics = makers.metrics()

    def peers_changed(_urls: tuple[str, ...]) -> None:
        metrics.set_peers(len(peers.others()), peers.changed_at)

    peers.subscribe(peers_changed)
    metrics.set_peers(len(peers.others()), None)
    metrics.peers_from_kubernetes.set(1 if config.peers_from_kubernetes else 0)
    store = await makers.store(config, stack)
    fetcher = makers.fetcher(config, store, peers, metrics, stack)
    link_setup, linker = await makers.linker(config, store, fetcher, metrics, stack)
    grants = ImportGrants()
    prewarmer = makers.prewarmer(config, fetcher, store, grants, linker)
    node_setup = None
    if config.containerd_certs_dir is not None:
        node_setup = await asyncio.to_thread(setup_node, config)
    peer_source = None
    if config.peers_from_kubernetes:
        peer_source = await follow_kubernetes(config, peers, stack)
    metrics.set_store(store.usage(), store.budget)
    return AgentParts(
        config=config,
        peers=peers,
        metrics=metrics,
        store=store,
        fetcher=fetcher,
        grants=grants,
        prewarmer=prewarmer,
        hot=makers.hot(config),
        linker=linker,
        link_setup=link_setup,
        node_setup=node_setup,
        peer_source=peer_source,
    )


# -- the application -------------------------------------------------------------------------


def create_app(parts: AgentParts) -> web.Application:
    """The agent's application over ``parts`` (which it does not close)."""
    app = web.Application(middlewares=[observe], client_max_size=1 << 20)
    app[STATE] = AgentState(parts, uploads=UploadSlots(parts.config.piece_uploads))
    add_routes(app)
    return app


async def build_app(config: AgentConfig, makers: PartMakers = PartMakers()) -> web.Application:
    """The agent's parts built from ``config`` (by ``makers``) and its application over them;
    the parts close when the application, once started, is cleaned up. A part that cannot be built raises
    (:class:`AgentSetupError` for a configuration that cannot work) after closing the others."""
    stack = AsyncExitStack()
    try:
        parts = await build_parts(config, stack, makers)
    except BaseException:
        await stack.aclose()
        raise
    app = create_app(parts)

    async def close_parts(_app: web.Application) -> None:
        await stack.aclose()

    app.on_cleanup.append(close_parts)
    return app


def server_kwargs(config: AgentConfig) -> dict[str, Any]:
    """Keyword arguments for ``AppRunner`` (or ``TestServer.start_server``): request-line and
    header-field limits (a longer header is answered 400 by aiohttp's parser), and the loggers
    that log a request the parser refused as one access line (``warmstart.agent.httplog``)."""
    return {
        "max_line_size": config.max_header_size,
        "max_field_size": config.max_header_size,
        "access_log_class": AgentAccessLogger,
        "logger": ServerLog(logging.getLogger("warmstart.agent.http")),
    }


async def start(config: AgentConfig, app: web.Application | None = None) -> web.AppRunner:
    """Start serving on ``config.listen`` (``app``: by default :func:`build_app`'s); the
    caller cleans the runner up."""
    app = app if app is not None else await build_app(config)
    # aiohttp's shutdown: stop listening, close idle keep-alive connections, wait up to
    # shutdown_timeout for the requests in progress. stop_gracefully cuts them at the grace;
    # aiohttp's own timeout is only a backstop, later, so the two never race.
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("warmstart.agent.access"),
        shutdown_timeout=config.shutdown_grace + SHUTDOWN_BACKSTOP,
        **server_kwargs(config),
    )
    await runner.setup()
    try:
        site = web.TCPSite(
            runner,
            config.listen_host,
            config.listen_port,
            reuse_address=True,
        )
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def serve(config: AgentConfig, *, ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then finish the responses in flight (up to
    ``config.shutdown_grace`` seconds) and return.

    containerd falls back to the upstream when the mirror refuses a connection, but not when
    a body it is reading breaks: a restart must never cut a transfer that could finish."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    runner = await start(config)
    try:
        addresses = ", ".join(
            f"http://{a[0]}:{a[1]}" if isinstance(a, tuple) else str(a) for a in runner.addresses
        )
        if ready is not None:
            ready(addresses)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await stop_gracefully(runner, config.shutdown_grace)


async def stop_gracefully(runner: web.AppRunner, grace: float) -> None:
    """Stop listening, let the responses in flight finish for up to ``grace`` seconds, cut
    those still running then (a client that stalls), and clean up.

    aiohttp's own shutdown waits ``shutdown_timeout`` for the requests in progress and then
    as long again for them to end after it cancels their payload only; cancelling their
    tasks here at the deadline keeps the whole stop within ``grace``."""
    loop = asyncio.get_running_loop()
    state = runner.app[STATE]
    started = loop.time()
    log.info(
        "stopping: no new connections; %d request(s) in flight may finish within %.0f s",
        len(state.in_flight),
        grace,
    )

    def cut() -> None:
        cut_off = state.cut_in_flight()
        if cut_off:
            log.warning("grace period over: cut %d response(s) still in flight", cut_off)

    deadline = loop.call_later(grace, cut)
    try:
        await runner.cleanup()
    finally:
        deadline.cancel()
    log.info("stopped after %.1f s", loop.time() - started)
