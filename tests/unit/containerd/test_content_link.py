from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from warmstart.containerd.content_link import (
    ContentDirError,
    ContentLinker,
    LinkMode,
    LinkOutcome,
    LinkRefused,
    check_link_setup,
)
from warmstart.oci import Digest


def blob(tmp_path: Path, data: bytes) -> tuple[Digest, Path]:
    digest = Digest.of(data)
    path = tmp_path / "store" / digest.hex
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest, path


def content(tmp_path: Path) -> Path:
    d = tmp_path / "ctd" / "io.containerd.content.v1.content"
    (d / "ingest").mkdir(parents=True)
    return d


def test_hardlink_shares_the_inode_and_a_second_link_is_present(tmp_path: Path) -> None:
    digest, src = blob(tmp_path, b"layer bytes" * 100)
    linker = ContentLinker(content(tmp_path))
    assert linker.link(digest, src, src.stat().st_size) is LinkOutcome.LINKED
    target = linker.target(digest)
    assert target == linker.content_dir / "blobs" / "sha256" / digest.hex
    assert os.stat(target).st_ino == os.stat(src).st_ino
    assert linker.link(digest, src, src.stat().st_size) is LinkOutcome.PRESENT
    os.unlink(target)  # containerd's GC removes its name: the store's stays
    assert src.read_bytes() == b"layer bytes" * 100


def test_wrong_size_or_missing_source_is_refused(tmp_path: Path) -> None:
    digest, src = blob(tmp_path, b"abc")
    linker = ContentLinker(content(tmp_path))
    with pytest.raises(LinkRefused):
        linker.link(digest, src, 4)
    with pytest.raises(LinkRefused):
        linker.link(digest, tmp_path / "nope", 3)
    assert not linker.target(digest).exists()


def test_copy_mode_falls_back_to_a_verified_copy_on_exdev(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest, src = blob(tmp_path, b"x" * 3_000_000)
    linker = ContentLinker(content(tmp_path), LinkMode.COPY)

    def no_link(a: object, b: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    assert linker.link(digest, src, src.stat().st_size) is LinkOutcome.COPIED
    assert linker.target(digest).read_bytes() == src.read_bytes()
    assert os.stat(linker.target(digest)).st_ino != os.stat(src).st_ino
    assert [p.name for p in linker.target(digest).parent.iterdir()] == [digest.hex]  # no temp


def test_a_copy_that_does_not_hash_right_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest, src = blob(tmp_path, b"good")
    src.write_bytes(b"evil")  # same size, other bytes
    linker = ContentLinker(content(tmp_path), LinkMode.COPY)
    monkeypatch.setattr(os, "link", lambda a, b: (_ for _ in ()).throw(OSError(errno.EXDEV, "x")))
    with pytest.raises(LinkRefused):
        linker.link(digest, src, 4)
    assert list(linker.target(digest).parent.iterdir()) == []


def test_hardlink_mode_raises_exdev_instead_of_copying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest, src = blob(tmp_path, b"data")
    linker = ContentLinker(content(tmp_path), LinkMode.HARDLINK)
    monkeypatch.setattr(os, "link", lambda a, b: (_ for _ in ()).throw(OSError(errno.EXDEV, "x")))
    with pytest.raises(OSError):
        linker.link(digest, src, 4)


def test_setup_on_one_filesystem_links(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    setup = check_link_setup(content(tmp_path), store, LinkMode.HARDLINK)
    assert setup.enabled and setup.mode is LinkMode.HARDLINK and setup.message is None
    assert [p.name for p in store.iterdir()] == []  # the probe cleaned up after itself


def test_setup_refuses_a_directory_that_is_not_containerds(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ContentDirError, match="not containerd's content store"):
        check_link_setup(tmp_path / "elsewhere", tmp_path / "store", LinkMode.HARDLINK)


def test_setup_off_says_so(tmp_path: Path) -> None:
    setup = check_link_setup(tmp_path, tmp_path, LinkMode.OFF)
    assert not setup.enabled and setup.message


def test_setup_across_filesystems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    store.mkdir()
    ctd = content(tmp_path)
    monkeypatch.setattr(os, "link", lambda a, b: (_ for _ in ()).throw(OSError(errno.EXDEV, "x")))
    off = check_link_setup(ctd, store, LinkMode.HARDLINK)
    assert not off.enabled and "another filesystem" in (off.message or "")
    assert 'containerd_link = "copy"' in (off.message or "")
    copy = check_link_setup(ctd, store, LinkMode.COPY)
    assert copy.enabled and copy.mode is LinkMode.COPY


def test_content_dir_seen_through_a_pod_mount():
    from warmstart.agent.link_setup import mounted_under_prefix

    reported = Path("/var/lib/containerd/io.containerd.content.v1.content")
    assert mounted_under_prefix(
        Path("/host/var/lib/containerd/io.containerd.content.v1.content"), reported
    )
    assert not mounted_under_prefix(Path("/srv/ctd/io.containerd.content.v1.content"), reported)
    assert not mounted_under_prefix(
        Path("/host/var/lib/other/io.containerd.content.v1.content"), reported
    )
