"""The geometry of a blob cut into pieces: pure (the store and the fetcher share it)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Pieces:
    """The pieces of a blob of ``size`` bytes cut every ``piece_size`` bytes."""

    size: int
    piece_size: int

    def __post_init__(self) -> None:
        if self.size < 0 or self.piece_size < 1:
            raise ValueError(f"bad pieces: size {self.size}, piece size {self.piece_size}")

    @property
    def count(self) -> int:
        return -(-self.size // self.piece_size)

    def span(self, index: int) -> tuple[int, int]:
        """(first byte, one past the last byte) of piece ``index``."""
        if not 0 <= index < self.count:
            raise IndexError(f"piece {index} of {self.count}")
        start = index * self.piece_size
        return start, min(self.size, start + self.piece_size)

    def length(self, index: int) -> int:
        start, end = self.span(index)
        return end - start

    def index_of(self, start: int, end: int) -> int | None:
        """The piece whose span is exactly ``start..end`` (a piece request), else None."""
        if start < 0 or start % self.piece_size or start >= self.size:
            return None
        index = start // self.piece_size
        return index if self.span(index)[1] == end else None

    def prefix(self, have: Iterable[int]) -> int:
        """Bytes from 0 covered by consecutive pieces of ``have``."""
        held = set(have)
        index = 0
        while index < self.count and index in held:
            index += 1
        return self.size if index >= self.count else index * self.piece_size


__all__ = ["Pieces"]
