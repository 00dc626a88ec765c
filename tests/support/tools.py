"""Locating the real container tools the integration tests drive."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require_tool(name: str) -> str:
    """Return the absolute path of binary ``name``.

    A missing tool fails the test under ``CI=true`` (CI must have everything installed)
    and skips it elsewhere.
    """
    path = shutil.which(name)
    if path is None:
        message = f"required tool {name!r} is not installed (apt-get install it; see Makefile)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path
