"""A blob whose writer died (SIGKILL) is resumed from its partial file: the bytes there are
hashed again and the source is asked only for the rest; a torn or stale partial costs a fetch
from byte 0, never a wrong blob."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.unit.store.helpers import MemorySource, MiB, blob
from warmstart.oci import Digest
from warmstart.store import ContentStore
from warmstart.store.recovery import PARTIAL_MAX_AGE

# A writer process: fetch DIGEST into the store at ROOT from a slow source, forever slow.
WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from warmstart.oci import Digest
    from warmstart.store import ContentStore

    root, data_path, digest_text = sys.argv[1:4]
    data = Path(data_path).read_bytes()

    def source(offset):
        async def stream():
            for i in range(offset, len(data), 256 * 1024):
                await asyncio.sleep(0.05)
                yield data[i : i + 256 * 1024]
        return stream()

    async def main():
        async with ContentStore(root) as store:
            await store.fetch(Digest.parse(digest_text), len(data), source)

    asyncio.run(main())
    """
)


def kill_writer_midway(root: Path, tmp_path: Path, data: bytes, digest: Digest, at: int) -> int:
    """Start a writer process, SIGKILL it once its partial holds ``at`` bytes; the bytes left."""
    data_path = tmp_path / "data"
    data_path.write_bytes(data)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), str(data_path), str(digest)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    partial = root / "ingest" / f"{digest.hex}.partial"
    try:
        deadline = time.monotonic() + 30
        while not (partial.exists() and partial.stat().st_size >= at):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the writer never got that far"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
    return partial.stat().st_size


async def test_a_sigkilled_writers_partial_is_resumed_with_a_range(
    root: Path, tmp_path: Path
) -> None:
    data, digest = blob(8 * MiB + 123)
    left = kill_writer_midway(root, tmp_path, data, digest, 3 * MiB)
    assert 3 * MiB <= left < len(data)
    source = MemorySource(data)
    async with ContentStore(root, poll_interval=0.005) as store:
        assert store.recovery.temp_files_removed == 0  # kept for the resume
        path = await store.fetch(digest, len(data), source)
        assert path.read_bytes() == data
        assert store.blob_size(digest) == len(data) and store.usage() == len(data)
        assert os.listdir(store.layout.ingest_dir) == []
    assert source.calls == [left]  # only the rest was asked for
    assert source.yielded == len(data) - left


async def test_a_torn_partial_costs_one_failed_resume_then_a_fetch_from_zero(
    root: Path, tmp_path: Path
) -> None:
    data, digest = blob(4 * MiB)
    left = kill_writer_midway(root, tmp_path, data, digest, MiB)
    partial = root / "ingest" / f"{digest.hex}.partial"
    torn = bytearray(partial.read_bytes())  # a torn page in what the dead writer left
    torn[left // 2] ^= 0xFF
    partial.write_bytes(bytes(torn))
    source = MemorySource(data)
    async with ContentStore(root, poll_interval=0.005) as store:
        path = await store.fetch(digest, len(data), source)
        assert path.read_bytes() == data
        assert os.listdir(store.layout.ingest_dir) == []
    assert source.calls == [left, 0]


@pytest.mark.parametrize("case", ["stale", "too_long", "complete_already"])
async def test_partials_not_worth_resuming_are_fetched_from_zero(root: Path, case: str) -> None:
    data, digest = blob(MiB)
    store = ContentStore(root, poll_interval=0.005, clock=time.time)
    store.close()
    partial = store.layout.partial_path(digest)
    partial.write_bytes(data[: MiB // 2] if case != "too_long" else data + b"extra")
    if case == "stale":
        old = time.time() - PARTIAL_MAX_AGE - 60
        os.utime(partial, (old, old))
    source = MemorySource(data)
    async with ContentStore(root, poll_interval=0.005, clock=time.time) as store:
        if case == "complete_already":  # the whole blob is there: the store re-hashes it only
            partial.write_bytes(data)
            await store.fetch(digest, len(data), source)
            assert source.calls in ([], [len(data)])
            return
        await store.fetch(digest, len(data), source)
        assert store.blob_path(digest).read_bytes() == data
    assert source.calls == [0]
