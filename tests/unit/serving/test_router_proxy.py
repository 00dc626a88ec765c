"""The router app in front of real aiohttp backends on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from warmstart.serving.router import REPLICA_HEADER, Router, RouterConfig, create_router_app

pytestmark = pytest.mark.timeout(60)

MakeRouter = Callable[..., Awaitable["Setup"]]
MakeBackend = Callable[..., Awaitable["Backend"]]


@dataclass
class Backend:
    """A SageMaker-style replica: /ping, /invocations echoing the body, an optional hold."""

    name: str
    delay: float = 0.0
    hold: asyncio.Event | None = None
    served: int = 0
    active: int = 0
    peak: int = 0
    seen: list[dict[str, object]] = field(default_factory=list)
    server: TestServer | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ping", self._ping)
        app.router.add_post("/invocations", self._invoke)
        return app

    async def start(self) -> Backend:
        self.server = TestServer(self.app(), host="127.0.0.1")
        await self.server.start_server()
        return self

    async def stop(self) -> None:
        assert self.server is not None
        await self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _invoke(self, request: web.Request) -> web.StreamResponse:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            body = await request.read()
            self.seen.append(
                {
                    "raw_path": request.raw_path,
                    "headers": dict(request.headers),
                    "body": body,
                }
            )
            if body == b"fail":
                self.served += 1
                return web.json_response({"error": "model"}, status=500)
            if self.hold is not None:
                await self.hold.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            self.served += 1
            response = web.StreamResponse(headers={"X-Backend": self.name})
            response.content_type = "application/octet-stream"
            await response.prepare(request)
            await response.write(self.name.encode() + b":")
            await response.write(body)
            await response.write_eof()
            return response
        finally:
            self.active -= 1


@dataclass
class Setup:
    router: Router
    client: TestClient

    async def invoke(
        self, body: bytes = b"x", path: str = "/invocations", **kw: object
    ) -> tuple[int, bytes, dict[str, str]]:
        async with self.client.post(path, data=body, **kw) as resp:  # type: ignore[arg-type]
            return resp.status, await resp.read(), dict(resp.headers)


@pytest.fixture
async def make_router() -> AsyncIterator[MakeRouter]:
    clients: list[TestClient] = []

    async def make(**config: object) -> Setup:
        router = Router(RouterConfig(**config))  # type: ignore[arg-type]
        client = TestClient(TestServer(create_router_app(router), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return Setup(router, client)

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def backends() -> AsyncIterator[MakeBackend]:
    started: list[Backend] = []

    async def make(name: str, **kw: object) -> Backend:
        backend = await Backend(name, **kw).start()  # type: ignore[arg-type]
        started.append(backend)
        return backend

    yield make
    for backend in started:
        if backend.server is not None and backend.server.runner is not None:
            await backend.stop()


async def _until(cond: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``cond`` every few milliseconds; fail after ``within`` seconds."""
    step = 0.002
    for _ in range(int(within / step)):
        if cond():
            return
        await asyncio.sleep(step)
    raise AssertionError("condition not reached in time")


async def test_proxies_body_query_headers_and_status(
    make_router: MakeRouter, backends: MakeBackend
) -> None:
    setup = await make_router()
    a = await backends("a")
    setup.router.add_replica("a", a.url, ready=True)
    status, body, headers = await setup.invoke(
        b"hello" * 50_000,
        path="/invocations?x=1%202&y=a+b&z=%26",
        headers={"X-Custom": "v", "Connection": "keep-alive, X-Hop", "X-Hop": "drop"},
    )
    assert status == 200
    assert body == b"a:" + b"hello" * 50_000
    assert headers["X-Backend"] == "a" and headers[REPLICA_HEADER] == "a"
    seen = a.seen[0]
    assert seen["raw_path"] == "/invocations?x=1%202&y=a+b&z=%26"
    sent = seen["headers"]
    assert isinstance(sent, dict)
    assert sent["X-Custom"] == "v" and "X-Hop" not in sent
    assert sent["Host"] == a.url.removeprefix("http://")
    assert "X-Forwarded-For" in sent
    snap = setup.router.snapshot()
    assert snap.totals.requests == 1 and snap.in_flight == 0


async def test_replica_errors_pass_through_unretried(
    make_router: MakeRouter, backends: MakeBackend
) -> None:
    setup = await make_router()
    a = await backends("a")
    b = await backends("b")
    setup.router.add_replica("a", a.url, ready=True)
    setup.router.add_replica("b", b.url, ready=True)
    status, body, _ = await setup.invoke(b"fail")
    assert status == 500 and json.loads(body) == {"error": "model"}
    assert a.served + b.served == 1
    snap = setup.router.snapshot()
    assert snap.totals.retries == 0 and snap.ready_replicas == 2


