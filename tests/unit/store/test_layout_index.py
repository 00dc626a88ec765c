from __future__ import annotations

import threading
from pathlib import Path

import pytest

from warmstart.oci import Digest
from warmstart.store.errors import format_bytes
from warmstart.store.index import ImageBlob, Index
from warmstart.store.layout import (
    Layout,
    parse_lock_name,
    parse_partial_name,
    parse_put_name,
)

D = Digest.of(b"x")


def test_paths(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert layout.blob_path(D) == tmp_path / "blobs" / "sha256" / D.hex
    assert layout.lock_path(D) == tmp_path / "locks" / f"{D.hex}.lock"
    assert parse_partial_name(layout.partial_path(D).name) == D
    assert parse_lock_name(layout.lock_path(D).name) == D
    put = layout.put_temp_path(D)
    assert put.parent == layout.ingest_dir
    assert parse_put_name(put.name) is not None
    assert parse_partial_name("junk.partial") is None
    assert parse_put_name("put-x.tmp") is None


def test_iter_blob_files_skips_junk(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.create()
    layout.blob_path(D).write_bytes(b"x")
    (layout.blobs_dir("sha256") / "not-a-digest").write_bytes(b"")
    assert [d for d, _ in layout.iter_blob_files()] == [D]


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 << 30, "3.0 GiB")]
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


def test_index_round_trip(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db")
    try:
        index.add_blob(D, 5, None, 1.0)
        index.add_blob(D, 5, "t", 2.0)
        index.add_blob(D, 5, None, 3.0)
        assert index.blob(D).media_type == "t"  # type: ignore[union-attr]
        assert index.usage() == 5
        index.put_image("a", D, "linux/amd64", [ImageBlob(D, 5, "t")], 1.0)
        assert index.image_blobs() == {"a": [ImageBlob(D, 5, "t")]}
        assert index.touch("a", 2.0) and not index.touch("b", 2.0)
        assert index.images()[0].last_used == 2.0
        pin = index.add_pin("h", "a", [D], "s1", 1, 0.0)
        assert [p.digests for p in index.pins()] == [frozenset({D})]
        assert index.sessions() == {"s1"}
        index.remove_pin(pin)
        assert index.pins() == []
        assert index.remove_images(["a"]) == 1
        assert index.image_blobs() == {}  # cascade
        index.remove_blobs([D])
        assert index.usage() == 0
    finally:
        index.close()


def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db")
    try:
        with pytest.raises(RuntimeError), index.transaction():
            index.add_blob(D, 5, None, 1.0)
            raise RuntimeError
        assert index.usage() == 0
    finally:
        index.close()


def test_two_connections_and_threads(tmp_path: Path) -> None:
    a = Index(tmp_path / "index.db")
    b = Index(tmp_path / "index.db")
    try:

        def work(index: Index, start: int) -> None:
            for i in range(start, start + 50):
                index.add_blob(Digest.of(str(i).encode()), 1, None, 0.0)

        threads = [threading.Thread(target=work, args=(x, n)) for x, n in ((a, 0), (b, 1000))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert a.usage() == b.usage() == 100
    finally:
        a.close()
        b.close()
