"""Blob uploads, the write side of the Distribution API, as one state machine per blob.

An upload session starts with ``POST /v2/<name>/blobs/uploads/`` (the registry answers 202 and
the session's ``Location``, relative or absolute), takes the blob in chunks with ``PATCH
<location>`` (``Content-Range: start-end``; each answer carries the next ``Location`` and
``Range: 0-<last byte held>``) and ends with ``PUT <location>&digest=<digest>``. The chunked
form is what makes an upload resumable: when a PATCH breaks, ``GET <location>`` says how many
bytes the registry holds (``Range``) and the upload goes on from there. A session the registry
no longer knows (404 ``BLOB_UPLOAD_UNKNOWN``/``BLOB_UPLOAD_INVALID``) is started afresh.
distribution 2.8 (Debian's docker-registry) does that after every broken PATCH: it answers
``BLOB_UPLOAD_INVALID`` once the bytes it wrote no longer match the offset signed into the
session's ``_state``. So there a break costs the blob's bytes sent so far, elsewhere at most one
chunk.

Bodies are streamed from a :data:`BlobReader` (a file, read once per attempt: never whole in
memory). The digest must be known before the upload: it names the blob in the final PUT, and
the caller asks with a HEAD whether the registry has it already. Failures count against the
client's :class:`~.retry.RequestRetries` (backoff between attempts, starting over after progress).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Protocol

from yarl import URL

from warmstart.oci.digest import Digest
from warmstart.registry import answers
from warmstart.registry.errors import DigestMismatch, ProtocolError
from warmstart.registry.retry import RequestRetries, Retry
from warmstart.registry.sending import BodyFactory, discard, join_url
from warmstart.registry.transport import Response

DEFAULT_PUSH_CHUNK = 64 << 20
FILE_PIECE = 1 << 20
OCTET_STREAM = "application/octet-stream"
# Error codes with which a registry says it no longer knows an upload session.
LOST_UPLOAD_CODES = frozenset({"BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"})
_UPLOAD_RANGE_RE = re.compile(r"^(?:bytes=)?(\d{1,19})-(\d{1,19})$")

# ``reader(offset, length)``: the blob's bytes from ``offset``, ``length`` of them, in pieces.
BlobReader = Callable[[int, int], AsyncIterator[bytes]]


def push_scope(repository: str) -> tuple[str, ...]:
    """The token scope a push needs: HEAD and GET need pull, uploads and manifests push."""
    return (f"repository:{repository}:pull,push",)


def file_reader(path: Path, piece: int = FILE_PIECE) -> BlobReader:
    """A :data:`BlobReader` over a file: opened for each read, read ``piece`` bytes at a time in
    a thread. A file shorter than asked raises :class:`ProtocolError` (it changed)."""

    async def read(offset: int, length: int) -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(open, path, "rb")
        try:  # closed without awaiting: this may run when the stream is dropped half-read
            f.seek(offset)
            left = length
            while left > 0:
                data = await asyncio.to_thread(f.read, min(piece, left))
                if not data:
                    raise ProtocolError(
                        f"{path} ended at byte {offset + length - left} while it was pushed; "
                        "did it change?"
                    )
                left -= len(data)
                yield data
        finally:
            f.close()

    return read


def bytes_reader(data: bytes) -> BlobReader:
    """A :data:`BlobReader` over bytes in memory (small blobs: a config)."""

    async def read(offset: int, length: int) -> AsyncIterator[bytes]:
        if length:
            yield data[offset : offset + length]

    return read


def parse_upload_range(value: str | None) -> int | None:
    """How many bytes an upload session holds, from its ``Range: 0-<last>`` header.

    None when the header is missing, malformed or ambiguous: distribution answers ``0-0`` both
    for an empty session and for one holding one byte.
    """
    if value is None:
        return None
    m = _UPLOAD_RANGE_RE.match(value.strip())
    if not m or m.group(1) != "0":
        return None
    end = int(m.group(2))
    return None if end == 0 else end + 1


def with_digest(location: URL, digest: Digest) -> URL:
    """The session URL with ``digest=`` added to the query it has (``_state`` kept verbatim)."""
    text = str(location)
    sep = "&" if location.raw_query_string else "?"
    return URL(f"{text}{sep}digest={digest}", encoded=True)


def session_location(request_url: URL, resp: Response, what: str) -> URL:
    """The ``Location`` of an upload answer, resolved against the URL the request went to."""
    location = resp.headers.get("Location")
    if not location:
        raise ProtocolError(f"{what}: registry answered {resp.status} without a Location")
    url = join_url(request_url, location)
    if url.scheme not in ("http", "https") or not url.host:
        raise ProtocolError(f"{what}: upload Location {location[:100]!r} is not an http(s) URL")
    return url


class UploadLost(Retry):
    """The registry no longer knows the upload session: start a new one."""


# The error an unexpected answer stands for, given its error body's (code, message).
ErrorFor = Callable[[Response, str | None, str | None], Exception]


class Requester(Protocol):
    """The client's request with authorization and redirects (the push scope already set)."""

    def __call__(
        self,
        method: str,
        url: URL,
        *,
        headers: dict[str, str],
        content: BodyFactory | None = None,
    ) -> Awaitable[Response]: ...


