"""Finding the external tools the testbed drives (docker-registry, skopeo, umoci, containerd)."""

from __future__ import annotations

import shutil


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
