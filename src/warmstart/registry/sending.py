"""One request over a :class:`~.transport.Transport`, following redirects by hand.

Redirects are followed here rather than by the transport so that ``Authorization`` never leaves
the origin it is meant for (scheme, host, port): registries such as ECR or anything on S3 send
blob downloads to storage with a pre-signed URL. Plus the small body helpers every caller needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import aiohttp
from yarl import URL

from warmstart.registry.endpoints import may_send_credentials, origin_of
from warmstart.registry.errors import InsecureCredentials, ProtocolError
from warmstart.registry.transport import Body, Request, Response, Transport

MAX_REDIRECTS = 5
MAX_ERROR_BODY = 64 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# What reading a body may raise besides our own errors.
BODY_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError, ConnectionError)

Origin = tuple[str, str, int]
# A request body made afresh for each time the request is sent (a redirect, a 401 answered):
# a stream can be sent only once.
BodyFactory = Callable[[], Body]


def join_url(base: URL, location: str) -> URL:
    """Resolve a Location header, keeping its percent-encoding as is (pre-signed URLs)."""
    target = URL(location, encoded=True)
    if target.is_absolute():
        return target
    return base.join(target)


def url_origin(url: URL) -> Origin:
    return origin_of(str(url))


async def read_at_most(resp: Response, limit: int) -> bytes:
    """The body up to ``limit`` bytes; never reads more than that from the stream."""
    buf = bytearray()
    while len(buf) < limit:
        chunk = await resp.read(limit - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


async def discard(resp: Response) -> None:
    """Drop a small body so the connection can be reused; close it if the body is big."""
    length = resp.content_length
    if resp.method != "HEAD" and length is not None and length <= MAX_ERROR_BODY:
        try:
            await read_at_most(resp, length)
        except BODY_ERRORS:
            resp.close()
            return
    resp.release()


async def send(
    transport: Transport,
    method: str,
    url: URL,
    headers: Mapping[str, str],
    authorization: str | None,
    auth_origin: Origin,
    *,
    user_agent: str,
    insecure: frozenset[str],
    data: dict[str, str] | None = None,
    content: BodyFactory | None = None,
) -> Response:
    """Send, following up to :data:`MAX_REDIRECTS` redirects by hand.

    ``Authorization`` goes only to ``auth_origin`` and, over plain HTTP, only to loopback or
    ``insecure`` hosts (else :class:`InsecureCredentials`). ``data`` is a form, ``content()``
    makes the body (called again for each redirect hop).
    """
    for _hop in range(MAX_REDIRECTS + 1):
        h = {"User-Agent": user_agent, **headers}
        if authorization is not None and url_origin(url) == auth_origin:
            if not may_send_credentials(str(url), insecure):
                raise InsecureCredentials(
                    f"refusing to send credentials over plain HTTP to {url.host}: "
                    "use https, or mark the registry insecure"
                )
            h["Authorization"] = authorization
        body = content() if content is not None else None
        resp = await transport.handle_request(Request(method, url, h, data, body))
        if resp.status not in REDIRECT_STATUSES:
            return resp
        location = resp.headers.get("Location")
        await discard(resp)
        if not location:
            raise ProtocolError(f"{url.host} answered {resp.status} without a Location")
        url = join_url(url, location)
        if url.scheme not in ("http", "https") or not url.host:
            raise ProtocolError(f"redirect to an unsupported URL {location[:100]!r}")
        if resp.status == 303 and method == "POST":
            method, data, content = "GET", None, None
    raise ProtocolError(f"more than {MAX_REDIRECTS} redirects, last to {url.host}")


__all__ = [
    "MAX_ERROR_BODY",
    "MAX_REDIRECTS",
    "REDIRECT_STATUSES",
    "BodyFactory",
    "discard",
    "join_url",
    "read_at_most",
    "send",
    "url_origin",
]
