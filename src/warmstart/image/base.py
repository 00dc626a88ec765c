"""The base layer: a minimal Debian with python3 from debootstrap, cached between builds."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from warmstart.image.tools import find_tool, run

# Removed after debootstrap: apt's caches and lists, and documentation nobody reads in a server.
PRUNE = (
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/cache/debconf/templates.dat-old",
    "var/log",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "debootstrap",
)
_KEEP_EMPTY = ("var/cache/apt", "var/lib/apt/lists", "var/log")


def prune_rootfs(rootfs: Path) -> None:
    """Delete :data:`PRUNE` below ``rootfs`` (directories apt expects come back empty)."""
    for rel in PRUNE:
        path = rootfs / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    for rel in _KEEP_EMPTY:
        (rootfs / rel).mkdir(parents=True, exist_ok=True)
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)


def base_rootfs(
    cache: Path,
    mirror: str,
    *,
    suite: str = "bookworm",
    log: Callable[[str], None] = print,
) -> Path:
    """The cached rootfs of ``debootstrap --variant=minbase --include=python3 SUITE``.

    Built once into a temp dir next to the cache entry, pruned, then renamed into place, so an
    interrupted build never leaves a half rootfs that a later build would trust.
    """
    final = cache / f"rootfs-{suite}-minbase-python3"
    if (final / "usr/bin/python3").exists():
        log(f"base: cached rootfs {final}")
        return final
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".rootfs-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"base: debootstrap --variant=minbase --include=python3 {suite} (mirror {mirror}) ...")
    start = time.monotonic()
    try:
        run(
            [
                find_tool("debootstrap"),
                "--variant=minbase",
                "--include=python3",
                suite,
                tmp,
                mirror,
            ],
            what="debootstrap",
        )
        prune_rootfs(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"base: debootstrap done in {time.monotonic() - start:.1f} s")
    return final
