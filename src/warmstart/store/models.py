"""The store's public data types: the source seam, progress callback and reports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from warmstart.oci import Digest
from warmstart.store.errors import format_bytes

BlobSource = Callable[[int], AsyncIterator[bytes]]
"""Given a start offset, yields the blob's bytes from that offset (chunks must not be mutated)."""

ProgressFn = Callable[[int], None]
"""Called with the number of new bytes (a delta); per fetch call the deltas never exceed the size."""


@dataclass(frozen=True)
class ImageRecord:
    reference: str
    manifest_digest: Digest
    size: int  # sum of the sizes of the image's unique blobs (as recorded)
    last_used: float  # seconds since the epoch
    pinned: bool
    complete: bool  # every recorded blob is in the store
    platform: str | None = None
    model_format: str | None = None  # a model artifact: modelpack, artifact or modelcar
    materialised: bool = False  # a model whose read-only directory is built (its hot tier)


@dataclass(frozen=True)
class GCReport:
    blobs_removed: int = 0
    bytes_freed: int = 0
    temp_files_removed: int = 0
    stale_pins_removed: int = 0
    removed: tuple[Digest, ...] = field(default=(), repr=False)

    def __str__(self) -> str:
        return (
            f"removed {self.blobs_removed} unreferenced blobs ({format_bytes(self.bytes_freed)}), "
            f"{self.temp_files_removed} temporary files, {self.stale_pins_removed} stale pins"
        )


@dataclass(frozen=True)
class VerifyReport:
    checked: int = 0
    bytes_checked: int = 0
    corrupt: tuple[Digest, ...] = ()  # found, removed from the store
    missing: tuple[tuple[str, Digest], ...] = ()  # (image reference, blob) not in the store
    # Corrupt blobs whose file had other hard links: containerd's content store (the agent
    # links blobs there) still holds the same corrupt file under its own name.
    linked: tuple[Digest, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.missing

    def __str__(self) -> str:
        text = f"checked {self.checked} blobs ({format_bytes(self.bytes_checked)})"
        if self.ok:
            return f"{text}: all good"
        parts = []
        if self.corrupt:
            shown = ", ".join(str(d) for d in self.corrupt[:3])
            more = f" and {len(self.corrupt) - 3} more" if len(self.corrupt) > 3 else ""
            parts.append(f"{len(self.corrupt)} corrupt and removed ({shown}{more})")
        if self.linked:
            shown = ", ".join(str(d) for d in self.linked[:3])
            more = f" and {len(self.linked) - 3} more" if len(self.linked) > 3 else ""
            parts.append(
                f"{len(self.linked)} of them also hard-linked into another store, which still "
                f"holds the same corrupt file ({shown}{more}): in containerd, remove it with "
                "`ctr -n NAMESPACE content rm DIGEST` and pull the image again"
            )
        if self.missing:
            refs = sorted({ref for ref, _ in self.missing})
            parts.append(
                f"{len(self.missing)} blobs missing for {len(refs)} images ({', '.join(refs[:3])}"
                f"{' ...' if len(refs) > 3 else ''}): pull them again"
            )
        return f"{text}: " + "; ".join(parts)


@dataclass(frozen=True)
class RecoveryReport:
    temp_files_removed: int = 0
    rows_dropped: int = 0  # index rows of blobs missing on disk
    rows_added: int = 0  # blob files found on disk but not in the index
    bad_files_removed: int = 0  # blob files whose size contradicts the index
    stale_pins_removed: int = 0
