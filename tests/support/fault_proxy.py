"""A programmable fault-injecting reverse proxy, and a tiny blob host for redirect tests.

Both run aiohttp in a background thread with their own event loop on 127.0.0.1:<free port>
(see :mod:`.aiohttp_thread`), so sync and async tests can use them alike.

The proxy forwards method, path, query, headers and streamed bodies to ``upstream`` and keeps
the client's ``Host`` header, so absolute ``Location`` headers the registry builds (upload
sessions) point back at the proxy. Repeated ``Accept`` headers are merged into one (distribution
answers OCI manifests with 404 otherwise: it looks only at the first ``Accept`` header).

Faults (each matches ``path_contains`` as a substring of path+query and optionally ``method``;
``times=None`` means until :meth:`FaultProxy.clear`; rules are consumed only when applied):

* ``drop_after(n)``      send the response headers and ``n`` body bytes, then close the socket
* ``corrupt()``          flip one body byte (length unchanged, digest wrong)
* ``throttle(bps)``      pace response bodies to ``bps`` bytes per second
* ``fail_status(503)``   answer with that status and a registry-style JSON error, not forwarded
* ``delay(seconds)``     wait before forwarding
* ``redirect_blobs_to(url)``  answer blob GETs with ``307 Location: url + path``
* ``cut_request_after(n)``  forward only ``n`` bytes of a request body (an upload PATCH),
  then drop the connections to the registry and to the client: a push that broke midway

Body faults (drop, corrupt, throttle) apply only to 2xx responses to GET.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from warmstart_harness.testbed.aiohttp_thread import ThreadedAiohttpServer

from .http_client import RegistryClient, RegistryLike

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_CHUNK = 64 * 1024


@dataclass
class RecordedRequest:
    """A request as the proxy (or blob host) received it.

    The proxy appends the record when the request arrives and fills in ``status``/``fault``
    before the response starts and ``body_bytes`` before each body write, so a client that has
    its response always finds the record complete.
    """

    method: str
    path: str  # path + query
    headers: tuple[tuple[str, str], ...]
    status: int = 0
    fault: str | None = None
    body_bytes: int = 0  # response body bytes sent
    time: float = field(default_factory=time.time)

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def has_authorization(self) -> bool:
        return self.header("Authorization") is not None


@dataclass
class _Rule:
    kind: str
    path_contains: str
    method: str | None
    remaining: int | None
    params: dict[str, Any]

    def matches(self, method: str, path: str) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.path_contains in path


class FaultProxy(ThreadedAiohttpServer):
    """Reverse proxy in front of ``upstream`` (e.g. ``registry.url``) with fault injection."""

    def __init__(
        self,
        upstream: str,
        *,
        server_ssl: ssl.SSLContext | None = None,
        upstream_ssl: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(server_ssl, name="fault-proxy")
        self.upstream = upstream.rstrip("/")
        self._upstream_ssl = upstream_ssl
        self._session: aiohttp.ClientSession | None = None
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        # Set by fixtures for clients that need them (mirrors RegistryProcess).
        self.ca_file: Any = None
        self.cert_dir: Any = None
        self.username: str | None = None
        self.password: str | None = None

    # -- fault programming (call from any thread) -------------------------------------------
    def _add(
        self, kind: str, path_contains: str, method: str | None, times: int | None, **params: Any
    ) -> None:
        with self._lock:
            self._rules.append(_Rule(kind, path_contains, method, times, params))

    def drop_after(
        self,
        bytes_n: int,
        times: int | None = 1,
        path_contains: str = "/blobs/",
        method: str | None = "GET",
    ) -> None:
        """Close the connection after ``bytes_n`` response body bytes."""
        self._add("drop", path_contains, method, times, bytes_n=bytes_n)

    def corrupt(
        self,
        path_contains: str = "/blobs/",
        times: int | None = 1,
        at: int | None = None,
        method: str | None = "GET",
    ) -> None:
        """Flip (xor 0xff) the body byte at offset ``at`` (default: the middle of the body)."""
        self._add("corrupt", path_contains, method, times, at=at)

    def throttle(
        self,
        bytes_per_sec: int,
        path_contains: str = "",
        times: int | None = None,
        method: str | None = None,
    ) -> None:
        self._add("throttle", path_contains, method, times, bps=bytes_per_sec)

    def fail_status(
        self,
        status: int,
        times: int | None = 1,
        path_contains: str = "",
        method: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer matching requests with ``status`` (e.g. 503, 429 with Retry-After headers)."""
        self._add("status", path_contains, method, times, status=status, headers=headers or {})

    def delay(
        self,
        seconds: float,
        times: int | None = 1,
        path_contains: str = "",
        method: str | None = None,
    ) -> None:
        self._add("delay", path_contains, method, times, seconds=seconds)

    def redirect_blobs_to(
        self,
        other_base_url: str,
        times: int | None = None,
        path_contains: str = "/blobs/sha256:",
        status: int = 307,
    ) -> None:
        """Answer blob GETs with a redirect to ``other_base_url`` + the same path and query."""
        self._add(
            "redirect", path_contains, "GET", times, base=other_base_url.rstrip("/"), status=status
        )

    def cut_request_after(
        self,
        bytes_n: int,
        times: int | None = 1,
        path_contains: str = "/blobs/uploads/",
        method: str | None = "PATCH",
    ) -> None:
        """Forward the first ``bytes_n`` bytes of a request body longer than that, then drop
        both connections."""
        self._add("cut", path_contains, method, times, bytes_n=bytes_n)

    def clear(self) -> None:
        """Remove all faults (recorded requests stay)."""
        with self._lock:
            self._rules.clear()

    def reset_requests(self) -> None:
        self.requests.clear()

    def requests_matching(
        self, path_contains: str = "", method: str | None = None
    ) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if path_contains in r.path and (method is None or r.method == method)
        ]

    def _take(
        self, kinds: Iterable[str], method: str, path: str, longer_than: int | None = None
    ) -> dict[str, _Rule]:
        """First matching rule per kind; consumes one use of each. A ``cut`` rule matches only
        a body ``longer_than`` the bytes it lets through."""
        found: dict[str, _Rule] = {}
        with self._lock:
            for rule in self._rules:
                if rule.kind in kinds and rule.kind not in found and rule.matches(method, path):
                    if rule.kind == "cut" and (longer_than or 0) <= rule.params["bytes_n"]:
                        continue
                    found[rule.kind] = rule
            for rule in found.values():
                if rule.remaining is not None:
                    rule.remaining -= 1
        return found

    # -- aiohttp ------------------------------------------------------------------------------
    async def on_loop_started(self) -> None:
        connector = aiohttp.TCPConnector(
            ssl=self._upstream_ssl if self._upstream_ssl else False, limit=0
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120),
        )

    async def on_loop_stopping(self) -> None:
        if self._session is not None:
            await self._session.close()

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 40)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method, path = request.method, request.path_qs
        record = RecordedRequest(method, path, tuple(request.headers.items()))
        self.requests.append(record)
        faults: list[str] = []

        pre = self._take(("delay", "status", "redirect"), method, path)
        if (request.content_length or 0) > 0:
            cut = self._take(("cut",), method, path, longer_than=request.content_length)
            pre.update(cut)
        if "delay" in pre:
            faults.append("delay")
            record.fault = "delay"
            await asyncio.sleep(pre["delay"].params["seconds"])
        if "status" in pre:
            rule = pre["status"]
            record.status, record.fault = int(rule.params["status"]), "status"
            message = f"injected {record.status}"
            return web.json_response(
                {"errors": [{"code": "UNAVAILABLE", "message": message, "detail": None}]},
                status=record.status,
                headers=rule.params["headers"],
            )
        if "redirect" in pre:
            rule = pre["redirect"]
            record.status, record.fault = int(rule.params["status"]), "redirect"
            location = rule.params["base"] + path
            return web.Response(status=record.status, headers={"Location": location})

        out_headers = CIMultiDict[str]()
        for key, value in request.headers.items():
            lk = key.lower()
            if lk in HOP_BY_HOP or lk == "accept" or lk == "content-length":
                continue
            out_headers.add(key, value)
        accepts = request.headers.getall("Accept", [])
        if accepts:
            out_headers["Accept"] = ", ".join(accepts)
        data: Any = None
        if request.body_exists:
            if request.content_length is not None:
                out_headers["Content-Length"] = str(request.content_length)
            data = request.content.iter_chunked(_CHUNK)

        assert self._session is not None
        if "cut" in pre:
            return await self._cut(request, record, out_headers, pre["cut"].params["bytes_n"])
        try:
            upstream = await self._session.request(
                method, self.upstream + path, headers=out_headers, data=data, allow_redirects=False
            )
        except aiohttp.ClientError as exc:
            record.status, record.fault = 502, "upstream-error"
            return web.json_response(
                {"errors": [{"code": "UNKNOWN", "message": str(exc)}]}, status=502
            )

        async with upstream:
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() in HOP_BY_HOP or key.lower() == "content-length":
                    continue
                resp.headers.add(key, value)
            length = upstream.content_length
            if length is not None:
                resp.content_length = length
            body_rules: dict[str, _Rule] = {}
            if method == "GET" and 200 <= upstream.status < 300:
                body_rules = self._take(("drop", "corrupt", "throttle"), method, path)
            faults += sorted(body_rules)
            record.status, record.fault = upstream.status, ",".join(faults) or None

            drop_at = body_rules["drop"].params["bytes_n"] if "drop" in body_rules else None
            flip_at: int | None = None
            if "corrupt" in body_rules:
                at = body_rules["corrupt"].params["at"]
                flip_at = at if at is not None else (length // 2 if length else 0)
            bps = body_rules["throttle"].params["bps"] if "throttle" in body_rules else None
            chunk_size = min(_CHUNK, max(1024, bps // 20)) if bps else _CHUNK
            transport = request.transport
            await resp.prepare(request)
            started = time.monotonic()
            sent = 0
            if method != "HEAD":
                if drop_at == 0:
                    return self._drop(transport, resp)
                async for chunk in upstream.content.iter_chunked(chunk_size):
                    if flip_at is not None and sent <= flip_at < sent + len(chunk):
                        i = flip_at - sent
                        chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
                    if drop_at is not None and sent + len(chunk) >= drop_at:
                        record.body_bytes = drop_at
                        await resp.write(chunk[: drop_at - sent])
                        return self._drop(transport, resp)
                    sent += len(chunk)
                    record.body_bytes = sent
                    await resp.write(chunk)
                    if bps:
                        ahead = sent / bps - (time.monotonic() - started)
                        if ahead > 0:
                            await asyncio.sleep(ahead)
            await resp.write_eof()
            return resp

    async def _cut(
        self,
        request: web.Request,
        record: RecordedRequest,
        headers: CIMultiDict[str],
        bytes_n: int,
    ) -> web.StreamResponse:
        """Send the registry ``bytes_n`` body bytes and then a broken connection; the client's
        connection is closed without an answer."""
        record.fault = "cut"

        async def partial() -> Any:
            sent = 0
            async for chunk in request.content.iter_chunked(_CHUNK):
                piece = chunk[: bytes_n - sent]
                if piece:
                    sent += len(piece)
                    yield piece
                if sent >= bytes_n:
                    break
            await asyncio.sleep(0.1)  # the registry writes what it got
            raise ConnectionResetError("request body cut by the fault proxy")

        assert self._session is not None
        try:
            async with self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=partial(),
                allow_redirects=False,
            ) as upstream:
                record.status = upstream.status
        except (aiohttp.ClientError, ConnectionError):
            pass
        resp = web.StreamResponse(status=502)
        if request.transport is not None:
            request.transport.close()
        return resp

    @staticmethod
    def _drop(
        transport: asyncio.BaseTransport | None, resp: web.StreamResponse
    ) -> web.StreamResponse:
        # close() (not abort()) flushes what was written, then sends FIN: the client gets
        # exactly the bytes written so far and then EOF before Content-Length is reached.
        if transport is not None:
            transport.close()
        return resp


class BlobHost(ThreadedAiohttpServer):
    """Serves blobs by digest at any path ending in the digest (e.g. ``/v2/x/blobs/<digest>``).

    Supports ``Range: bytes=a-b``; records every request's headers (to check that no
    ``Authorization`` header followed a redirect here).
    """

    def __init__(self, server_ssl: ssl.SSLContext | None = None) -> None:
        super().__init__(server_ssl, name="blob-host")
        self.blobs: dict[str, bytes] = {}
        self.requests: list[RecordedRequest] = []

    def put(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return digest

    def copy_from(self, registry: RegistryLike, repo: str, digests: Iterable[str]) -> None:
        """Fetch blobs from a registry (with its credentials) and serve them here."""
        client = RegistryClient.for_registry(registry)
        for digest in digests:
            resp = client.get_blob(repo, digest)
            if resp.status != 200:
                raise RuntimeError(f"GET blob {digest}: {resp.status}")
            self.blobs[digest] = resp.body

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        digest = request.path.rstrip("/").rsplit("/", 1)[-1]
        data = self.blobs.get(digest)
        headers = tuple(request.headers.items())
        if request.method not in ("GET", "HEAD") or data is None:
            status = 404 if data is None else 405
            self.requests.append(RecordedRequest(request.method, request.path_qs, headers, status))
            return web.Response(status=status)
        status, body, extra = 200, data, {}
        rng = request.headers.get("Range", "")
        if rng.startswith("bytes="):
            start_s, _, end_s = rng[6:].split(",")[0].partition("-")
            start = int(start_s) if start_s else max(0, len(data) - int(end_s))
            end = int(end_s) if (end_s and start_s) else len(data) - 1
            if start >= len(data):
                self.requests.append(RecordedRequest(request.method, request.path_qs, headers, 416))
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            end = min(end, len(data) - 1)
            status, body = 206, data[start : end + 1]
            extra = {"Content-Range": f"bytes {start}-{end}/{len(data)}"}
        self.requests.append(
            RecordedRequest(request.method, request.path_qs, headers, status, None, len(body))
        )
        return web.Response(
            status=status,
            body=body,
            headers={
                "Content-Type": "application/octet-stream",
                "Docker-Content-Digest": digest,
                "Accept-Ranges": "bytes",
                **extra,
            },
        )
