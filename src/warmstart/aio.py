"""Small asyncio helpers: groups of tasks, a body read to its end with a cap."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol


class ByteStream(Protocol):
    """What :func:`read_to_end` reads (``aiohttp.StreamReader``)."""

    async def read(self, n: int = -1) -> bytes: ...


async def cancel_all(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one of them has ended (their errors dropped)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_all(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Wait for all of ``tasks``; when one fails (or this is cancelled), cancel the others and
    wait for them to end before the error goes on."""
    tasks = list(tasks)
    try:
        await asyncio.gather(*tasks)
    finally:
        await cancel_all(tasks)


async def read_to_end(stream: ByteStream, limit: int) -> bytes | None:
    """Every byte of ``stream`` up to its end, or None once it has more than ``limit``.

    ``StreamReader.read(n)`` returns what has arrived, up to ``n`` bytes — a body longer than
    one segment comes back cut short; this reads until the end."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await stream.read(min(1 << 16, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            return None


__all__ = ["ByteStream", "cancel_all", "read_to_end", "run_all"]
