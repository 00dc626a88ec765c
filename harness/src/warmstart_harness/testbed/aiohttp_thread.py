"""Run an aiohttp server in a background thread with its own event loop.

Tests (sync or async) talk to it over 127.0.0.1 like to any other server; the server never
shares the test's event loop, so a blocking test client cannot deadlock it.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Self, TypeVar

from aiohttp import web

from warmstart_harness.testbed.net import LOOPBACK

T = TypeVar("T")


class ThreadedAiohttpServer:
    """Owns a thread, an event loop, and one aiohttp site bound to 127.0.0.1:<free port>."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, name: str = "aiohttp") -> None:
        self._ssl_context = ssl_context
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port: int = 0

    # -- to override -------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        raise NotImplementedError

    async def on_loop_started(self) -> None:
        """Hook run in the server loop before the site starts (e.g. create client sessions)."""

    async def on_loop_stopping(self) -> None:
        """Hook run in the server loop after the site stopped (e.g. close client sessions)."""

    def site(self, runner: web.AppRunner) -> web.BaseSite:
        """Where the app listens: by default 127.0.0.1 on a free port."""
        return web.TCPSite(runner, LOOPBACK, 0, ssl_context=self._ssl_context)

    # -- properties --------------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return "https" if self._ssl_context is not None else "http"

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Self:
        """Serve on a thread of its own; returns once the site listens (or raises)."""
        if self._thread is not None:
            raise RuntimeError(f"{self._name} already started")
        loop = asyncio.new_event_loop()
        ready: Future[None] = Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as exc:  # report start-up failures to the starting thread
                ready.set_exception(exc)
                loop.close()
                return
            ready.set_result(None)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"{self._name}-server", daemon=True)
        self._thread.start()
        try:
            ready.result(timeout=10)
        except BaseException:
            self._thread.join(timeout=5)
            self._thread = None
            raise
        return self

    async def _start_site(self) -> None:
        await self.on_loop_started()
        runner = web.AppRunner(
            self.build_app(), access_log=None, handler_cancellation=True, shutdown_timeout=1
        )
        await runner.setup()
        await self.site(runner).start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.on_loop_stopping()

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if thread.is_alive() and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 30) -> T:
        """Run a coroutine function in the server loop from another thread and wait for it."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(_invoke(fn), self._loop).result(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _invoke(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()
