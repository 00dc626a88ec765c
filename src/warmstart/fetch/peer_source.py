"""Other agents as Sources, over HTTP: ``{peer}/v2/<repo>/blobs/<digest>?ns=<registry>``.

Every request names this node in ``X-Warmstart-Peer`` (the peer then never forwards it) and
carries the cluster token if one is configured. A dead peer costs at most ``connect_timeout``
(refused connections cost nothing); a peer that accepts but does not answer costs
``response_timeout``; a stalled body is given up after ``read_timeout`` of silence and the
transfer moves on to the next source from the same offset (``Range``).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
from yarl import URL

from warmstart.aio import read_to_end
from warmstart.fetch.interfaces import PEER_HEADER, PEER_TOKEN_HEADER, PIECE_HEADER
from warmstart.fetch.rendezvous import node_key
from warmstart.fetch.source import (
    BlobRequest,
    OpenedBlob,
    SourceBusy,
    SourceCorrupt,
    SourceDenied,
    SourceError,
    SourceManifest,
    SourceNotFound,
    SourceUnavailable,
    SourceUnreachable,
)
from warmstart.oci import MAX_MANIFEST_BYTES, Digest, InvalidDigest
from warmstart.oci import mediatypes as mt
from warmstart.registry.aiohttp_transport import raw_session
from warmstart.registry.errors import one_line, parse_error_body
from warmstart.registry.ranges import RangeError, range_header, resume_response

MAX_ERROR_BODY = 4096
MAX_TRACKER_ANSWER = 8 << 20


class PeerClient:
    """One HTTP session for all peers; :meth:`source` gives the Source of one peer."""

    def __init__(
        self,
        *,
        node_id: str,
        token: str | None = None,
        connect_timeout: float = 1.0,
        response_timeout: float = 10.0,
        read_timeout: float = 30.0,
        chunk_size: int = 256 * 1024,
        ca_file: str | None = None,
    ) -> None:
        self.node_id = node_id
        self.token = token
        self.connect_timeout = connect_timeout
        self.response_timeout = response_timeout
        self.read_timeout = read_timeout
        self.chunk_size = chunk_size
        self._ssl: ssl.SSLContext | bool = True
        if ca_file:
            self._ssl = ssl.create_default_context(cafile=ca_file)
        self._session: aiohttp.ClientSession | None = None
        self._sources: dict[str, PeerSource] = {}

    def source(self, url: str) -> PeerSource:
        key = node_key(url)
        peer = self._sources.get(key)
        if peer is None:
            if len(self._sources) > 4096:
                self._sources.clear()  # peers come and go: do not grow without bound
            peer = self._sources[key] = PeerSource(self, key)
        return peer

    def headers(self) -> dict[str, str]:
        out = {PEER_HEADER: self.node_id, "User-Agent": "warmstart-agent/0.1 (peer)"}
        if self.token is not None:
            out[PEER_TOKEN_HEADER] = self.token
        return out

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = raw_session(aiohttp.TCPConnector(limit=256, ssl=self._ssl))
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def request(
        self,
        method: str,
        url: URL,
        headers: dict[str, str],
        *,
        json: Any = None,
        response_timeout: float | None = None,
    ) -> aiohttp.ClientResponse:
        """Send and wait for the answer's headers; connection failures are unreachable."""
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout
        )
        where = f"peer {url.scheme}://{url.authority}"
        try:
            async with asyncio.timeout(response_timeout or self.response_timeout):
                return await self.session().request(
                    method,
                    url,
                    headers={**self.headers(), **headers},
                    allow_redirects=False,
                    timeout=timeout,
                    ssl=self._ssl,
                    json=json,
                )
        except TimeoutError:
            raise SourceUnreachable(f"{where} did not answer in time") from None
        except aiohttp.ClientConnectionError as e:
            raise SourceUnreachable(f"{where}: {one_line(e) or type(e).__name__}") from None
        except aiohttp.ClientError as e:
            raise SourceUnavailable(f"{where}: {one_line(e) or type(e).__name__}") from None


async def _fail(resp: aiohttp.ClientResponse, what: str) -> SourceError:
    code = message = None
    if resp.method != "HEAD":
        try:
            body = await resp.content.read(MAX_ERROR_BODY)
            code, message = parse_error_body(body)
        except (aiohttp.ClientError, TimeoutError):
            pass
    detail = ": ".join(p for p in (code, message) if p)
    text = f"{what}: peer answered {resp.status}" + (f" ({detail})" if detail else "")
    resp.close()
    if resp.status == 404:
        return SourceNotFound(text)
    if resp.status in (401, 403):
        return SourceDenied(text)
    if resp.status == 416:
        return SourceCorrupt(text)
    if resp.status == 503 and resp.headers.get("Retry-After"):
        try:
            retry = float(resp.headers["Retry-After"])
        except ValueError:
            retry = 1.0
        return SourceBusy(text, min(max(retry, 0.05), 30.0))
    return SourceUnavailable(text)


