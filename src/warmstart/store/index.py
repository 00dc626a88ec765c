"""The store's SQLite index: blobs present, images -> blobs, last use, pins, writes in flight.

One connection per open store, WAL mode and a busy timeout, so several processes can share it.
Every multi-statement change runs in one ``BEGIN IMMEDIATE`` transaction. The files under
``blobs/`` are the truth about which blobs exist; recovery reconciles this index with them.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warmstart.oci import Digest
from warmstart.store.errors import StoreError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    media_type TEXT,
    added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    reference TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL,
    platform TEXT,
    created REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS image_blobs (
    reference TEXT NOT NULL REFERENCES images(reference) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    media_type TEXT,
    PRIMARY KEY (reference, digest)
);
CREATE INDEX IF NOT EXISTS image_blobs_by_digest ON image_blobs(digest);
CREATE TABLE IF NOT EXISTS pins (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    holder TEXT NOT NULL,
    reference TEXT,
    session TEXT NOT NULL,
    pid INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pin_blobs (
    pin_id INTEGER NOT NULL REFERENCES pins(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    PRIMARY KEY (pin_id, digest)
);
CREATE INDEX IF NOT EXISTS pin_blobs_by_digest ON pin_blobs(digest);
CREATE TABLE IF NOT EXISTS model_refs (
    reference TEXT PRIMARY KEY REFERENCES images(reference) ON DELETE CASCADE,
    format TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS model_dirs (
    manifest_digest TEXT PRIMARY KEY,
    extracted_bytes INTEGER NOT NULL,
    files INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS model_links (
    manifest_digest TEXT NOT NULL REFERENCES model_dirs(manifest_digest) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    links INTEGER NOT NULL,
    PRIMARY KEY (manifest_digest, digest)
);
CREATE TABLE IF NOT EXISTS inflight (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    session TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started REAL NOT NULL
);
"""


@dataclass(frozen=True)
class BlobRow:
    digest: Digest
    size: int
    media_type: str | None
    added: float


@dataclass(frozen=True)
class ImageRow:
    reference: str
    manifest_digest: Digest
    platform: str | None
    created: float
    last_used: float


@dataclass(frozen=True)
class ImageBlob:
    digest: Digest
    size: int
    media_type: str | None


@dataclass(frozen=True)
class PinRow:
    id: int
    holder: str
    reference: str | None
    session: str
    pid: int
    digests: frozenset[Digest]


@dataclass(frozen=True)
class InflightRow:
    digest: Digest
    size: int
    session: str
    pid: int


@dataclass(frozen=True)
class ModelDirRow:
    manifest_digest: Digest
    extracted_bytes: int  # bytes of files extracted from tar layers (a second copy on disk)
    files: int
    created: float


