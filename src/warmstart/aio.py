"""Small asyncio helpers for groups of tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


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


__all__ = ["cancel_all", "run_all"]