class PeerSource:
    kind = "peer"

    def __init__(self, client: PeerClient, url: str) -> None:
        self._client = client
        self.name = node_key(url)  # the peer's URL: what the health and hashing use

    def _url(self, registry: str, repository: str, kind: str, reference: str) -> URL:
        return (
            URL(self.name)
            .with_path(f"/v2/{repository}/{kind}/{reference}")
            .with_query({"ns": registry})
        )

    async def stat_blob(self, registry: str, repository: str, digest: Digest) -> int:
        what = f"blob {digest}"
        resp = await self._client.request(
            "HEAD", self._url(registry, repository, "blobs", str(digest)), {}
        )
        try:
            if resp.status != 200:
                raise await _fail(resp, what)
            if resp.content_length is None:
                raise SourceCorrupt(f"{what}: peer answered HEAD without Content-Length")
            return resp.content_length
        finally:
            resp.release()

    async def open_blob(self, want: BlobRequest) -> OpenedBlob:
        offset, size = want.offset, want.size
        what = f"blob {want.digest} from peer {self.name}"
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = range_header(offset)
        url = self._url(want.registry, want.repository, "blobs", str(want.digest))
        resp = await self._client.request("GET", url, headers)
        try:
            if resp.status == 200 or (resp.status == 206 and offset):
                try:
                    skip, total = resume_response(resp, offset, size)
                except RangeError as e:
                    raise SourceCorrupt(f"{what}: {e}") from None
            else:
                raise await _fail(resp, what)
            if total is None:
                total = size
            if total is None:
                raise SourceCorrupt(f"{what}: the answer has no length")
            if size is not None and total != size:
                raise SourceCorrupt(f"{what}: peer says {total} bytes, expected {size}")
        except BaseException:
            resp.close()
            raise
        return OpenedBlob(total, self._body(resp, skip, total - offset, what))

    async def _body(
        self, resp: aiohttp.ClientResponse, skip: int, expected: int, what: str
    ) -> AsyncIterator[bytes]:
        got = 0
        complete = False
        try:
            async for chunk in resp.content.iter_chunked(self._client.chunk_size):
                if skip:
                    if len(chunk) <= skip:
                        skip -= len(chunk)
                        continue
                    chunk, skip = chunk[skip:], 0
                got += len(chunk)
                if got > expected:
                    raise SourceCorrupt(f"{what}: peer sent more than {expected} bytes")
                yield chunk
            if got < expected:
                raise SourceUnavailable(f"{what}: peer stopped after {got} of {expected} bytes")
            complete = True
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as e:
            raise SourceUnavailable(f"{what}: {one_line(e) or type(e).__name__}") from None
        finally:
            if complete:
                resp.release()
            else:
                resp.close()

    async def open_piece(
        self, registry: str, repository: str, digest: Digest, start: int, end: int
    ) -> AsyncIterator[bytes]:
        """Bytes ``start..end`` of the blob (one piece) from this peer; :class:`SourceBusy`
        when it has no upload slot free, :class:`SourceNotFound` when it does not hold them."""
        what = f"piece {start}-{end} of {digest} from peer {self.name}"
        headers = {
            "Accept-Encoding": "identity",
            "Range": f"bytes={start}-{end - 1}",
            PIECE_HEADER: "1",
        }
        url = self._url(registry, repository, "blobs", str(digest))
        resp = await self._client.request("GET", url, headers)
        try:
            if resp.status != 206:
                raise await _fail(resp, what)
            expected = f"bytes {start}-{end - 1}/"
            if not resp.headers.get("Content-Range", "").startswith(expected):
                raise SourceCorrupt(f"{what}: answered {resp.headers.get('Content-Range')!r}")
        except BaseException:
            resp.close()
            raise
        return self._body(resp, 0, end - start, what)

    async def tracker(
        self, registry: str, digest: Digest, body: dict[str, Any], wait: float
    ) -> Any:
        """``POST /pieces/<digest>``: announce what this node holds and get the piece list and
        the holders (after up to ``wait`` seconds if nothing changed); the JSON answer."""
        what = f"pieces of {digest} from peer {self.name}"
        url = URL(self.name).with_path(f"/pieces/{digest}").with_query({"ns": registry})
        resp = await self._client.request(
            "POST", url, {}, json=body, response_timeout=self._client.response_timeout + wait
        )
        try:
            if resp.status != 200:
                raise await _fail(resp, what)
            raw = await read_to_end(resp.content, MAX_TRACKER_ANSWER)
            if raw is None:
                raise SourceCorrupt(f"{what}: over {MAX_TRACKER_ANSWER} bytes")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise SourceUnavailable(f"{what}: {one_line(e) or type(e).__name__}") from None
        finally:
            resp.release()
        try:
            return json.loads(raw)
        except ValueError:
            raise SourceCorrupt(f"{what}: the answer is not JSON") from None

    async def get_manifest(
        self, registry: str, repository: str, reference: str, accept: Sequence[str]
    ) -> SourceManifest:
        what = f"manifest {reference} from peer {self.name}"
        headers = {"Accept": ", ".join(accept or mt.MANIFEST_ACCEPT)}
        url = self._url(registry, repository, "manifests", reference)
        resp = await self._client.request("GET", url, headers)
        try:
            if resp.status != 200:
                raise await _fail(resp, what)
            if (resp.content_length or 0) > MAX_MANIFEST_BYTES:
                raise SourceCorrupt(f"{what}: over {MAX_MANIFEST_BYTES} bytes")
            body = await read_to_end(resp.content, MAX_MANIFEST_BYTES)
            if body is None:
                raise SourceCorrupt(f"{what}: over {MAX_MANIFEST_BYTES} bytes")
            media_type = mt.base_media_type(resp.headers.get("Content-Type"))
        except (aiohttp.ClientError, TimeoutError) as e:
            raise SourceUnavailable(f"{what}: {one_line(e) or type(e).__name__}") from None
        finally:
            resp.release()
        try:
            wanted = Digest.parse(reference)
        except InvalidDigest:
            wanted = None
        digest = Digest.of(body, wanted.algorithm if wanted else "sha256")
        if wanted is not None and digest != wanted:
            raise SourceCorrupt(f"{what}: content hashes to {digest}")
        return SourceManifest(digest, media_type, body)


__all__ = ["PeerClient", "PeerSource"]
