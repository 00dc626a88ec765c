"""In-memory blob sources for store tests: they count calls and can misbehave on purpose."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from warmstart.oci import Digest

MiB = 1 << 20


class SourceFailed(Exception):
    pass


def blob(size: int, seed: int = 0) -> tuple[bytes, Digest]:
    data = os.urandom(size) if seed == 0 else bytes((i * seed) % 251 for i in range(size))
    return data, Digest.of(data)


@dataclass
class MemorySource:
    """Yields ``data`` from the requested offset in ``chunk``-sized pieces."""

    data: bytes
    chunk: int = MiB
    delay: float = 0.0  # seconds to sleep before each chunk
    fail_at: list[int] = field(default_factory=list)  # per call: raise after this many bytes
    extra: bytes = b""  # appended after data (a source that sends too much)
    truncate: int | None = None  # stop (cleanly) at this absolute offset, first call only
    gate: asyncio.Event | None = None  # wait for it after the first chunk
    calls: list[int] = field(default_factory=list)  # offsets asked for
    yielded: int = 0

    def __call__(self, offset: int) -> AsyncIterator[bytes]:
        call = len(self.calls)
        self.calls.append(offset)
        return self._stream(offset, call)

    async def _stream(self, offset: int, call: int) -> AsyncIterator[bytes]:
        body = self.data + self.extra
        end = len(body)
        if call == 0 and self.truncate is not None:
            end = self.truncate
        fail = self.fail_at[call] if call < len(self.fail_at) else None
        sent = 0
        pos = offset
        while pos < end:
            if self.delay:
                await asyncio.sleep(self.delay)
            else:
                await asyncio.sleep(0)
            piece = body[pos : min(pos + self.chunk, end)]
            if fail is not None and sent + len(piece) > fail:
                piece = piece[: fail - sent]
                if piece:
                    self.yielded += len(piece)
                    yield piece
                raise SourceFailed(f"connection reset after {offset + fail} bytes")
            pos += len(piece)
            sent += len(piece)
            self.yielded += len(piece)
            yield piece
            if self.gate is not None:
                await self.gate.wait()


def corrupt(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])


async def wait_for_file(path: Path, at_least: int = 0, within: float = 10.0) -> None:
    """Until ``path`` exists and holds ``at_least`` bytes (polled: it may be another process's)."""
    for _ in range(int(within / 0.001)):
        try:
            if os.stat(path).st_size >= at_least:
                return
        except FileNotFoundError:
            pass
        await asyncio.sleep(0.001)
    raise AssertionError(f"{path} did not reach {at_least} bytes in {within} s")


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 1]))
