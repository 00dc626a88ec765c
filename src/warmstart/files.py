"""Reading small files (configuration, specs) with a size cap."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def read_capped(path: Path, limit: int, what: str, error: Callable[[str], Exception]) -> bytes:
    """The bytes of the file ``what`` names (e.g. ``"config file /etc/x.toml"``), at most
    ``limit`` of them; ``error(message)`` is raised when it is missing, unreadable or larger."""
    try:
        with path.open("rb") as f:
            raw = f.read(limit + 1)
    except FileNotFoundError:
        raise error(f"{what} does not exist") from None
    except OSError as e:
        raise error(f"cannot read {what}: {e.strerror or e}") from None
    if len(raw) > limit:
        raise error(f"{what} is larger than {limit} bytes")
    return raw


__all__ = ["read_capped"]
