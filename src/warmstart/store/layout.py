"""Where everything lives under a store root. Paths only: the one I/O here is ``create``.

::

    root/
      blobs/<algorithm>/<hex>      complete, verified blobs (never modified in place)
      ingest/<hex>.partial         the one write in progress of a digest (owner holds its lock)
      ingest/<hex>.pieces          ... or, for a blob written as pieces in any order, this
      ingest/put-<pid>-<rand>-<hex>.tmp   small atomic writes (put_bytes)
      locks/<hex>.lock             per-digest flock: held by whoever writes or deletes the blob
      sessions/<id>.lock           flock held for the lifetime of one open ContentStore
      index.db                     SQLite index (WAL)
      models/sha256/<hex>/         a materialised model (by manifest digest): raw layers hard-
                                   linked from blobs/, tar layers extracted; read-only
      models/tmp/<hex>.<session>.<rand>/   one being built (renamed into place when complete)
      models/by-ref/<name>         symlink to models/sha256/<hex>: a stable path per reference
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from warmstart.oci import Digest, InvalidDigest

PARTIAL_SUFFIX = ".partial"
PIECES_SUFFIX = ".pieces"
PUT_PREFIX = "put-"
TMP_SUFFIX = ".tmp"
LOCK_SUFFIX = ".lock"
_HEX_LENGTH_TO_ALGORITHM = {64: "sha256", 128: "sha512"}
_PUT_RE = re.compile(r"^put-(\d+)-[0-9a-f]+-([0-9a-f]+)\.tmp$")


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def blobs_root(self) -> Path:
        return self.root / "blobs"

    @property
    def ingest_dir(self) -> Path:
        return self.root / "ingest"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def sessions_dir(self) -> Path:
        return self.root / "sessions"

    @property
    def index_path(self) -> Path:
        return self.root / "index.db"

    @property
    def models_root(self) -> Path:
        return self.root / "models"

    @property
    def models_temp_dir(self) -> Path:
        return self.models_root / "tmp"

    @property
    def models_by_ref_dir(self) -> Path:
        return self.models_root / "by-ref"

    def model_dir(self, manifest_digest: Digest) -> Path:
        return self.models_root / manifest_digest.algorithm / manifest_digest.hex

    def model_temp_path(self, manifest_digest: Digest, session: str) -> Path:
        return self.models_temp_dir / f"{manifest_digest.hex}.{session}.{os.urandom(4).hex()}"

    def blobs_dir(self, algorithm: str) -> Path:
        return self.blobs_root / algorithm

    def blob_path(self, digest: Digest) -> Path:
        return self.blobs_root / digest.algorithm / digest.hex

    def partial_path(self, digest: Digest) -> Path:
        return self.ingest_dir / f"{digest.hex}{PARTIAL_SUFFIX}"

    def pieces_path(self, digest: Digest) -> Path:
        return self.ingest_dir / f"{digest.hex}{PIECES_SUFFIX}"

    def put_temp_path(self, digest: Digest) -> Path:
        return (
            self.ingest_dir
            / f"{PUT_PREFIX}{os.getpid()}-{os.urandom(4).hex()}-{digest.hex}{TMP_SUFFIX}"
        )

    def lock_path(self, digest: Digest) -> Path:
        return self.locks_dir / f"{digest.hex}{LOCK_SUFFIX}"

    def session_path(self, session: str) -> Path:
        return self.sessions_dir / f"{session}{LOCK_SUFFIX}"

    def create(self) -> None:
        for d in (
            self.blobs_dir("sha256"),
            self.ingest_dir,
            self.locks_dir,
            self.sessions_dir,
            self.models_root / "sha256",
            self.models_temp_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)

    def iter_blob_files(self) -> Iterator[tuple[Digest, Path]]:
        """Every file under ``blobs/`` whose name is a valid digest (others are ignored)."""
        if not self.blobs_root.is_dir():
            return
        for algo_dir in sorted(self.blobs_root.iterdir()):
            if not algo_dir.is_dir():
                continue
            for path in sorted(algo_dir.iterdir()):
                try:
                    digest = Digest.parse(f"{algo_dir.name}:{path.name}")
                except InvalidDigest:
                    continue
                yield digest, path


def dir_entries(directory: Path) -> list[os.DirEntry[str]]:
    """The entries of ``directory``; none when it does not exist (nothing left to sweep)."""
    try:
        return list(os.scandir(directory))
    except FileNotFoundError:
        return []


def digest_of_hex(hex_: str) -> Digest | None:
    """The digest a ``<hex>`` file name stands for (algorithm from its length), or None."""
    algorithm = _HEX_LENGTH_TO_ALGORITHM.get(len(hex_))
    if algorithm is None:
        return None
    try:
        return Digest.parse(f"{algorithm}:{hex_}")
    except InvalidDigest:
        return None


def parse_partial_name(name: str) -> Digest | None:
    """The digest of a ``<hex>.partial`` or ``<hex>.pieces`` name (a write in progress)."""
    for suffix in (PARTIAL_SUFFIX, PIECES_SUFFIX):
        if name.endswith(suffix):
            return digest_of_hex(name[: -len(suffix)])
    return None


def parse_put_name(name: str) -> int | None:
    """The writer PID of a ``put-<pid>-<rand>-<hex>.tmp`` name, or None."""
    m = _PUT_RE.match(name)
    return int(m.group(1)) if m else None


def parse_lock_name(name: str) -> Digest | None:
    if not name.endswith(LOCK_SUFFIX):
        return None
    return digest_of_hex(name[: -len(LOCK_SUFFIX)])
