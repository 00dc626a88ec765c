"""Finding and running the external tools of a build (debootstrap, pip, umoci, skopeo) with
readable failures."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path


class BuildError(RuntimeError):
    pass


class ToolMissing(RuntimeError):
    pass


def find_tool(name: str) -> str:
    """The path of ``name`` on PATH, or :class:`ToolMissing` saying how to install it."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(
            f"{name} is not installed; run `make deps` (it installs the Debian packages)"
        )
    return path


def run(argv: Sequence[str | Path], *, what: str, cwd: Path | None = None) -> str:
    """Run ``argv``; return its stdout; raise :class:`BuildError` with the stderr tail."""
    proc = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, cwd=cwd, check=False
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip())[-1500:]
        raise BuildError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout
