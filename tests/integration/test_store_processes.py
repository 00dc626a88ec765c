"""The content store shared by separate OS processes: one source call for one digest across
processes, takeover when the writer is SIGKILLed, and a clean store after any crash."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from warmstart.oci import Digest
from warmstart.store import ContentStore

MiB = 1 << 20

# A child process: open the store at ROOT and fetch DIGEST from a slow in-memory source that
# appends "<pid> <offset>" to COUNTER each time it is called.
CHILD = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from pathlib import Path
    from warmstart.oci import Digest
    from warmstart.store import ContentStore

    root, data_path, digest_text, counter, delay, start_at = sys.argv[1:7]
    data = Path(data_path).read_bytes()
    digest = Digest.parse(digest_text)
    chunk = 256 * 1024

    def source(offset):
        fd = os.open(counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, f"{os.getpid()} {offset}\\n".encode())
        os.close(fd)

        async def stream():
            for i in range(offset, len(data), chunk):
                await asyncio.sleep(float(delay))
                yield data[i : i + chunk]

        return stream()

    async def main():
        while time.time() < float(start_at):
            await asyncio.sleep(0.001)
        async with ContentStore(root, poll_interval=0.005) as store:
            print("fetching", flush=True)
            path = await store.fetch(digest, len(data), source)
            assert path.read_bytes() == data
        print("done", flush=True)

    asyncio.run(main())
    """
)


def spawn(
    root: Path, data_path: Path, digest: Digest, counter: Path, delay: float, start_at: float
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            str(root),
            str(data_path),
            str(digest),
            str(counter),
            str(delay),
            str(start_at),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def source_calls(counter: Path) -> list[tuple[int, int]]:
    if not counter.exists():
        return []
    return [
        (int(pid), int(offset))
        for pid, offset in (line.split() for line in counter.read_text().splitlines())
    ]


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.005)


def assert_clean(root: Path, digest: Digest | None, data: bytes | None) -> None:
    """Reopen the store: nothing left over, every file matches its digest, index == disk."""
    store = ContentStore(root)
    try:
        assert os.listdir(store.layout.ingest_dir) == []
        assert os.listdir(store.layout.locks_dir) == []
        assert [p.name for p in store.layout.sessions_dir.iterdir()] == [
            f"{store._session.id}.lock"
        ]
        assert store._index.inflight() == []
        assert store._index.pins() == []
        report = store.verify()
        assert report.corrupt == ()
        on_disk = {d: p.stat().st_size for d, p in store.layout.iter_blob_files()}
        assert store._index.blob_sizes() == on_disk
        if digest is not None:
            assert store.has(digest)
            assert store.blob_path(digest).read_bytes() == data
    finally:
        store.close()


@pytest.fixture
def blob_file(tmp_path: Path) -> tuple[Path, bytes, Digest]:
    data = os.urandom(8 * MiB + 123)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    return path, data, Digest.of(data)


def test_four_processes_one_source_call(
    tmp_path: Path, blob_file: tuple[Path, bytes, Digest]
) -> None:
    data_path, data, digest = blob_file
    root = tmp_path / "store"
    counter = tmp_path / "calls"
    start_at = time.time() + 1.5  # every child has imported and waits for the same instant
    children = [spawn(root, data_path, digest, counter, 0.005, start_at) for _ in range(4)]
    outputs = [c.communicate(timeout=60) for c in children]
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
        assert out.split() == ["fetching", "done"]
    calls = source_calls(counter)
    assert len(calls) == 1, calls
    assert calls[0][1] == 0
    assert_clean(root, digest, data)


def test_waiter_takes_over_from_a_killed_writer(
    tmp_path: Path, blob_file: tuple[Path, bytes, Digest]
) -> None:
    data_path, data, digest = blob_file
    root = tmp_path / "store"
    counter = tmp_path / "calls"
    partial = root / "ingest" / f"{digest.hex}.partial"
    writer = spawn(root, data_path, digest, counter, 0.02, 0)  # ~0.7 s to write it all
    wait_until(lambda: partial.exists() and partial.stat().st_size >= MiB)
    waiter = spawn(root, data_path, digest, counter, 0.0, 0)
    assert waiter.stdout is not None
    assert waiter.stdout.readline().strip() == "fetching"
    time.sleep(0.1)  # the waiter follows the writer's temp file
    assert len(source_calls(counter)) == 1
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=10)
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert out.strip() == "done"
    calls = source_calls(counter)
    assert [pid for pid, _ in calls] == [writer.pid, waiter.pid]
    assert_clean(root, digest, data)


@pytest.mark.parametrize(
    ("kill_at_bytes", "then_sleep"),
    [(None, 0.0), (1, 0.0), (MiB, 0.0), (6 * MiB, 0.0), (8 * MiB, 0.0), (None, 1.0)],
    ids=["starting", "first-bytes", "1MiB", "6MiB", "all-written", "after-the-end"],
)
def test_store_restarts_clean_after_a_writer_is_killed(
    tmp_path: Path,
    blob_file: tuple[Path, bytes, Digest],
    kill_at_bytes: int | None,
    then_sleep: float,
) -> None:
    """Kill the writer at various points (start-up, mid-write, around the rename, after it
    finished); a fresh store then recovers and a new fetch completes."""
    data_path, data, digest = blob_file
    root = tmp_path / "store"
    counter = tmp_path / "calls"
    partial = root / "ingest" / f"{digest.hex}.partial"
    writer = spawn(root, data_path, digest, counter, 0.015, 0)  # ~0.5 s to write it all
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "fetching"
    if kill_at_bytes is not None:
        wait_until(lambda: partial.exists() and partial.stat().st_size >= kill_at_bytes)
    time.sleep(then_sleep)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=10)

    offsets: list[int] = []

    async def source(offset: int) -> AsyncIterator[bytes]:
        offsets.append(offset)
        for i in range(offset, len(data), MiB):
            yield data[i : i + MiB]

    kept = 0

    async def fetch_again() -> Path:
        nonlocal kept
        async with ContentStore(root, poll_interval=0.005) as store:
            # the dead writer's partial is kept, and only it, to resume from
            left = os.listdir(store.layout.ingest_dir)
            assert left in ([], [partial.name])
            kept = partial.stat().st_size if left else 0
            assert store._index.inflight() == []
            return await store.fetch(digest, len(data), source)

    path = asyncio.run(fetch_again())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest.hex
    assert_clean(root, digest, data)
    if offsets:  # the blob was not complete yet: resumed where the writer died, or from 0
        assert offsets[0] in (0, kept)
