"""warmstart: node-local image and model caches that make inference endpoints scale out fast."""

from __future__ import annotations

__version__ = "0.1.0"
