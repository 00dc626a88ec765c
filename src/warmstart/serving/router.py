"""The endpoint's router: a reverse proxy in front of replicas that follow the SageMaker contract.

:class:`Router` owns the state (replicas, their in-flight counts, the wait queue, totals) and hands
out leases: ``acquire`` picks the ready replica with the fewest outstanding requests (see
:mod:`warmstart.serving.balancer`) or waits in a bounded FIFO until one is free; ``release`` gives
the lease back and serves the queue. :func:`create_router_app` wraps it in an aiohttp application
that streams ``POST /invocations`` to the chosen replica and answers ``GET /ping`` and
``GET /router/status`` itself.

A request whose replica refuses the connection (nothing was delivered) is retried once on another
replica, and that replica is marked not ready until the controller sees ``/ping`` answer again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from warmstart.serving.balancer import Candidate, choose
from warmstart.serving.queue import QueueFull, QueueTimeout, Waiter, WaitQueue

__all__ = [
    "QueueFull",
    "QueueTimeout",
    "ReplicaSnapshot",
    "Router",
    "RouterConfig",
    "RouterSnapshot",
    "RouterTotals",
    "create_router_app",
]

READY = "ready"
NOT_READY = "not_ready"
DRAINING = "draining"

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
REPLICA_HEADER = "X-Warmstart-Replica"
CHUNK = 64 * 1024


@dataclass(frozen=True)
class RouterConfig:
    """Bounds of the router; every field has a default."""

    queue_size: int = 1000
    queue_timeout: float = 60.0
    max_concurrency_per_replica: int | None = None
    retry_after: int = 1  # seconds, sent with 503 answers
    connect_timeout: float = 5.0
    request_timeout: float | None = None  # whole upstream exchange; None = no limit
    drain_timeout: float | None = None  # remove_replica(drain=True) gives up after this
    connection_limit: int = 0  # upstream connections in total; 0 = no limit

    def __post_init__(self) -> None:
        if self.queue_size < 0:
            raise ValueError("queue_size must be >= 0")
        if self.queue_timeout <= 0:
            raise ValueError("queue_timeout must be > 0")
        if self.max_concurrency_per_replica is not None and self.max_concurrency_per_replica < 1:
            raise ValueError("max_concurrency_per_replica must be >= 1 or None")


@dataclass(frozen=True)
class ReplicaSnapshot:
    replica_id: str
    url: str
    state: str  # "ready", "not_ready" or "draining"
    in_flight: int
    requests: int  # leases handed to this replica
    errors: int  # upstream failures (connect refused, broken exchange)


@dataclass(frozen=True)
class RouterTotals:
    requests: int = 0  # proxied requests received
    errors: int = 0  # requests answered 502 or broken after the replica failed
    queue_timeouts: int = 0
    rejections: int = 0  # queue full
    retries: int = 0  # requests retried on another replica after a refused connection


@dataclass(frozen=True)
class RouterSnapshot:
    """What the autoscaler consumes: load now, and how the router got here."""

    replicas: tuple[ReplicaSnapshot, ...]
    queue_length: int
    totals: RouterTotals

    @property
    def in_flight(self) -> int:
        return sum(r.in_flight for r in self.replicas)

    @property
    def concurrency(self) -> int:
        """Requests in the system: in flight on replicas plus waiting in the queue."""
        return self.in_flight + self.queue_length

    @property
    def ready_replicas(self) -> int:
        return sum(1 for r in self.replicas if r.state == READY)

    def replica(self, replica_id: str) -> ReplicaSnapshot | None:
        return next((r for r in self.replicas if r.replica_id == replica_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "replicas": [asdict(r) for r in self.replicas],
            "queue_length": self.queue_length,
            "in_flight": self.in_flight,
            "concurrency": self.concurrency,
            "ready_replicas": self.ready_replicas,
            "totals": asdict(self.totals),
        }


@dataclass(eq=False)
class _Replica:
    replica_id: str
    url: str
    order: int
    ready: bool = False
    draining: bool = False
    in_flight: int = 0
    requests: int = 0
    errors: int = 0
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def state(self) -> str:
        if self.draining:
            return DRAINING
        return READY if self.ready else NOT_READY

    @property
    def routable(self) -> bool:
        return self.ready and not self.draining


@dataclass(frozen=True)
class Lease:
    replica_id: str
    url: str


class Router:
    """Replica registry, least-outstanding leases and the wait queue of one endpoint."""

    def __init__(
        self,
        config: RouterConfig | None = None,
        *,
        on_request_done: Callable[[float, int], None] | None = None,
    ) -> None:
        """``on_request_done(seconds, status)``: after every proxied request's last byte (or
        its error answer), with the time since it arrived, queueing included."""
        self.config = config or RouterConfig()
        self.on_request_done = on_request_done
        self._replicas: dict[str, _Replica] = {}
        self._queue: WaitQueue[Lease] = WaitQueue(self.config.queue_size)
        self._next_order = 0
        self._last_order: int | None = None
        self._totals: dict[str, int] = dict.fromkeys(asdict(RouterTotals()), 0)

    # -- replicas ---------------------------------------------------------------------------

    def add_replica(self, replica_id: str, url: str, *, ready: bool = False) -> None:
        """Register a replica at ``url`` (``http://host:port``); it gets traffic once ready."""
        if replica_id in self._replicas:
            raise ValueError(f"replica {replica_id!r} is already registered")
        self._replicas[replica_id] = _Replica(
            replica_id=replica_id, url=url.rstrip("/"), order=self._next_order, ready=ready
        )
        self._next_order += 1
        if ready:
            self._dispatch()

    def set_ready(self, replica_id: str, ready: bool) -> None:
        """Mark a replica ready (``/ping`` answered 200) or not; unknown ids raise KeyError."""
        replica = self._replicas[replica_id]
        replica.ready = ready
        if ready:
            self._dispatch()

    async def remove_replica(self, replica_id: str, *, drain: bool = True) -> bool:
        """Stop routing to a replica and forget it.

        With ``drain`` this waits until its in-flight requests have finished (at most
        ``config.drain_timeout``); returns False if that wait timed out. Removing an unknown id is
        a no-op that returns True.
        """
        replica = self._replicas.get(replica_id)
        if replica is None:
            return True
        replica.draining = True
        drained = True
        if drain and replica.in_flight > 0:
            try:
                await asyncio.wait_for(replica.drained.wait(), self.config.drain_timeout)
            except TimeoutError:
                drained = False
        if self._replicas.get(replica_id) is replica:
            del self._replicas[replica_id]
        return drained

    def replica_ids(self) -> list[str]:
        return list(self._replicas)

    # -- leases -----------------------------------------------------------------------------

    async def acquire(self, *, exclude: frozenset[str] = frozenset(), retry: bool = False) -> Lease:
        """Lease the least-loaded ready replica, waiting in the queue if none is free.

        Raises :class:`QueueFull` when the queue is at its bound (retries skip the bound and go
        first) and :class:`QueueTimeout` after ``config.queue_timeout`` seconds of waiting.
        """
        if len(self._queue) == 0:
            chosen = self._choose(exclude)
            if chosen is not None:
                return self._lease(chosen)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Lease] = loop.create_future()
        try:
            waiter = self._queue.push(future, exclude=exclude, urgent=retry)
        except QueueFull:
            self._totals["rejections"] += 1
            raise
        self._dispatch()
        timeout = self.config.queue_timeout
        handle = loop.call_later(timeout, self._expire, waiter, timeout)
        try:
            return await future
        except asyncio.CancelledError:
            self._queue.discard(waiter)
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release(future.result().replica_id)
            raise
        finally:
            handle.cancel()

    def release(self, replica_id: str) -> None:
        """Give back a lease taken by :meth:`acquire`; serves queued requests."""
        replica = self._replicas.get(replica_id)
        if replica is not None:
            replica.in_flight -= 1
            if replica.in_flight == 0:
                replica.drained.set()
        self._dispatch()

    def connect_failed(self, replica_id: str) -> None:
        """The replica refused a connection: count it and stop routing there until ready again."""
        replica = self._replicas.get(replica_id)
        if replica is not None:
            replica.errors += 1
            replica.ready = False

    def exchange_failed(self, replica_id: str) -> None:
        """The replica broke an exchange after the request may have been delivered."""
        replica = self._replicas.get(replica_id)
        if replica is not None:
            replica.errors += 1

    def count(self, name: str, n: int = 1) -> None:
        """Add to a total of :class:`RouterTotals` (``requests``, ``errors``, ``retries``...)."""
        self._totals[name] += n

    # -- metrics ----------------------------------------------------------------------------

    def snapshot(self) -> RouterSnapshot:
        replicas = tuple(
            ReplicaSnapshot(
                replica_id=r.replica_id,
                url=r.url,
                state=r.state,
                in_flight=r.in_flight,
                requests=r.requests,
                errors=r.errors,
            )
            for r in self._replicas.values()
        )
        return RouterSnapshot(
            replicas=replicas, queue_length=len(self._queue), totals=RouterTotals(**self._totals)
        )

    # -- internals --------------------------------------------------------------------------

    def _choose(self, exclude: frozenset[str]) -> _Replica | None:
        candidates = [
            Candidate(r.replica_id, r.order, r.in_flight)
            for r in self._replicas.values()
            if r.routable and r.replica_id not in exclude
        ]
        chosen = choose(
            candidates, last_order=self._last_order, cap=self.config.max_concurrency_per_replica
        )
        return None if chosen is None else self._replicas[chosen.replica_id]

    def _lease(self, replica: _Replica) -> Lease:
        replica.in_flight += 1
        replica.requests += 1
        replica.drained.clear()
        self._last_order = replica.order
        return Lease(replica.replica_id, replica.url)

    def _dispatch(self) -> None:
        for waiter in self._queue:
            if waiter.future.done():
                self._queue.discard(waiter)
                continue
            chosen = self._choose(waiter.exclude)
            if chosen is None:
                if not waiter.exclude:
                    break  # nothing free for anyone
                continue
            self._queue.discard(waiter)
            waiter.future.set_result(self._lease(chosen))

    def _expire(self, waiter: Waiter[Lease], waited: float) -> None:
        if waiter.future.done():
            return
        self._queue.discard(waiter)
        self._totals["queue_timeouts"] += 1
        waiter.future.set_exception(QueueTimeout(waited))


