"""A client's stream of a blob while a transfer writes it into the store.

The stream follows the store's file as it grows, holds back the blob's last byte until the
whole blob is verified, and ends with an error as soon as the attempt it follows turns out
corrupt (the bytes it sent were wrong: the client asks again and gets the good copy).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from warmstart.fetch.interfaces import UnavailableError
from warmstart.fetch.run import Transfer
from warmstart.fetch.source import aclose_quietly
from warmstart.store import ContentStore, StoreError


async def follow_transfer(
    store: ContentStore, t: Transfer, start: int
) -> AsyncGenerator[bytes, None]:
    """The blob from ``start`` while the transfer writes it; raises as soon as the attempt
    it follows turns out corrupt (its bytes so far were wrong: the client must retry)."""
    while True:
        generation, abandoned = t.generation, t.abandoned
        await t.attempt_open.wait()
        if t.finished.is_set() and t.error is not None and not store.has(t.digest):
            raise t.error
        if generation == t.generation:
            break
    corrupt = UnavailableError(
        f"blob {t.digest}: a source sent corrupt data; ask again for a good copy"
    )
    size = t.size
    pos = start
    held = b""  # the blob's last byte, sent only once the whole blob is verified
    reader = store.open_reader(t.digest, start).__aiter__()
    stop = asyncio.ensure_future(abandoned.wait())
    try:
        while True:
            # Race each read against the attempt being abandoned: a reader waiting for bytes
            # of the next attempt must not wait (it could never use them).
            step = asyncio.ensure_future(reader.__anext__())
            await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)
                raise corrupt
            try:
                chunk = step.result()
            except StopAsyncIteration:
                # The reader stops only at the verified, renamed file: safe to finish.
                if held:
                    yield held
                return
            if t.generation != generation:
                raise corrupt
            pos += len(chunk)
            if size is not None and pos >= size and chunk:
                # Until the digest is checked, a client must not get a complete body:
                # if the check fails, the connection is cut one byte short.
                chunk, held = chunk[:-1], held + chunk[-1:]
            if chunk:
                yield chunk
    except StoreError as e:
        if t.error is not None:
            raise t.error from e
        raise UnavailableError(f"blob {t.digest}: the transfer failed: {e}") from e
    finally:
        stop.cancel()
        await aclose_quietly(reader)


__all__ = ["follow_transfer"]
