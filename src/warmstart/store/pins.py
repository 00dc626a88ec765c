"""Pins: while held, the named blobs (and image) are never evicted or garbage-collected."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from warmstart.oci import Digest


@dataclass(eq=False)
class Pin:
    """A pin recorded in the store's index; released by ``release()`` or on leaving a
    ``with``/``async with`` block. Pins of a process that dies are dropped by the next store that
    opens (or collects garbage in) the same root."""

    id: int
    holder: str
    digests: frozenset[Digest]
    reference: str | None
    _release: Callable[[int], None] = field(repr=False)
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._release(self.id)

    def __enter__(self) -> Pin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> Pin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
