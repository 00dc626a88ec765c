"""A stand-in peer agent that lies: blob GETs get bytes of the right length, wrong content.

:class:`WrongBytesPeer` answers ``HEAD``/``GET /v2/<name>/blobs/<digest>`` for the digests it is
told the sizes of (``Range`` honoured, 206) with a fixed pattern instead of the blob, and 404
for everything else (manifests, unknown blobs). Put its URL in an agent's peer list
(``PUT /peers``): the agent must never keep those bytes nor pass them on.

It runs in a thread of the calling process with its own event loop; with ``netns`` its
listening socket is made inside that network namespace (e.g. on a node's 127.0.0.1), where the
node's agent reaches it. :meth:`stop` closes it; it counts what it was asked and sent.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from typing import Self

from aiohttp import web

from warmstart_harness.testbed.aiohttp_thread import ThreadedAiohttpServer
from warmstart_harness.testbed.netns import run_in_netns

_BLOB = re.compile(r"^/v2/.+/blobs/(?P<digest>[a-z0-9]+:[a-f0-9]+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
PATTERN = bytes(range(256)) * 256  # 64 KiB of bytes no real blob here is made of
_CHUNK = len(PATTERN)


class WrongBytesPeer(ThreadedAiohttpServer):
    def __init__(
        self, sizes: Mapping[str, int], *, host: str = "127.0.0.1", port: int = 0,
        netns: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(name="wrong-bytes-peer")
        self.sizes = dict(sizes)
        self.bind_host = host
        self.port = port
        self.netns = netns
        self.gets = 0
        self.heads = 0
        self.bytes_sent = 0
        self.asked: list[str] = []  # digests of the GETs, in order
        self._sock: socket.socket | None = None

    @property
    def host(self) -> str:
        return f"{self.bind_host}:{self.port}"

    def _socket(self) -> socket.socket:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.bind_host, self.port))
                sock.listen(64)
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
            return sock

        return run_in_netns(self.netns, make) if self.netns else make()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        m = _BLOB.match(request.path)
        size = self.sizes.get(m.group("digest")) if m else None
        if m is None or size is None:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        headers = {"Docker-Content-Digest": m.group("digest"), "Accept-Ranges": "bytes"}
        if request.method == "HEAD":
            self.heads += 1
            resp = web.StreamResponse(status=200, headers=headers)
            resp.content_length = size
            await resp.prepare(request)
            return resp
        self.gets += 1
        self.asked.append(m.group("digest"))
        start, end = 0, size - 1
        rm = _RANGE.match(request.headers.get("Range", ""))
        status = 200
        if rm is not None:
            start = int(rm.group(1))
            end = min(int(rm.group(2)), size - 1) if rm.group(2) else size - 1
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = end - start + 1
        await resp.prepare(request)
        left = end - start + 1
        while left > 0:
            chunk = PATTERN[: min(left, _CHUNK)]
            await resp.write(chunk)
            self.bytes_sent += len(chunk)
            left -= len(chunk)
        await resp.write_eof()
        return resp

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    def site(self, runner: web.AppRunner) -> web.BaseSite:
        assert self._sock is not None
        return web.SockSite(runner, self._sock)

    def start(self) -> Self:
        """Listen (the socket is made here, in ``netns`` if given) and serve."""
        self._sock = self._socket()
        self.port = self._sock.getsockname()[1]
        try:
            super().start()
        except BaseException:
            self._sock.close()
            raise
        return self
