"""Small path operations inside a model directory under construction, each checked to stay
below its root (defence in depth: names are already clean, and no symlink is ever made)."""

from __future__ import annotations

import os
from pathlib import Path

from warmstart.oci.model import InvalidModel
from warmstart.store.model_dirs import remove_tree


def _inside(root: Path, path: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def ensure_parent(root: Path, dest: Path, where: str) -> None:
    """Create ``dest``'s parent directories; a file (or anything else) in the way is refused."""
    if not _inside(root, dest):
        raise InvalidModel(f"{where}: {dest} is outside the model directory")
    parent = dest.parent
    rel = parent.relative_to(root)
    current = root
    for part in rel.parts:
        current = current / part
        if current.is_symlink() or (current.exists() and not current.is_dir()):
            raise InvalidModel(
                f"{where}: {str(current.relative_to(root))!r} is a file, but another name is "
                "placed inside it"
            )
        if not current.exists():
            os.mkdir(current, 0o755)


def remove_path(root: Path, path: Path) -> None:
    """Delete a file or a directory tree below ``root`` (an overlay whiteout)."""
    if not _inside(root, path) or path == root:
        raise InvalidModel(f"{path} is outside the model directory")
    if path.is_dir() and not path.is_symlink():
        remove_tree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


__all__ = ["ensure_parent", "remove_path"]