class Index:
    def __init__(self, path: Path, *, busy_timeout: float = 30.0) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0
        self._conn = sqlite3.connect(
            str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            # Switching to WAL takes an exclusive lock and does not always wait for it (several
            # processes opening a new store at once): retry until the busy timeout.
            deadline = time.monotonic() + busy_timeout
            while True:
                try:
                    self._conn.execute("PRAGMA journal_mode = WAL")
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) and "busy" not in str(e):
                        raise
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
        except sqlite3.Error as e:
            self._conn.close()
            raise StoreError(f"cannot open the store index {path}: {e}") from None
        self._create_schema()

    def _create_schema(self) -> None:
        with self.transaction() as c:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            c.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None or int(row[0]) != SCHEMA_VERSION:
            raise StoreError(
                f"store index {self.path} has schema version {row and row[0]}, this warmstart "
                f"needs {SCHEMA_VERSION}: use a matching warmstart or a new store root"
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``); nested uses join the outer one."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                raise StoreError(
                    f"store index {self.path} is busy ({e}); another warmstart process holds it"
                ) from None
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._depth = 0
                self._conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """The rows of ``sql`` (sqlite's values: int, float, str, bytes or None)."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # -- blobs -------------------------------------------------------------------------

    def blob(self, digest: Digest) -> BlobRow | None:
        rows = self._query(
            "SELECT size, media_type, added FROM blobs WHERE digest = ?", (str(digest),)
        )
        if not rows:
            return None
        size, media_type, added = rows[0]
        return BlobRow(digest, int(size), media_type, float(added))

    def blob_sizes(self) -> dict[Digest, int]:
        return {
            Digest.parse(str(d)): int(s) for d, s in self._query("SELECT digest, size FROM blobs")
        }

    def add_blob(self, digest: Digest, size: int, media_type: str | None, now: float) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO blobs(digest, size, media_type, added) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(digest) DO UPDATE SET size = excluded.size, "
                "media_type = COALESCE(excluded.media_type, blobs.media_type)",
                (str(digest), size, media_type, now),
            )

    def remove_blobs(self, digests: Iterable[Digest]) -> None:
        with self.transaction() as c:
            c.executemany("DELETE FROM blobs WHERE digest = ?", [(str(d),) for d in digests])

    def usage(self) -> int:
        return int(self._query("SELECT COALESCE(SUM(size), 0) FROM blobs")[0][0])

    # -- images ------------------------------------------------------------------------

    def put_image(
        self,
        reference: str,
        manifest_digest: Digest,
        platform: str | None,
        blobs: Sequence[ImageBlob],
        now: float,
    ) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO images(reference, manifest_digest, platform, created, last_used) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(reference) DO UPDATE SET "
                "manifest_digest = excluded.manifest_digest, platform = excluded.platform, "
                "last_used = excluded.last_used",
                (reference, str(manifest_digest), platform, now, now),
            )
            c.execute("DELETE FROM image_blobs WHERE reference = ?", (reference,))
            c.executemany(
                "INSERT OR REPLACE INTO image_blobs(reference, digest, size, media_type) "
                "VALUES (?, ?, ?, ?)",
                [(reference, str(b.digest), b.size, b.media_type) for b in blobs],
            )

    def images(self) -> list[ImageRow]:
        return [
            ImageRow(str(r), Digest.parse(str(m)), p, float(c), float(u))
            for r, m, p, c, u in self._query(
                "SELECT reference, manifest_digest, platform, created, last_used FROM images "
                "ORDER BY reference"
            )
        ]

    def image_blobs(self) -> dict[str, list[ImageBlob]]:
        out: dict[str, list[ImageBlob]] = {}
        for r, d, s, m in self._query(
            "SELECT reference, digest, size, media_type FROM image_blobs ORDER BY reference, digest"
        ):
            out.setdefault(str(r), []).append(ImageBlob(Digest.parse(str(d)), int(s), m))
        return out

    def set_model_format(self, reference: str, model_format: str | None) -> None:
        with self.transaction() as c:
            if model_format is None:
                c.execute("DELETE FROM model_refs WHERE reference = ?", (reference,))
            else:
                c.execute(
                    "INSERT OR REPLACE INTO model_refs(reference, format) VALUES (?, ?)",
                    (reference, model_format),
                )

    def model_formats(self) -> dict[str, str]:
        """Image records that are models -> their format (modelpack, artifact, modelcar)."""
        return {str(r): str(f) for r, f in self._query("SELECT reference, format FROM model_refs")}

    # -- materialised models -----------------------------------------------------------

    def add_model_dir(
        self,
        manifest_digest: Digest,
        links: dict[Digest, int],
        extracted_bytes: int,
        files: int,
        now: float,
    ) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO model_dirs(manifest_digest, extracted_bytes, files, "
                "created) VALUES (?, ?, ?, ?)",
                (str(manifest_digest), extracted_bytes, files, now),
            )
            c.execute("DELETE FROM model_links WHERE manifest_digest = ?", (str(manifest_digest),))
            c.executemany(
                "INSERT INTO model_links(manifest_digest, digest, links) VALUES (?, ?, ?)",
                [(str(manifest_digest), str(d), n) for d, n in links.items()],
            )

    def model_dirs(self) -> list[ModelDirRow]:
        return [
            ModelDirRow(Digest.parse(str(m)), int(e), int(f), float(c))
            for m, e, f, c in self._query(
                "SELECT manifest_digest, extracted_bytes, files, created FROM model_dirs"
            )
        ]

    def remove_model_dirs(self, manifest_digests: Iterable[Digest]) -> None:
        with self.transaction() as c:
            c.executemany(
                "DELETE FROM model_dirs WHERE manifest_digest = ?",
                [(str(d),) for d in manifest_digests],
            )

    def model_links(self) -> dict[Digest, int]:
        """Blob -> hard links to it from materialised models (one copy on disk, counted once)."""
        return {
            Digest.parse(str(d)): int(n)
            for d, n in self._query("SELECT digest, SUM(links) FROM model_links GROUP BY digest")
        }

    def extracted_usage(self) -> int:
        return int(self._query("SELECT COALESCE(SUM(extracted_bytes), 0) FROM model_dirs")[0][0])

    def touch(self, reference: str, now: float) -> bool:
        with self.transaction() as c:
            cur = c.execute("UPDATE images SET last_used = ? WHERE reference = ?", (now, reference))
            return cur.rowcount > 0

    def remove_images(self, references: Iterable[str]) -> int:
        with self.transaction() as c:
            removed = 0
            for ref in references:
                removed += c.execute("DELETE FROM images WHERE reference = ?", (ref,)).rowcount
            return removed

    # -- pins --------------------------------------------------------------------------

    def add_pin(
        self,
        holder: str,
        reference: str | None,
        digests: Iterable[Digest],
        session: str,
        pid: int,
        now: float,
    ) -> int:
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO pins(holder, reference, session, pid, created) VALUES (?, ?, ?, ?, ?)",
                (holder, reference, session, pid, now),
            )
            pin_id = int(cur.lastrowid or 0)
            c.executemany(
                "INSERT OR IGNORE INTO pin_blobs(pin_id, digest) VALUES (?, ?)",
                [(pin_id, str(d)) for d in digests],
            )
            return pin_id

    def remove_pin(self, pin_id: int) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM pins WHERE id = ?", (pin_id,))

    def pins(self) -> list[PinRow]:
        digests: dict[int, set[Digest]] = {}
        for pin_id, d in self._query("SELECT pin_id, digest FROM pin_blobs"):
            digests.setdefault(int(pin_id), set()).add(Digest.parse(str(d)))
        return [
            PinRow(int(i), str(h), r, str(s), int(p), frozenset(digests.get(int(i), ())))
            for i, h, r, s, p in self._query(
                "SELECT id, holder, reference, session, pid FROM pins ORDER BY id"
            )
        ]

    # -- writes in flight ----------------------------------------------------------------

    def add_inflight(self, digest: Digest, size: int, session: str, pid: int, now: float) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO inflight(digest, size, session, pid, started) "
                "VALUES (?, ?, ?, ?, ?)",
                (str(digest), size, session, pid, now),
            )

    def remove_inflight(self, digest: Digest, session: str) -> None:
        with self.transaction() as c:
            c.execute(
                "DELETE FROM inflight WHERE digest = ? AND session = ?", (str(digest), session)
            )

    def inflight(self) -> list[InflightRow]:
        return [
            InflightRow(Digest.parse(str(d)), int(s), str(sess), int(p))
            for d, s, sess, p in self._query("SELECT digest, size, session, pid FROM inflight")
        ]

    # -- sessions ------------------------------------------------------------------------

    def sessions(self) -> set[str]:
        rows = self._query("SELECT session FROM pins UNION SELECT session FROM inflight")
        return {str(r[0]) for r in rows}

    def drop_sessions(self, sessions: Iterable[str]) -> int:
        """Delete pins and in-flight rows of dead sessions; returns the number of pins dropped."""
        dropped = 0
        with self.transaction() as c:
            for s in sessions:
                dropped += c.execute("DELETE FROM pins WHERE session = ?", (s,)).rowcount
                c.execute("DELETE FROM inflight WHERE session = ?", (s,))
        return dropped