async def test_ping_and_status(make_router: MakeRouter, backends: MakeBackend) -> None:
    setup = await make_router()
    async with setup.client.get("/ping") as resp:
        assert resp.status == 503
    a = await backends("a")
    setup.router.add_replica("a", a.url)
    async with setup.client.get("/ping") as resp:
        assert resp.status == 503
    setup.router.set_ready("a", True)
    async with setup.client.get("/ping") as resp:
        assert resp.status == 200
    async with setup.client.get("/router/status") as resp:
        data = await resp.json()
    assert data["ready_replicas"] == 1
    assert data["replicas"][0]["replica_id"] == "a" and data["replicas"][0]["state"] == "ready"


async def test_least_outstanding_with_held_and_slow_backends(
    make_router: MakeRouter, backends: MakeBackend
) -> None:
    setup = await make_router()
    hold = asyncio.Event()
    slow = await backends("slow", hold=hold)
    fast = await backends("fast")
    setup.router.add_replica("slow", slow.url, ready=True)
    setup.router.add_replica("fast", fast.url, ready=True)
    # the first (a tie) is held on "slow"; with one outstanding there, the rest go to "fast"
    held = [asyncio.create_task(setup.invoke()) for _ in range(2)]
    await _until(lambda: slow.active + fast.served == 2)
    rest = [await setup.invoke() for _ in range(10)]
    assert all(status == 200 for status, _, _ in rest)
    assert fast.served >= 10 and slow.served == 0
    hold.set()
    await asyncio.gather(*held)

    # closed loop, 4 workers: a slow replica gets far fewer requests than a fast one
    slow.delay, slow.hold = 0.2, None
    slow.served = fast.served = 0

    async def worker() -> None:
        for _ in range(10):
            status, _, _ = await setup.invoke()
            assert status == 200

    await asyncio.gather(*(worker() for _ in range(4)))
    assert slow.served + fast.served == 40
    assert slow.served * 3 < fast.served


async def test_queue_while_no_replica_ready_then_drain(
    make_router: MakeRouter, backends: MakeBackend
) -> None:
    setup = await make_router(queue_size=50, queue_timeout=10)
    a = await backends("a")
    setup.router.add_replica("a", a.url)  # starting: not ready
    tasks = [asyncio.create_task(setup.invoke(str(i).encode())) for i in range(20)]
    await _until(lambda: setup.router.snapshot().queue_length == 20)
    assert setup.router.snapshot().concurrency == 20 and a.served == 0
    setup.router.set_ready("a", True)
    results = await asyncio.gather(*tasks)
    assert [r[1] for r in results] == [f"a:{i}".encode() for i in range(20)]
    assert setup.router.snapshot().queue_length == 0


async def test_queue_full_answers_503_with_retry_after(
    make_router: MakeRouter, backends: MakeBackend
) -> None:
    setup = await make_router(queue_size=2, queue_timeout=10, retry_after=3)
    waiting = [asyncio.create_task(setup.invoke()) for _ in range(2)]
    await _until(lambda: setup.router.snapshot().queue_length == 2)
    status, body, headers = await setup.invoke()
    assert status == 503 and headers["Retry-After"] == "3"
    assert json.loads(body)["error"] == "queue_full"
    assert setup.router.snapshot().totals.rejections == 1
    a = await backends("a")
    setup.router.add_replica("a", a.url, ready=True)
    assert [r[0] for r in await asyncio.gather(*waiting)] == [200, 200]


async def test_queue_timeout_answers_503(make_router: MakeRouter) -> None:
    setup = await make_router(queue_timeout=0.1)
    status, body, headers = await setup.invoke()
    assert status == 503 and "Retry-After" in headers
    error = json.loads(body)
    assert error["error"] == "queue_timeout" and "0.1s" in error["message"]
    snap = setup.router.snapshot()
    assert snap.totals.queue_timeouts == 1 and snap.queue_length == 0


async def test_cap_per_replica_queues_the_excess(
    make_router: MakeRouter, backends: MakeBackend
) -> None:
    setup = await make_router(max_concurrency_per_replica=2, queue_timeout=10)
    a = await backends("a", delay=0.05)
    setup.router.add_replica("a", a.url, ready=True)
    results = await asyncio.gather(*(setup.invoke() for _ in range(10)))
    assert all(r[0] == 200 for r in results)
    assert a.peak == 2


async def test_dead_backend_is_retried_on_another(
    make_router: MakeRouter, backends: MakeBackend
) -> None:
    setup = await make_router()
    a = await backends("a")
    b = await backends("b")
    setup.router.add_replica("a", a.url, ready=True)
    setup.router.add_replica("b", b.url, ready=True)
    assert (await setup.invoke())[0] == 200
    await a.stop()  # connection refused from now on; the controller has not noticed yet
    results = await asyncio.gather(*(setup.invoke(b"p") for _ in range(10)))
    assert [r[:2] for r in results] == [(200, b"b:p")] * 10
    snap = setup.router.snapshot()
    assert snap.totals.retries >= 1 and snap.totals.errors == 0
    assert snap.replica("a").state == "not_ready"  # type: ignore[union-attr]