# -- the aiohttp application ------------------------------------------------------------------

ROUTER_KEY = web.AppKey("router", Router)
SESSION_KEY = web.AppKey("router_session", aiohttp.ClientSession)


def create_router_app(
    router: Router, *, session: aiohttp.ClientSession | None = None
) -> web.Application:
    """The router's HTTP face: ``POST /invocations``, ``GET /ping``, ``GET /router/status``.

    Without ``session`` one is created on startup and closed on cleanup.
    """
    app = web.Application()
    app[ROUTER_KEY] = router
    app.router.add_post("/invocations", _proxy)
    app.router.add_get("/ping", _ping)
    app.router.add_get("/router/status", _status)

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        if session is not None:
            app[SESSION_KEY] = session
            yield
            return
        config = router.config
        own = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=config.connection_limit),
            timeout=aiohttp.ClientTimeout(
                total=config.request_timeout, sock_connect=config.connect_timeout
            ),
            auto_decompress=False,
        )
        app[SESSION_KEY] = own
        try:
            yield
        finally:
            await own.close()

    app.cleanup_ctx.append(session_ctx)
    return app


def _error(status: int, code: str, message: str, *, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


async def _ping(request: web.Request) -> web.Response:
    snapshot = request.app[ROUTER_KEY].snapshot()
    ready = snapshot.ready_replicas
    if ready:
        return web.json_response({"status": "ok", "ready_replicas": ready})
    return web.json_response({"status": "no ready replica", "ready_replicas": 0}, status=503)


async def _status(request: web.Request) -> web.Response:
    return web.json_response(request.app[ROUTER_KEY].snapshot().to_dict())


def _forward_headers(headers: Any, *, drop: frozenset[str] = frozenset()) -> CIMultiDict[str]:
    named = {
        token.strip().lower()
        for value in headers.getall("Connection", [])
        for token in value.split(",")
    }
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in named or lower in drop:
            continue
        out.add(name, value)
    return out


async def _body(request: web.Request, started: list[bool]) -> AsyncIterator[bytes]:
    started.append(True)
    async for chunk in request.content.iter_chunked(CHUNK):
        yield chunk


async def _proxy(request: web.Request) -> web.StreamResponse:
    router = request.app[ROUTER_KEY]
    if router.on_request_done is None:
        return await _proxy_once(request)
    started = time.monotonic()
    status = 500
    try:
        response = await _proxy_once(request)
        status = response.status
        return response
    finally:
        router.on_request_done(time.monotonic() - started, status)


async def _proxy_once(request: web.Request) -> web.StreamResponse:
    router = request.app[ROUTER_KEY]
    session = request.app[SESSION_KEY]
    config = router.config
    router.count("requests")
    headers = _forward_headers(request.headers, drop=frozenset({"host"}))
    if request.remote:
        prior = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior}, {request.remote}" if prior else request.remote
    exclude: frozenset[str] = frozenset()
    while True:
        try:
            lease = await router.acquire(exclude=exclude, retry=bool(exclude))
        except QueueFull:
            return _error(
                503,
                "queue_full",
                f"all replicas are busy and {config.queue_size} requests are already waiting",
                retry_after=config.retry_after,
            )
        except QueueTimeout as exc:
            return _error(
                503,
                "queue_timeout",
                f"no replica became available within {exc.waited:g}s",
                retry_after=config.retry_after,
            )
        started: list[bool] = []
        try:
            try:
                upstream = await session.request(
                    request.method,
                    URL(lease.url + request.raw_path, encoded=True),
                    headers=headers,
                    data=_body(request, started) if request.body_exists else None,
                    allow_redirects=False,
                    skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
                )
            except aiohttp.ClientConnectorError as exc:
                router.connect_failed(lease.replica_id)
                if not exclude and not started:
                    router.count("retries")
                    exclude = frozenset({lease.replica_id})
                    continue
                router.count("errors")
                return _error(502, "replica_unreachable", f"replica {lease.replica_id}: {exc}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                router.exchange_failed(lease.replica_id)
                router.count("errors")
                return _error(502, "replica_failed", f"replica {lease.replica_id}: {exc!r}")
            try:
                return await _stream_back(request, upstream, lease.replica_id)
            except (aiohttp.ClientError, TimeoutError):
                router.exchange_failed(lease.replica_id)
                router.count("errors")
                raise
            finally:
                upstream.release()
        finally:
            router.release(lease.replica_id)


async def _stream_back(
    request: web.Request, upstream: aiohttp.ClientResponse, replica_id: str
) -> web.StreamResponse:
    headers = _forward_headers(upstream.headers)
    headers[REPLICA_HEADER] = replica_id
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
    return response
