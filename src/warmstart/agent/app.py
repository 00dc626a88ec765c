"""Wiring the agent: the aiohttp application, its store and fetcher, and serving it.

``create_app(config)`` opens the content store and builds the tiered fetcher when the app
starts (``cleanup_ctx``) and closes them when it stops; tests inject an in-memory ``fetcher``.
``serve(config)`` runs it with the header limits from the config until SIGINT/SIGTERM, then
stops gracefully: no new connections, the responses in flight finish (up to
``config.shutdown_grace`` seconds; a client that stalls longer is cut off), exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from warmstart.agent.config import AgentConfig, UpstreamConfig
from warmstart.agent.hooks import HotImages, Prewarmer
from warmstart.agent.httplog import AgentAccessLogger, ServerLog
from warmstart.agent.import_grants import ImportGrants
from warmstart.agent.link_setup import decide_link_setup
from warmstart.agent.linking import ImageLinker
from warmstart.agent.metrics import AgentMetrics
from warmstart.agent.node_setup import setup_node
from warmstart.agent.peer_set import PeerSet
from warmstart.agent.server import STATE, AgentState, add_routes, observe
from warmstart.containerd.content_link import (
    ContentDirError,
    ContentLinker,
    LinkMode,
    LinkSetup,
)
from warmstart.errors import WarmstartError
from warmstart.fetch.api import Fetcher
from warmstart.fetch.config import FetcherConfig, UpstreamSettings
from warmstart.fetch.pieces import UploadSlots
from warmstart.registry import Credentials, CredentialsError, CredentialStore
from warmstart.store import ContentStore

log = logging.getLogger(__name__)

FetcherFactory = Callable[[AgentConfig, ContentStore, PeerSet, AgentMetrics], Fetcher]
PrewarmerFactory = Callable[[AgentConfig, Fetcher, ContentStore | None], Prewarmer | None]
HotFactory = Callable[[AgentConfig], HotImages | None]
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


def build_default_fetcher(
    config: AgentConfig, store: ContentStore, peers: PeerSet, metrics: AgentMetrics
) -> Fetcher:
    """The tiered fetcher (``warmstart.fetch.build``): local store, the digest's home peer,
    other peers, then the upstream registries. It reads ``peers`` on every request, so
    ``PUT /peers`` takes effect at once; its HTTP clients close with it."""
    from warmstart.fetch.build import build_fetcher

    return build_fetcher(fetcher_config(config), store, peers=peers, metrics=metrics)


def build_default_prewarmer(
    config: AgentConfig,
    fetcher: Fetcher,
    store: ContentStore | None,
    grants: ImportGrants | None = None,
    linker: ImageLinker | None = None,
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
    config: AgentConfig, store: ContentStore, fetcher: Fetcher, metrics: AgentMetrics
) -> tuple[LinkSetup, ImageLinker | None]:
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
    return setup, linker


def build_default_hot(config: AgentConfig) -> HotImages | None:
    if config.containerd_socket is None:
        return None
    from warmstart.containerd.ctr import Ctr
    from warmstart.containerd.images import ContainerdImages

    ctr = Ctr(config.containerd_socket, config.containerd_namespace, config.ctr_binary)
    return ContainerdImages(ctr, config.containerd_snapshotter)


async def _follow_kubernetes(config: AgentConfig, state: AgentState) -> object:
    """Start keeping ``state.peers`` equal to the agents' EndpointSlices; the returned object's
    ``stop()`` ends it. No API location configured stops the agent (AgentSetupError); an API
    that cannot be reached does not."""
    from warmstart.agent.kube_peers import KubeConfigError, start_kube_peers

    try:
        following = await start_kube_peers(config, state.peers)
    except KubeConfigError as e:
        raise AgentSetupError(f"peers_from_kubernetes: {e}") from None
    state.peer_source = following.follower.status
    return following


async def _close(obj: object) -> None:
    """Await ``obj.aclose()`` or call ``obj.close()`` if it has one (fetchers, prewarmers)."""
    for name in ("aclose", "close", "stop"):
        method = getattr(obj, name, None)
        if method is None:
            continue
        result = method()
        if inspect.isawaitable(result):
            await result
        return


# -- the application -------------------------------------------------------------------------


def create_app(
    config: AgentConfig,
    *,
    fetcher: Fetcher | None = None,
    prewarmer: Prewarmer | None = None,
    metrics: AgentMetrics | None = None,
    store: ContentStore | None = None,
    peers: PeerSet | None = None,
    hot: HotImages | None = None,
    linker: ImageLinker | None = None,
    fetcher_factory: FetcherFactory | None = None,
    prewarmer_factory: PrewarmerFactory | None = None,
    hot_factory: HotFactory | None = None,
) -> web.Application:
    """The agent's application.

    Parts not given are made at startup: the store from ``config.store``/``budget`` (and closed
    at cleanup), the fetcher by ``fetcher_factory`` (default: the tiered fetcher), the
    pre-warmer by ``prewarmer_factory`` (default: ``warmstart.agent.prewarm``) and the source of
    hot images by ``hot_factory`` (default: containerd when ``containerd_socket`` is set).
    With an injected ``fetcher`` the default pre-warmer and hot source are not built.
    """
    state = AgentState(
        config=config,
        peers=peers if peers is not None else PeerSet(config.peers, self_url=config.advertise_url),
        metrics=metrics if metrics is not None else AgentMetrics(),
        fetcher=fetcher,
        store=store,
        prewarmer=prewarmer,
        hot=hot,
        linker=linker,
        uploads=UploadSlots(config.piece_uploads),
    )
    injected = fetcher is not None

    def peers_changed(_urls: tuple[str, ...]) -> None:
        state.peers_changed_at = time.time()
        state.metrics.set_peers(len(state.peers.others()), state.peers_changed_at)

    state.peers.subscribe(peers_changed)
    state.metrics.set_peers(len(state.peers.others()), None)
    state.metrics.peers_from_kubernetes.set(1 if config.peers_from_kubernetes else 0)
    app = web.Application(middlewares=[observe], client_max_size=1 << 20)
    app[STATE] = state
    add_routes(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        owned: list[object] = []
        own_store = state.store is None
        if own_store:
            try:
                state.store = await asyncio.to_thread(
                    ContentStore, config.store, budget=config.budget
                )
            except OSError as e:
                raise AgentSetupError(
                    f"cannot open the store at {config.store}: {e.strerror or e}"
                ) from None
        assert state.store is not None
        try:
            if state.fetcher is None:
                factory = fetcher_factory or build_default_fetcher
                state.fetcher = factory(config, state.store, state.peers, state.metrics)
                owned.append(state.fetcher)
            if state.linker is None and not injected:
                state.link_setup, state.linker = await build_default_linker(
                    config, state.store, state.fetcher, state.metrics
                )
                if state.linker is not None:
                    owned.append(state.linker)
            if state.prewarmer is None and (prewarmer_factory is not None or not injected):
                if prewarmer_factory is not None:
                    state.prewarmer = prewarmer_factory(config, state.fetcher, state.store)
                else:
                    state.prewarmer = build_default_prewarmer(
                        config, state.fetcher, state.store, state.grants, state.linker
                    )
                if state.prewarmer is not None:
                    owned.append(state.prewarmer)
            if state.hot is None and (hot_factory is not None or not injected):
                state.hot = (hot_factory or build_default_hot)(config)
            if config.containerd_certs_dir is not None:
                state.node_setup = await asyncio.to_thread(setup_node, config)
            if config.peers_from_kubernetes:
                following = await _follow_kubernetes(config, state)
                owned.append(following)
            state.metrics.set_store(state.store.usage(), state.store.budget)
            yield
        finally:
            for part in reversed(owned):
                try:
                    await _close(part)
                except Exception:
                    log.exception("closing %r failed", part)
            if own_store and state.store is not None:
                await state.store.aclose()

    app.cleanup_ctx.append(lifecycle)
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
    """Start serving on ``config.listen``; the caller cleans the runner up."""
    app = app if app is not None else create_app(config)
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