async def test_only_replica_dead_retry_waits_then_times_out(
    make_router: MakeRouter, backends: MakeBackend
) -> None:
    setup = await make_router(queue_timeout=0.2)
    a = await backends("a")
    setup.router.add_replica("a", a.url, ready=True)
    await a.stop()
    status, body, _ = await setup.invoke()
    # the retry waits for another replica, none comes: a queue timeout, not a hang
    assert status == 503 and json.loads(body)["error"] == "queue_timeout"
    assert setup.router.snapshot().totals.retries == 1


async def test_remove_with_drain_loses_nothing(
    make_router: MakeRouter, backends: MakeBackend
) -> None:
    setup = await make_router()
    a = await backends("a", delay=0.2)
    b = await backends("b", delay=0.01)
    setup.router.add_replica("a", a.url, ready=True)
    setup.router.add_replica("b", b.url, ready=True)
    tasks = [asyncio.create_task(setup.invoke()) for _ in range(10)]
    await _until(lambda: a.active > 0)
    removed = asyncio.create_task(setup.router.remove_replica("a"))
    more = [asyncio.create_task(setup.invoke()) for _ in range(10)]
    assert await removed is True
    assert a.active == 0 and setup.router.replica_ids() == ["b"]
    await a.stop()
    results = await asyncio.gather(*tasks, *more)
    assert all(r[0] == 200 for r in results)
    assert a.served + b.served == 20


async def test_burst_while_replicas_come_and_go(
    make_router: MakeRouter, backends: MakeBackend
) -> None:
    setup = await make_router(queue_size=500, queue_timeout=20)
    pool = [await backends(f"r{i}", delay=0.02) for i in range(4)]
    router = setup.router
    router.add_replica("r0", pool[0].url, ready=True)
    router.add_replica("r1", pool[1].url, ready=True)

    async def churn() -> None:
        await asyncio.sleep(0.02)
        router.add_replica("r2", pool[2].url)
        await asyncio.sleep(0.02)
        router.set_ready("r2", True)
        await router.remove_replica("r0")
        await pool[0].stop()
        router.add_replica("r3", pool[3].url, ready=True)
        await asyncio.sleep(0.02)
        await router.remove_replica("r1")
        # r2 dies without notice: its requests fail at connect and are retried on r3
        await pool[2].stop()

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = setup.client.make_url("/invocations")

        async def one(i: int) -> tuple[int, bytes]:
            async with session.post(url, data=f"{i}".encode()) as resp:
                return resp.status, await resp.read()

        results, _ = await asyncio.gather(asyncio.gather(*(one(i) for i in range(200))), churn())
    assert [r[0] for r in results] == [200] * 200
    assert all(body.endswith(f":{i}".encode()) for i, (_, body) in enumerate(results))
    snap = router.snapshot()
    assert snap.totals.requests == 200 and snap.totals.errors == 0
    assert snap.in_flight == 0 and snap.queue_length == 0


async def test_request_latency_reaches_the_endpoint_histogram(backends: MakeBackend) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from warmstart.serving.metrics import EndpointMetrics

    metrics = EndpointMetrics("embed")
    router = Router(
        RouterConfig(queue_size=1, queue_timeout=0.2), on_request_done=metrics.observe_request
    )
    client = TestClient(TestServer(create_router_app(router), host="127.0.0.1"))
    await client.start_server()
    try:
        async with client.post("/invocations", data=b"x") as resp:  # no replica: queue timeout
            assert resp.status == 503
        a = await backends("a")
        router.add_replica("a", a.url, ready=True)
        for _ in range(3):
            async with client.post("/invocations", data=b"x") as resp:
                assert resp.status == 200
    finally:
        await client.close()
    got = {
        (s.name, s.labels.get("code"), s.labels.get("le")): s.value
        for f in text_string_to_metric_families(metrics.render().decode())
        for s in f.samples
    }
    assert got[("warmstart_endpoint_request_seconds_count", "2xx", None)] == 3
    assert got[("warmstart_endpoint_request_seconds_count", "5xx", None)] == 1
    # the 503 waited out the 0.2 s queue timeout: not in the 0.1 s bucket, in the 0.25 s one
    assert got[("warmstart_endpoint_request_seconds_bucket", "5xx", "0.1")] == 0
    assert got[("warmstart_endpoint_request_seconds_bucket", "5xx", "0.25")] == 1
