"""Ingest throughput of ``ContentStore.fetch`` from an in-memory source.

``python -m warmstart.store.bench [--size-mib 1024] [--runs 3] [--dir PATH]`` prints the
single-core hash rate (the ceiling: one digest is one sequential hash chain) and the end-to-end
fetch rate (hash + write + fsync + rename), both in MB/s (10^6 bytes per second).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from warmstart.oci import Digest
from warmstart.store.blobs import CHUNK
from warmstart.store.store import ContentStore

_DISTINCT_CHUNKS = 64


def _chunks(size: int) -> list[bytes]:
    pool = [os.urandom(CHUNK) for _ in range(_DISTINCT_CHUNKS)]
    n, rest = divmod(size, CHUNK)
    out = [pool[i % _DISTINCT_CHUNKS] for i in range(n)]
    if rest:
        out.append(pool[0][:rest])
    return out


def hash_rate(chunks: Sequence[bytes], algorithm: str = "sha256") -> tuple[float, str]:
    """(MB/s, hex digest) of hashing the chunks on one core."""
    h = hashlib.new(algorithm)
    start = time.perf_counter()
    for c in chunks:
        h.update(c)
    elapsed = time.perf_counter() - start
    return sum(map(len, chunks)) / elapsed / 1e6, h.hexdigest()


async def fetch_rate(root: Path, chunks: Sequence[bytes], digest: Digest) -> float:
    size = sum(map(len, chunks))

    async def source(offset: int) -> AsyncIterator[bytes]:
        assert offset % CHUNK == 0
        for c in chunks[offset // CHUNK :]:
            yield c

    shutil.rmtree(root, ignore_errors=True)
    try:
        async with ContentStore(root) as store:
            start = time.perf_counter()
            await store.fetch(digest, size, source)
            elapsed = time.perf_counter() - start
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return size / elapsed / 1e6


async def _run(size: int, runs: int, parent: Path) -> None:
    chunks = _chunks(size)
    _, hex_ = hash_rate(chunks)
    digest = Digest.parse(f"sha256:{hex_}")
    with tempfile.TemporaryDirectory(dir=parent, prefix="warmstart-bench-") as tmp:
        for _ in range(runs):
            hashed, _ = hash_rate(chunks)
            fetched = await fetch_rate(Path(tmp) / "store", chunks, digest)
            print(
                f"fetch {size / (1 << 20):.0f} MiB: {fetched:.0f} MB/s "
                f"(sha256 alone on one core: {hashed:.0f} MB/s; {fetched / hashed:.0%} of it)"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m warmstart.store.bench")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where the store is made")
    args = parser.parse_args(argv)
    asyncio.run(_run(args.size_mib << 20, args.runs, args.dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
