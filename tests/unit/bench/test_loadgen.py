"""The open-loop load generator against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from warmstart_harness.bench.loadgen import LoadgenConfig, replay, retry_after_seconds
from warmstart_harness.bench.scaleout_types import EndpointLoad
from warmstart_harness.bench.trace import TraceRequest

DELAY = 0.4  # the server's service time
OK, REJECT_ONCE, REJECT_ALWAYS, FAIL, HANG, REJECT_NO_HEADER = range(6)


@dataclass
class Server:
    """Answers after DELAY; ``output_tokens`` picks the behaviour, ``input_tokens`` is an id."""

    url: str = ""
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, id)
    attempts: dict[int, int] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        rid, kind = body["input_tokens"], body["output_tokens"]
        self.arrivals.append((time.monotonic(), rid))
        self.attempts[rid] = self.attempts.get(rid, 0) + 1
        if (kind == REJECT_ONCE and self.attempts[rid] == 1) or kind == REJECT_ALWAYS:
            return web.json_response(
                {"error": "queue_full", "message": "busy"},
                status=503,
                headers={"Retry-After": "0.05"},
            )
        if kind == REJECT_NO_HEADER:
            return web.json_response({"error": "no_replica"}, status=503)
        if kind == FAIL:
            return web.Response(status=500, text="boom")
        await asyncio.sleep(10 if kind == HANG else DELAY)
        return web.json_response({"served": rid})


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()
    app = web.Application()
    app.router.add_post("/invocations", state.handle)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    state.url = str(test_server.make_url("")).rstrip("/")
    try:
        yield state
    finally:
        await test_server.close()


def trace(*specs: tuple[float, int]) -> list[TraceRequest]:
    """``(offset, kind)`` -> requests whose input_tokens is their index."""
    return [TraceRequest(offset, i, kind) for i, (offset, kind) in enumerate(specs)]


async def test_open_loop_sends_on_schedule_while_earlier_requests_run(server: Server):
    requests = trace(*((i * 0.02, OK) for i in range(6)))
    result = await replay(server.url, requests)
    recs = result.records
    assert [r.index for r in recs] == list(range(6))
    assert all(r.ok and r.status == 200 and r.error is None for r in recs)
    # each one left at its time, not after the previous answer
    assert all(r.sent_s is not None and r.sent_s >= r.scheduled_s - 1e-3 for r in recs)
    assert recs[-1].sent_s < recs[0].done_s  # the last was sent while the first was running
    assert all(r.done_s - r.sent_s >= DELAY - 0.01 for r in recs)
    # the server saw them in schedule order, all within less than one service time
    assert [rid for _, rid in server.arrivals] == list(range(6))
    first, last = server.arrivals[0][0], server.arrivals[-1][0]
    assert last - first < DELAY
    assert (recs[2].input_tokens, recs[2].output_tokens) == (2, OK)


async def test_503_retries_and_failures_become_records(server: Server):
    requests = trace(
        (0.0, REJECT_ONCE), (0.0, REJECT_ALWAYS), (0.0, FAIL), (0.0, HANG), (0.0, REJECT_NO_HEADER)
    )
    config = LoadgenConfig(timeout_s=0.3 + DELAY, max_retries=2)
    recs = (await replay(server.url, requests, config)).records
    once, always, fail, hang, no_header = recs
    assert (once.status, once.error, once.retries, once.ok) == (200, None, 1, True)
    assert once.latency_s is not None and once.latency_s >= 0.05 + DELAY - 0.01
    assert (always.status, always.error, always.retries) == (503, "HTTP 503 queue_full", 2)
    assert server.attempts[1] == 3
    assert (fail.status, fail.error, fail.retries) == (500, "HTTP 500 boom", 0)
    assert hang.status is None and hang.error is not None and hang.error.startswith("timeout")
    assert hang.done_s is not None and hang.done_s < 5
    assert (no_header.status, no_header.retries) == (503, 0)  # no Retry-After: no retry
    assert server.attempts[4] == 1


async def test_without_retries_a_503_is_final(server: Server):
    recs = (await replay(server.url, trace((0.0, REJECT_ONCE)))).records
    assert (recs[0].status, recs[0].retries, recs[0].ok) == (503, 0, False)
    assert server.attempts[0] == 1


async def test_unreachable_endpoint_is_recorded_not_raised():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    recs = (await replay(f"http://127.0.0.1:{port}", trace((0, OK), (0.01, OK)))).records
    assert [r.status for r in recs] == [None, None]
    assert all(r.error and "Connect" in r.error for r in recs)
    assert all(r.done_s is not None for r in recs)


async def test_status_is_sampled_into_a_timeline(server: Server):
    calls = 0

    async def status() -> EndpointLoad:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("status endpoint down")
        if calls == 3:
            await asyncio.sleep(1)  # longer than the sample timeout
        return EndpointLoad(ready=calls, starting=1, queue_length=2, in_flight=3, stopping=4)

    config = LoadgenConfig(status_interval_s=0.05, status_timeout_s=0.04)
    result = await replay(server.url, trace((0, OK), (0.1, OK)), config, status, tail_s=0.1)
    assert result.status_errors == 2
    times = [p.t_s for p in result.timeline]
    assert times == sorted(times) and times[0] < 0.05
    assert times[-1] > 0.1 + DELAY  # kept sampling through the tail
    assert len(result.timeline) >= 6
    assert [p.ready for p in result.timeline][:2] == [1, 4]  # calls 2 and 3 left out
    first = result.timeline[0]
    assert (first.starting, first.queue_length, first.in_flight, first.stopping) == (1, 2, 3, 4)
    assert result.started_at == pytest.approx(time.time(), abs=30)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("2", 2.0),
        (" 0.5 ", 0.5),
        ("-3", 0.0),
        ("soon", None),
        ("inf", None),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
    ],
)
def test_retry_after_seconds(header, expected):
    now = 1445412480.0  # 2015-10-21 07:28:00 UTC
    assert retry_after_seconds(header, now=now) == expected


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        LoadgenConfig(timeout_s=0)
    with pytest.raises(ValueError):
        LoadgenConfig(max_retries=-1)
