"""Open-loop replay of a trace against an endpoint, plus a once-a-second status timeline.

Each request is sent at its scheduled time whether or not earlier ones have been answered (open
loop: a slow endpoint does not slow the offered load down), as ``POST {url}/invocations`` with
``{"input_tokens": N, "output_tokens": M}``. Nothing a request meets (timeouts, refused
connections, error answers) is raised: it ends up in that request's :class:`RequestRecord`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import math
import resource
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from warmstart_harness.bench.scaleout_types import EndpointLoad, RequestRecord, TimelinePoint
from warmstart_harness.bench.trace import TraceRequest

StatusFn = Callable[[], Awaitable[EndpointLoad]]
ERROR_BODY_CHARS = 200


@dataclass(frozen=True)
class LoadgenConfig:
    """How to replay.

    ``timeout_s`` bounds one attempt (connect, send, answer); ``max_retries`` is how often a 503
    that carries ``Retry-After`` is sent again, after that many seconds (at most
    ``max_retry_after_s``; 0 retries: a 503 is final). ``connection_limit`` 0 picks one that
    cannot be the bottleneck: one connection per request, within the open-files limit.
    """

    timeout_s: float = 300.0
    max_retries: int = 0
    max_retry_after_s: float = 30.0
    connection_limit: int = 0
    path: str = "/invocations"
    status_interval_s: float = 1.0
    status_timeout_s: float = 1.0

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, not {self.timeout_s}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {self.max_retries}")
        if self.status_interval_s <= 0 or self.status_timeout_s <= 0:
            raise ValueError("status_interval_s and status_timeout_s must be > 0")


@dataclass
class ReplayResult:
    """Records in trace order, the status timeline, and the wall-clock start of the replay."""

    records: list[RequestRecord]
    timeline: list[TimelinePoint] = field(default_factory=list)
    started_at: float = 0.0  # time.time() when scheduled_s = 0
    status_errors: int = 0  # status samples that failed or timed out (left out of timeline)


def default_connection_limit(requests: int) -> int:
    """One connection per request, but leave half the open-files limit to everything else."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = soft // 2 if soft != resource.RLIM_INFINITY else 1 << 16
    return max(1, min(requests, cap))


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: a (possibly fractional) number or an HTTP date; None if bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _error_text(status: int, body: bytes) -> str:
    """``HTTP 503 queue_full`` from a JSON ``{"error": ...}`` body, else the body's start."""
    detail = body[:ERROR_BODY_CHARS].decode("utf-8", "replace").strip()
    with contextlib.suppress(ValueError):
        data = json.loads(body)
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            detail = data["error"]
    return f"HTTP {status} {detail}".strip()


class _Replay:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        config: LoadgenConfig,
        t0: float,
    ) -> None:
        self.session = session
        self.url = url.rstrip("/") + config.path
        self.config = config
        self.t0 = t0
        self.timeout = aiohttp.ClientTimeout(total=config.timeout_s)

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def attempt(self, req: TraceRequest) -> tuple[int | None, str | None, float | None]:
        """One POST: (status, error, Retry-After seconds); error None only for a 200 answer."""
        body = {"input_tokens": req.input_tokens, "output_tokens": req.output_tokens}
        try:
            async with self.session.post(self.url, json=body, timeout=self.timeout) as resp:
                data = await resp.read()
                if resp.status == 200:
                    return 200, None, None
                wait = retry_after_seconds(resp.headers.get("Retry-After"))
                return resp.status, _error_text(resp.status, data), wait
        except TimeoutError:
            return None, f"timeout after {self.config.timeout_s:g} s", None
        except Exception as e:  # aiohttp.ClientError and the like: a record, never a crash
            return None, f"{type(e).__name__}: {e}", None

    async def run_one(self, index: int, req: TraceRequest) -> RequestRecord:
        await asyncio.sleep(max(0.0, req.offset_s - self.now()))
        sent = self.now()
        retries = 0
        while True:
            status, error, wait = await self.attempt(req)
            if (
                status != 503
                or wait is None
                or retries >= self.config.max_retries
                or wait > self.config.max_retry_after_s
            ):
                break
            retries += 1
            await asyncio.sleep(wait)
        return RequestRecord(
            index=index,
            scheduled_s=req.offset_s,
            sent_s=sent,
            done_s=self.now(),
            status=status,
            error=error,
            retries=retries,
            input_tokens=req.input_tokens,
            output_tokens=req.output_tokens,
        )


async def sample_status(
    status: StatusFn,
    t0: float,
    interval_s: float,
    timeout_s: float,
    timeline: list[TimelinePoint],
    stop: asyncio.Event,
) -> int:
    """Call ``status`` every ``interval_s`` from ``t0`` (monotonic) until ``stop`` is set.

    Points go to ``timeline`` stamped with the call's start; ticks stay on the ``t0`` grid
    (a slow call skips ticks rather than drifting). Returns how many calls failed or timed out.
    """
    failures = 0
    tick = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            s = await asyncio.wait_for(status(), timeout_s)
            timeline.append(
                TimelinePoint(
                    started - t0, s.ready, s.starting, s.queue_length, s.in_flight, s.stopping
                )
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
        tick = max(tick + 1, math.floor((time.monotonic() - t0) / interval_s) + 1)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, t0 + tick * interval_s - time.monotonic()))
    return failures


async def replay(
    url: str,
    requests: Sequence[TraceRequest],
    config: LoadgenConfig | None = None,
    status: StatusFn | None = None,
    *,
    tail_s: float = 0.0,
) -> ReplayResult:
    """Send every request at its ``offset_s`` after now; return when all have ended.

    ``status`` (if given) is sampled every ``config.status_interval_s`` from the start until
    ``tail_s`` after the last request ended (e.g. to watch the endpoint scale in).
    """
    config = config or LoadgenConfig()
    limit = config.connection_limit or default_connection_limit(len(requests))
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
    timeline: list[TimelinePoint] = []
    stop = asyncio.Event()
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.monotonic()
        started_at = time.time()
        sampler = (
            asyncio.create_task(
                sample_status(
                    status, t0, config.status_interval_s, config.status_timeout_s, timeline, stop
                )
            )
            if status is not None
            else None
        )
        run = _Replay(session, url, config, t0)
        tasks = [asyncio.create_task(run.run_one(i, r)) for i, r in enumerate(requests)]
        try:
            records = list(await asyncio.gather(*tasks))
            if sampler is not None and tail_s > 0:
                await asyncio.sleep(tail_s)
        except BaseException:
            for task in tasks:
                task.cancel()
            if sampler is not None:
                sampler.cancel()
            await asyncio.gather(*tasks, *([sampler] if sampler else []), return_exceptions=True)
            raise
        finally:
            stop.set()
        failures = await sampler if sampler is not None else 0
    return ReplayResult(records, timeline, started_at, failures)
