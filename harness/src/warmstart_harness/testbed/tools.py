"""Finding the external tools the testbed drives: the image builder's (one place)."""

from __future__ import annotations

from warmstart.image.tools import ToolMissing, find_tool

__all__ = ["ToolMissing", "find_tool"]
