"""The operator's calls to the node agents: ``/status``, pre-warms of images and models in the
background with per-node backoff, unpins (I/O through
:class:`warmstart.agent.client.AgentClient`).

A pre-warm runs as a task of its own, so a reconcile never waits for a multi-gigabyte pull: it
starts what is due and reports what is in flight as ``pending``. A failed pre-warm of an image
on a node is tried again after :mod:`warmstart.operator.retry`'s backoff (10 s, doubling to
5 min); its error is the node's ``lastError`` meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp

from warmstart.agent.api import PrewarmRequest
from warmstart.agent.client import AgentClient, AgentError
from warmstart.operator.plan import NodeImages, images_by_ref
from warmstart.operator.retry import Key, PrewarmFailures

log = logging.getLogger(__name__)

STATUS_TIMEOUT = 10.0
PREWARM_TIMEOUT = 3600.0


class AgentExecutor:
    def __init__(
        self,
        *,
        peer_token: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_done: Callable[[], Any] | None = None,
    ) -> None:
        self.peer_token = peer_token
        self.failures = PrewarmFailures()
        self.prewarms = 0  # started, for tests and logs
        self._clock = clock
        self._on_done = on_done
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        # (node, model) materialised through this operator's own pre-warm: the agent has (re)made
        # its models/by-ref/<reference> link, which /status does not show.
        self.linked: set[Key] = set()

    def _client(self, url: str) -> AgentClient:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return AgentClient(url, token=self.peer_token, session=self._session, timeout=None)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- status ---------------------------------------------------------------------------------

    async def statuses(
        self, agents: Mapping[str, str]
    ) -> tuple[dict[str, NodeImages], dict[str, str]]:
        """Each node agent's images, and for the agents that did not answer, why."""

        async def one(node: str, url: str) -> tuple[str, NodeImages | None, str | None]:
            try:
                status = await self._client(url).status(time_limit=STATUS_TIMEOUT)
            except AgentError as e:
                return node, None, f"agent {url}: {e}"
            return node, images_by_ref(status), None

        results = await asyncio.gather(*(one(n, u) for n, u in sorted(agents.items())))
        held = {n: images for n, images, _ in results if images is not None}
        errors = {n: err for n, _, err in results if err is not None}
        return held, errors

    # -- pre-warm -------------------------------------------------------------------------------

    def in_flight(self, node: str) -> bool:
        return any(k[0] == node and not t.done() for k, t in self._tasks.items())

    def start(
        self,
        agents: Mapping[str, str],
        todo: Mapping[str, Iterable[str]],
        *,
        hot: bool,
        pin: bool,
        authorization: Mapping[str, str | None] | None = None,
        model: bool = False,
    ) -> int:
        """Start the pre-warms that are due (not in flight, not backing off); how many.
        ``model``: the references are models (with ``hot``: materialised)."""
        started = 0
        now = self._clock()
        for node, refs in sorted(todo.items()):
            url = agents.get(node)
            if url is None:
                continue
            for ref in refs:
                key = (node, ref)
                task = self._tasks.get(key)
                if (task is not None and not task.done()) or not self.failures.due(key, now):
                    continue
                auth = (authorization or {}).get(ref)
                request = PrewarmRequest.of(ref, hot=hot, pin=pin, model=model)
                self._tasks[key] = asyncio.create_task(
                    self._prewarm(key, url, request, auth), name=f"prewarm {ref} on {node}"
                )
                started += 1
        self.prewarms += started
        return started

    async def _prewarm(
        self, key: Key, url: str, request: PrewarmRequest, authorization: str | None
    ) -> None:
        node, ref = key
        try:
            answer = await self._client(url).prewarm(
                request, authorization=authorization, time_limit=PREWARM_TIMEOUT
            )
        except AgentError as e:
            self.failures.failed(key, self._clock(), str(e))
            log.warning("pre-warm of %s on node %s failed: %s", ref, node, e)
        else:
            self.failures.succeeded(key)
            if answer.model is not None:
                self.linked.add(key)
            log.info(
                "pre-warmed %s on node %s (%s, %d bytes, %.1fs)",
                ref, node, "hot" if answer.hot else "warm", answer.bytes, answer.seconds,
            )  # fmt: skip
        if self._on_done is not None:
            self._on_done()

    # -- unpin ----------------------------------------------------------------------------------

    async def unpin(self, agents: Mapping[str, str], refs: Iterable[str]) -> list[str]:
        """Release the pins of ``refs`` on every agent; the errors (one line each)."""
        wanted = sorted(set(refs))

        async def one(node: str, url: str, ref: str) -> str | None:
            try:
                await self._client(url).unpin(ref, time_limit=STATUS_TIMEOUT)
            except AgentError as e:
                return f"unpin {ref} on node {node}: {e}"
            return None

        results = await asyncio.gather(
            *(one(n, u, r) for n, u in sorted(agents.items()) for r in wanted)
        )
        return [r for r in results if r]
