"""One copy of the bytes per node: place the agent's verified blobs in containerd's content store.

containerd 1.6 with its default content sharing policy (``shared``) takes a file at
``<content dir>/blobs/sha256/<hex>`` that no namespace records yet as present when a pull opens
its writer: the pull commits it without a transfer (``metadata/content.go`` ``Writer``/``commit``,
``remotes/handlers.go`` ``fetch``). A hard link of the agent's file puts it there at the cost of
a directory entry: both names share one inode, so containerd's GC removing its name never
touches the agent's, and the agent evicting its name leaves containerd's.

containerd does not re-hash such a file, so only verified files may be linked: the caller passes
the store's final file (renamed into place after its digest matched) and its expected size; the
size is checked again here. Where the two directories are on different filesystems a hard link
is impossible (``EXDEV``): linking is off unless the user asks for copies (``copy``), which are
hashed while written and renamed into place only if the digest matches.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from warmstart.oci import Digest

COPY_CHUNK = 1 << 20


class LinkMode(StrEnum):
    HARDLINK = "hardlink"  # hard links only; off when the filesystems differ
    COPY = "copy"  # hard links, and copies where a link is impossible
    OFF = "off"


class LinkOutcome(StrEnum):
    LINKED = "linked"  # a new hard link
    COPIED = "copied"
    PRESENT = "present"  # containerd's store already had it


class ContentDirError(ValueError):
    """The configured directory is not containerd's content store; the message is one line."""


class LinkRefused(RuntimeError):
    """The source file cannot be linked (gone, not a regular file, wrong size, bad copy)."""


@dataclass(frozen=True)
class LinkSetup:
    """What linking does on this node, and a line to log about it (None: nothing to say)."""

    content_dir: Path | None
    mode: LinkMode
    message: str | None = None

    @property
    def enabled(self) -> bool:
        return self.content_dir is not None and self.mode is not LinkMode.OFF


def looks_like_content_dir(path: Path) -> bool:
    """containerd's content plugin creates ``ingest/`` at start and ``blobs/`` on first commit."""
    return path.is_dir() and ((path / "ingest").is_dir() or (path / "blobs").is_dir())


def probe_hardlink(source_dir: Path, content_dir: Path) -> OSError | None:
    """Try one hard link from ``source_dir`` into ``content_dir``; None if it worked.

    A link can fail on one filesystem too (two bind mounts of it, as in a container), so
    comparing ``st_dev`` is not enough: this is the real test."""
    name = f".warmstart-link-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    src = source_dir / name
    dst = content_dir / name
    try:
        fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.close(fd)
        os.link(src, dst)
    except OSError as e:
        return e
    finally:
        for p in (dst, src):
            with contextlib.suppress(OSError):
                os.unlink(p)
    return None


def check_link_setup(content_dir: Path, store_dir: Path, wanted: LinkMode) -> LinkSetup:
    """Decide how to link, by looking at the directories (raise :class:`ContentDirError`)."""
    if wanted is LinkMode.OFF:
        return LinkSetup(None, LinkMode.OFF, "containerd_link is off: blobs are not linked")
    if not looks_like_content_dir(content_dir):
        raise ContentDirError(
            f"{content_dir} is not containerd's content store (no ingest/ or blobs/ in it): set "
            "containerd_root to the 'root' of containerd's config.toml, or containerd_link = "
            '"off"'
        )
    failed = probe_hardlink(store_dir, content_dir)
    if failed is None:
        return LinkSetup(content_dir, LinkMode.HARDLINK)
    reason = failed.strerror or str(failed)
    if failed.errno == errno.EXDEV and wanted is LinkMode.COPY:
        return LinkSetup(
            content_dir,
            LinkMode.COPY,
            f"{content_dir} is on another filesystem than the store {store_dir}: blobs are "
            'copied into containerd (containerd_link = "copy")',
        )
    if failed.errno == errno.EXDEV:
        return LinkSetup(
            None,
            LinkMode.OFF,
            f"{content_dir} is on another filesystem than the store {store_dir} ({reason}): "
            "blobs are not linked and containerd ingests them through the mirror; put the store "
            'on containerd\'s filesystem, or set containerd_link = "copy"',
        )
    raise ContentDirError(f"cannot link into {content_dir}: {reason}")


class ContentLinker:
    """Places verified blob files in one containerd content directory (blocking file I/O)."""

    def __init__(self, content_dir: Path, mode: LinkMode = LinkMode.HARDLINK) -> None:
        if mode is LinkMode.OFF:
            raise ValueError("a ContentLinker links: use no linker for containerd_link = off")
        self.content_dir = content_dir
        self.mode = mode

    def target(self, digest: Digest) -> Path:
        return self.content_dir / "blobs" / digest.algorithm / digest.hex

    def present(self, digest: Digest, size: int) -> bool:
        try:
            return self.target(digest).stat().st_size == size
        except FileNotFoundError:
            return False

    def link(self, digest: Digest, source: Path, size: int) -> LinkOutcome:
        """Make ``digest`` present in containerd's store from the verified file ``source``."""
        target = self.target(digest)
        if self.present(digest, size):
            return LinkOutcome.PRESENT
        try:
            st = os.stat(source)
        except FileNotFoundError:
            raise LinkRefused(f"{source} is gone (evicted)") from None
        if not stat.S_ISREG(st.st_mode):
            raise LinkRefused(f"{source} is not a regular file")
        if st.st_size != size:
            raise LinkRefused(f"{source} has {st.st_size} bytes, {digest} has {size}")
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        try:
            os.link(source, target)
            return LinkOutcome.LINKED
        except FileExistsError:
            return LinkOutcome.PRESENT  # containerd (or another link) was first
        except FileNotFoundError:
            raise LinkRefused(f"{source} is gone (evicted)") from None
        except OSError as e:
            if e.errno != errno.EXDEV or self.mode is not LinkMode.COPY:
                raise
        return self._copy(digest, source, size, target)

    def _copy(self, digest: Digest, source: Path, size: int, target: Path) -> LinkOutcome:
        """Copy, hashing as it goes; rename into place only if the digest matches."""
        tmp = target.parent / f".warmstart-{digest.hex[:16]}-{uuid.uuid4().hex[:8]}.tmp"
        hasher = digest.hasher()
        buf = bytearray(COPY_CHUNK)
        view = memoryview(buf)
        copied = 0
        try:
            with open(source, "rb", buffering=0) as src, open(tmp, "xb", buffering=0) as dst:
                while n := src.readinto(buf):
                    hasher.update(view[:n])
                    dst.write(view[:n])
                    copied += n
                os.fsync(dst.fileno())
            if copied != size or hasher.hexdigest() != digest.hex:
                raise LinkRefused(f"{source} does not hash to {digest}: not copied")
            os.rename(tmp, target)
        except FileNotFoundError as e:
            if not os.path.exists(source):
                raise LinkRefused(f"{source} is gone (evicted)") from None
            raise e
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return LinkOutcome.COPIED