@dataclass
class BlobPush:
    """What pushing one blob did."""

    digest: Digest
    size: int
    existed: bool = False  # the registry had it: nothing was sent
    bytes_sent: int = 0  # body bytes handed to the connection, resends included
    sessions: int = 0  # upload sessions started (more than one: started afresh)
    resumes: int = 0  # times the offset was asked for after a failure

    @property
    def uploaded(self) -> int:
        """The blob's bytes this push put into the registry (0 when it existed)."""
        return 0 if self.existed else self.size


class BlobUpload:
    """One blob's upload: sessions, chunks, resumes, the final PUT. Run it once."""

    def __init__(
        self,
        request: Requester,
        error_for: ErrorFor,
        attempts: RequestRetries,
        *,
        uploads_url: URL,
        digest: Digest,
        size: int,
        reader: BlobReader,
        chunk_size: int = DEFAULT_PUSH_CHUNK,
        exists: Callable[[], Awaitable[bool]] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        if size < 0:
            raise ValueError("size must not be negative")
        self._request = request
        self._error_for = error_for
        self._attempts = attempts
        self._uploads_url = uploads_url
        self._reader = reader
        self._chunk = chunk_size
        self._exists = exists
        self._on_progress = on_progress or (lambda _position: None)
        self.what = attempts.what
        self.result = BlobPush(digest, size)
        self.location: URL | None = None
        self.offset = 0
        self._source_error: Exception | None = None  # the reader failed: no retry helps

    async def run(self) -> BlobPush:
        result = self.result
        ask_offset = False
        while True:
            progressed = False
            try:
                if ask_offset and self.location is not None:
                    ask_offset = False
                    result.resumes += 1
                    await self._learn_offset()
                if self.location is None:
                    if result.sessions and self._exists is not None and await self._exists():
                        # A PUT that broke after the registry committed the blob.
                        return self._done()
                    await self._start()
                while self.offset < result.size:
                    await self._patch()
                    progressed = True
                await self._finish()
                return self._done()
            except Exception as e:
                if self._source_error is not None:
                    raise self._source_error from None
                await self._attempts.failed(
                    e, progressed=progressed, where=f" at byte {self.offset}"
                )
                if isinstance(e, UploadLost):
                    self.location = None
                else:
                    ask_offset = True

    def _done(self) -> BlobPush:
        self._on_progress(self.result.size)
        return self.result

    # -- steps -------------------------------------------------------------------------------

    async def _start(self) -> None:
        """POST a new session; its Location is where the chunks go."""
        self.offset = 0
        self._on_progress(0)
        resp = await self._request("POST", self._uploads_url, headers={"Content-Length": "0"})
        try:
            if resp.status != 202:
                await self._raise_for(resp)
            self.location = session_location(resp.url, resp, self.what)
            self.result.sessions += 1
        finally:
            await discard(resp)

    async def _patch(self) -> None:
        """Send the next chunk; the answer says where the next one goes."""
        assert self.location is not None
        start = self.offset
        length = min(self._chunk, self.result.size - start)
        headers = {
            "Content-Type": OCTET_STREAM,
            "Content-Length": str(length),
            "Content-Range": f"{start}-{start + length - 1}",
        }
        resp = await self._request(
            "PATCH", self.location, headers=headers, content=lambda: self._body(start, length)
        )
        try:
            if resp.status == 416:
                raise Retry(f"registry refused the chunk at byte {start} (416)")
            if resp.status != 202:
                await self._raise_for(resp, session=True)
            held = parse_upload_range(resp.headers.get("Range"))
            end = start + length
            if held is not None and held != end:
                raise ProtocolError(
                    f"{self.what}: registry holds {held} bytes after the chunk {start}-{end - 1}"
                )
            self.location = session_location(resp.url, resp, self.what)
            self.offset = end
        finally:
            await discard(resp)

    async def _body(self, start: int, length: int) -> AsyncIterator[bytes]:
        position = start
        try:
            async for piece in self._reader(start, length):
                position += len(piece)
                if position > start + length:
                    raise ProtocolError(f"{self.what}: the reader gave more than {length} bytes")
                self.result.bytes_sent += len(piece)
                self._on_progress(position)
                yield piece
        except Exception as e:
            # The HTTP client reports this as a failed send; it is the source's fault, final.
            self._source_error = e
            raise

    async def _learn_offset(self) -> None:
        """After a failure: ask the session how much it holds, or give it up."""
        assert self.location is not None
        resp = await self._request("GET", self.location, headers={})
        try:
            if resp.status not in (200, 204):
                await self._raise_for(resp, session=True)
            held = parse_upload_range(resp.headers.get("Range"))
            if held is None or held > self.result.size:
                # Nothing, one byte (ambiguous) or nonsense: a new session is cheapest.
                self.location = None
                return
            if resp.headers.get("Location"):
                self.location = session_location(resp.url, resp, self.what)
            self.offset = held
            self._on_progress(held)
        finally:
            await discard(resp)

    async def _finish(self) -> None:
        """``PUT <location>&digest=``: the registry checks the digest and commits the blob."""
        assert self.location is not None
        url = with_digest(self.location, self.result.digest)
        resp = await self._request(
            "PUT", url, headers={"Content-Type": OCTET_STREAM, "Content-Length": "0"}
        )
        try:
            if resp.status not in (200, 201, 204):
                code, message = await answers.error_details(resp)
                if resp.status == 400 and code in ("DIGEST_INVALID", "SIZE_INVALID"):
                    raise DigestMismatch(
                        f"{self.what}: the registry refused the bytes it got as "
                        f"{self.result.digest} ({code}); did the file change while it was pushed?",
                        expected=str(self.result.digest),
                    )
                raise self._error(resp, code, message, session=True)
            said = resp.headers.get("Docker-Content-Digest")
            if said and said.strip() != str(self.result.digest):
                raise DigestMismatch(
                    f"{self.what}: the registry stored the blob as {said.strip()[:80]}",
                    expected=str(self.result.digest),
                    actual=said.strip()[:80],
                )
        finally:
            await discard(resp)

    async def _raise_for(self, resp: Response, *, session: bool = False) -> NoReturn:
        code, message = await answers.error_details(resp)
        raise self._error(resp, code, message, session=session)

    def _error(
        self, resp: Response, code: str | None, message: str | None, *, session: bool
    ) -> Exception:
        """What an unexpected answer means; a 404 on the ``session`` URL: it is gone."""
        if session and resp.status == 404 and (code is None or code in LOST_UPLOAD_CODES):
            return UploadLost(f"registry lost the upload session ({code or 404})")
        return self._error_for(resp, code, message)


__all__ = [
    "DEFAULT_PUSH_CHUNK",
    "BlobPush",
    "BlobReader",
    "BlobUpload",
    "ErrorFor",
    "Requester",
    "UploadLost",
    "bytes_reader",
    "file_reader",
    "parse_upload_range",
    "push_scope",
    "session_location",
    "with_digest",
]
