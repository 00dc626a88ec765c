"""Scanning a model directory: files, subdirectories, hidden entries, links, special files."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from warmstart.model_dir import ModelDirError, scan_model_dir


def write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_files_in_subdirectories_sorted_by_path(tmp_path: Path) -> None:
    root = tmp_path / "m"
    write(root / "config.json", b"{}")
    write(root / "tokenizer" / "vocab.txt", b"a\nb\n")
    write(root / "a" / "b" / "c.bin", b"123456")
    (root / "empty" / "deeper").mkdir(parents=True)
    model = scan_model_dir(root)
    assert [(f.path, f.size) for f in model.files] == [
        ("a/b/c.bin", 6),
        ("config.json", 2),
        ("tokenizer/vocab.txt", 4),
    ]
    assert model.files[0].source == root / "a" / "b" / "c.bin"
    assert model.total_size == 12
    assert model.hidden == []
    assert model.name == "m"


def test_hidden_entries_are_left_out_and_reported(tmp_path: Path) -> None:
    root = tmp_path / "m"
    write(root / "model.safetensors")
    write(root / ".gitattributes")
    write(root / ".git" / "objects" / "pack")
    write(root / "sub" / ".cache")
    model = scan_model_dir(root)
    assert [f.path for f in model.files] == ["model.safetensors"]
    assert sorted(model.hidden) == [".git", ".gitattributes", "sub/.cache"]


def test_links_inside_are_followed_under_their_own_path(tmp_path: Path) -> None:
    root = tmp_path / "m"
    target = write(root / "blobs" / "abc", b"weights")
    (root / "model.bin").symlink_to("blobs/abc")
    (root / "again").symlink_to("blobs", target_is_directory=True)
    model = scan_model_dir(root)
    assert [(f.path, f.source) for f in model.files] == [
        ("again/abc", target),
        ("blobs/abc", target),
        ("model.bin", target),
    ]


def test_links_to_files_outside_are_read_as_files(tmp_path: Path) -> None:
    """The Hugging Face cache layout: snapshots/<rev>/<file> -> ../../blobs/<hash>."""
    blobs = tmp_path / "models--org--m" / "blobs"
    write(blobs / "abc123")
    snap = tmp_path / "models--org--m" / "snapshots" / "rev1"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").symlink_to("../../blobs/abc123")
    model = scan_model_dir(snap)
    assert [(f.path, f.source) for f in model.files] == [
        ("model.safetensors", (blobs / "abc123").resolve())
    ]


def test_a_linked_root_is_fine(tmp_path: Path) -> None:
    write(tmp_path / "real" / "w.bin")
    (tmp_path / "link").symlink_to("real", target_is_directory=True)
    model = scan_model_dir(tmp_path / "link")
    assert [f.path for f in model.files] == ["w.bin"]
    assert model.name == "real"


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda root, out: (root / "d").symlink_to(out.parent, True), "outside"),
        (lambda root, out: (root / "w.bin").symlink_to(root / "missing"), "dangling"),
        (lambda root, out: (root / "sub" / "up").symlink_to(root, True), "loop"),
        (lambda root, out: os.mkfifo(root / "pipe"), "a FIFO"),
    ],
    ids=["dir-outside", "dangling", "loop", "fifo"],
)
def test_bad_entries_are_refused(
    tmp_path: Path, make: Callable[[Path, Path], object], needle: str
) -> None:
    root = tmp_path / "m"
    write(root / "config.json")
    (root / "sub").mkdir()
    outside = write(tmp_path / "elsewhere" / "secret.bin")
    make(root, outside)
    with pytest.raises(ModelDirError) as err:
        scan_model_dir(root)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_a_socket_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "m"
    write(root / "config.json")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "s"))
        with pytest.raises(ModelDirError, match="a socket"):
            scan_model_dir(root)
    finally:
        sock.close()


def test_a_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    with open(os.path.join(os.fsencode(root), b"w\xff.bin"), "wb") as f:
        f.write(b"x")
    with pytest.raises(ModelDirError, match="not valid UTF-8"):
        scan_model_dir(root)


def test_missing_empty_and_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="does not exist"):
        scan_model_dir(tmp_path / "nope")
    write(tmp_path / "file")
    with pytest.raises(ModelDirError, match="not a directory"):
        scan_model_dir(tmp_path / "file")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ModelDirError, match="no files"):
        scan_model_dir(tmp_path / "empty")
    write(tmp_path / "hidden-only" / ".git" / "HEAD")
    with pytest.raises(ModelDirError, match=r"no files to push \(left out: .git\)"):
        scan_model_dir(tmp_path / "hidden-only")


def test_an_unreadable_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "m"
    write(root / "locked" / "w.bin")
    real_scandir = os.scandir

    def scandir(path: os.PathLike[str]) -> object:
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(ModelDirError, match=r"cannot read .*locked: Permission denied"):
        scan_model_dir(root)
