"""An in-memory Distribution API server (and token server) for the client's tests.

Servers here are handler functions behind a :class:`Net` of ``127.0.0.1:<port>`` addresses that
a :class:`~warmstart.registry.transport.MemoryTransport` routes to: no socket is opened.
``hooks`` let a test answer (or break) any request before the normal handling: the first hook
returning an answer wins.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict, MultiDictProxy

from warmstart.oci import Digest
from warmstart.oci import mediatypes as mt
from warmstart.registry.transport import Answer, Request, respond


class Req:
    """A request as a server handler sees it (the few parts of aiohttp's the fakes used)."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.method = request.method
        self.path = request.url.path
        self.query: MultiDictProxy[str] = request.url.query
        self.headers: CIMultiDict[str] = CIMultiDict(request.headers)
        self.host = f"{request.url.host}:{request.url.port}"
        content = request.content
        self.content: bytes = content if isinstance(content, bytes) else b""

    async def post(self) -> Mapping[str, str]:
        return dict(self.request.form or {})


Handler = Callable[[Req], Awaitable[Answer]]
Hook = Callable[[Req], Awaitable[Answer | None]]


def response(
    status: int = 200,
    *,
    body: bytes = b"",
    text: str | None = None,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
) -> Answer:
    h = dict(headers or {})
    if text is not None:
        body = text.encode()
        content_type = content_type or "text/plain"
    if content_type is not None:
        h.setdefault("Content-Type", content_type)
    return respond(status, body, h)


def json_response(doc: object, status: int = 200) -> Answer:
    return response(status, body=json.dumps(doc).encode(), content_type="application/json")


@dataclass
class Server:
    port: int


class Net:
    """``127.0.0.1:<port>`` (or ``localhost:<port>``) to handler; nothing else answers."""

    def __init__(self) -> None:
        self.handlers: dict[int, Handler] = {}
        self._next = 40000

    def serve(self, handler: Handler) -> Server:
        self._next += 1
        self.handlers[self._next] = handler
        return Server(self._next)

    async def handle(self, request: Request) -> Answer:
        handler = self.handlers.get(request.url.port or 0)
        if request.url.host not in ("127.0.0.1", "localhost") or handler is None:
            raise ConnectionRefusedError(f"nothing listens at {request.url.host}")
        if request.url.scheme == "https":  # every server here speaks plain HTTP
            raise ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
        return await handler(Req(request))


SERVICE = "fake-registry"
_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    form: dict[str, str] = field(default_factory=dict)

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")


def record(request: Req, form: dict[str, str] | None = None) -> Seen:
    query: dict[str, list[str]] = {}
    for k, v in request.query.items():
        query.setdefault(k, []).append(v)
    return Seen(request.method, request.path, query, dict(request.headers), form or {})


OCTET = "application/octet-stream"


def upload_range(held: int) -> str:
    """An upload session's ``Range`` as distribution writes it (``0-0`` also for nothing)."""
    return f"0-{max(held - 1, 0)}"


def granted_actions(granted: list[str], repo: str) -> set[str]:
    """The actions the scopes ``granted`` (``repository:NAME:pull,push``) allow on ``repo``."""
    actions: set[str] = set()
    for scope in granted:
        kind, _, rest = scope.partition(":")
        name, _, acts = rest.rpartition(":")
        if kind == "repository" and name == repo:
            actions.update(a for a in acts.split(",") if a)
    return actions


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Answer:
    return response(
        status,
        body=error_body(code, message),
        content_type="application/json",
        headers=headers,
    )


def image_manifest(config: bytes = b"{}", layers: tuple[bytes, ...] = ()) -> bytes:
    def desc(media_type: str, data: bytes) -> dict[str, object]:
        return {"mediaType": media_type, "digest": str(Digest.of(data)), "size": len(data)}

    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": desc(mt.OCI_CONFIG, config),
            "layers": [desc(mt.OCI_LAYER_GZIP, layer) for layer in layers],
        }
    ).encode()


class FakeRegistry:
    """Blobs and manifests in dicts; auth ``None``, ``"bearer"`` or ``"basic"``.

    It takes pushes as the distribution spec describes them: upload sessions (POST, PATCH with
    ``Content-Range``, GET for the offset, PUT ``?digest=``) in :attr:`uploads`, their
    ``Location`` relative (or absolute with ``absolute_locations``), and manifests by PUT.
    Writes need a token with ``push`` for the repository.
    """

    def __init__(
        self,
        *,
        auth: str | None = None,
        users: dict[str, str] | None = None,
        identity_tokens: set[str] | None = None,
        anonymous_pull: bool = True,
        token_ttl: int | None = 300,
        realm: str | None = None,
        chunk: int = 64 * 1024,
    ) -> None:
        self.auth = auth
        self.users = users or {}
        self.identity_tokens = identity_tokens or set()
        self.anonymous_pull = anonymous_pull
        self.token_ttl = token_ttl
        self.realm = realm  # set by the fixture to this server's /token unless given
        self.chunk = chunk
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.requests: list[Seen] = []
        self.token_requests: list[Seen] = []
        self.issued: dict[str, str] = {}  # token -> scope it grants
        self.hooks: list[Hook] = []
        self.send_digest_header = True
        self.absolute_locations = False
        self.uploads: dict[str, bytearray] = {}  # session id -> bytes received
        self.blob_repos: dict[str, set[str]] = {}  # digest -> repositories it was pushed to
        self._unauthorized = 0

    # -- content ---------------------------------------------------------------------------

    def add_blob(self, data: bytes) -> Digest:
        digest = Digest.of(data)
        self.blobs[str(digest)] = data
        return digest

    def add_manifest(
        self, repo: str, tag: str | None, body: bytes, media_type: str = mt.OCI_MANIFEST
    ) -> Digest:
        digest = Digest.of(body)
        self.manifests[(repo, str(digest))] = (body, media_type)
        if tag is not None:
            self.manifests[(repo, tag)] = (body, media_type)
        return digest

    def revoke_tokens(self) -> None:
        self.issued.clear()

    def count(self, method: str | None = None, status_path: str = "") -> int:
        return sum(
            1
            for s in self.requests
            if (method is None or s.method == method) and s.path.startswith(status_path)
        )

    @property
    def unauthorized(self) -> int:
        """How many registry requests were answered 401."""
        return self._unauthorized

    # -- app --------------------------------------------------------------------------------

    def app(self) -> Handler:
        return self._route

    async def _route(self, request: Req) -> Answer:
        if request.path == "/token" and request.method == "GET":
            return await self._token_get(request)
        if request.path == "/token" and request.method == "POST":
            return await self._token_post(request)
        if request.path.startswith("/v2/"):
            return await self._registry(request)
        return response(404, text="404: Not Found")

    async def _registry(self, request: Req) -> Answer:
        self.requests.append(record(request))
        for hook in self.hooks:
            answer = await hook(request)
            if answer is not None:
                return answer
        tail = request.path[len("/v2/") :]
        repo: str | None = None
        kind = ref = ""
        m = re.match(r"^(.+)/(manifests|blobs)/([^/]+)$", tail)
        u = re.match(r"^(.+)/blobs/uploads/([^/]*)$", tail)
        if u:
            repo, kind, ref = u.group(1), "uploads", u.group(2)
        elif m:
            repo, kind, ref = m.group(1), m.group(2), m.group(3)
        elif tail != "":
            return error(404, "NAME_UNKNOWN", "no such route")
        denied = self._check_auth(request, repo)
        if denied is not None:
            self._unauthorized += 1
            return denied
        if repo is None:
            return json_response({})
        if kind == "uploads":
            return self._upload(request, repo, ref)
        if kind == "manifests":
            if request.method == "PUT":
                return self._put_manifest(request, repo, ref)
            return self._manifest(repo, ref)
        return await self._blob(request, ref)

    def _check_auth(self, request: Req, repo: str | None) -> Answer | None:
        header = request.headers.get("Authorization", "")
        writes = request.method in ("POST", "PATCH", "PUT", "DELETE")
        actions = ("pull", "push") if writes else ("pull",)
        scope = f"repository:{repo}:{','.join(actions)}" if repo else ""
        if self.auth == "bearer":
            token = header[len("Bearer ") :] if header.startswith("Bearer ") else None
            if token is not None and token in self.issued:
                granted = self.issued[token].split()
                if not repo or granted_actions(granted, repo) >= set(actions):
                    return None
            realm = self.realm or f"http://{request.host}/token"
            challenge = f'Bearer realm="{realm}",service="{SERVICE}"'
            if scope:
                challenge += f',scope="{scope}"'
            if token is not None:
                challenge += ',error="invalid_token"'
            return error(
                401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": challenge}
            )
        if self.auth == "basic":
            if self._basic_user(header) is not None:
                return None
            return error(
                401,
                "UNAUTHORIZED",
                "authentication required",
                {"WWW-Authenticate": 'Basic realm="fake"'},
            )
        return None

    def _basic_user(self, header: str) -> str | None:
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        return user if self.users.get(user) == password else None

    def _issue(self, scopes: list[str], allowed: bool) -> Answer:
        token = secrets.token_hex(8)
        self.issued[token] = " ".join(scopes) if allowed else ""
        doc: dict[str, object] = {"token": token}
        if self.token_ttl is not None:
            doc["expires_in"] = self.token_ttl
        return json_response(doc)

    async def _token_get(self, request: Req) -> Answer:
        self.token_requests.append(record(request))
        for hook in self.hooks:
            answer = await hook(request)
            if answer is not None:
                return answer
        if request.query.get("service") != SERVICE:
            return json_response({"details": "wrong service"}, status=400)
        header = request.headers.get("Authorization", "")
        if header:
            user = self._basic_user(header)
            if user is None:
                return json_response({"details": "bad credentials"}, status=401)
            return self._issue(request.query.getall("scope", []), True)
        return self._issue(request.query.getall("scope", []), self.anonymous_pull)

    async def _token_post(self, request: Req) -> Answer:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_requests.append(record(request, form))
        for hook in self.hooks:
            answer = await hook(request)
            if answer is not None:
                return answer
        if form.get("grant_type") != "refresh_token" or form.get("service") != SERVICE:
            return json_response({"error": "invalid_request"}, status=400)
        if form.get("refresh_token") not in self.identity_tokens:
            return json_response({"error": "invalid_grant"}, status=401)
        response = self._issue(form.get("scope", "").split(), True)
        return response

    def _manifest(self, repo: str, ref: str) -> Answer:
        entry = self.manifests.get((repo, ref))
        if entry is None:
            return error(404, "MANIFEST_UNKNOWN", f"manifest unknown: {ref}")
        body, media_type = entry
        headers = {"Content-Type": media_type}
        if self.send_digest_header:
            headers["Docker-Content-Digest"] = "sha256:" + hashlib.sha256(body).hexdigest()
        return response(body=body, headers=headers)

    def _location(self, request: Req, path: str) -> str:
        return f"http://{request.host}{path}" if self.absolute_locations else path

    def _upload(self, request: Req, repo: str, session: str) -> Answer:
        if session == "":
            if request.method != "POST":
                return error(405, "UNSUPPORTED", "method not allowed")
            session = secrets.token_hex(8)
            self.uploads[session] = bytearray()
            return self._session_answer(request, repo, session, 202)
        data = self.uploads.get(session)
        if data is None:
            return error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown")
        if request.method == "GET":
            return self._session_answer(request, repo, session, 204)
        if request.method == "PATCH":
            if request.headers.get("Content-Type", OCTET) != OCTET:
                return error(400, "UNKNOWN", "bad Content-Type")
            m = re.match(r"^(\d+)-(\d+)$", request.headers.get("Content-Range", ""))
            if m is None or int(m.group(1)) != len(data):
                return response(416, headers={"Range": upload_range(len(data))})
            if int(m.group(2)) - int(m.group(1)) + 1 != len(request.content):
                return error(400, "SIZE_INVALID", "Content-Range does not match the body")
            data += request.content
            return self._session_answer(request, repo, session, 202)
        if request.method == "PUT":
            data += request.content
            wanted = request.query.get("digest", "")
            actual = str(Digest.of(bytes(data)))
            if wanted != actual:
                return error(400, "DIGEST_INVALID", f"provided digest did not match: {actual}")
            del self.uploads[session]
            self.blobs[actual] = bytes(data)
            self.blob_repos.setdefault(actual, set()).add(repo)
            headers = {
                "Location": self._location(request, f"/v2/{repo}/blobs/{actual}"),
                "Docker-Content-Digest": actual,
            }
            return response(201, headers=headers)
        if request.method == "DELETE":
            del self.uploads[session]
            return response(204)
        return error(405, "UNSUPPORTED", "method not allowed")

    def _session_answer(self, request: Req, repo: str, session: str, status: int) -> Answer:
        held = len(self.uploads[session])
        headers = {
            "Location": self._location(request, f"/v2/{repo}/blobs/uploads/{session}"),
            "Range": upload_range(held),
            "Docker-Upload-UUID": session,
        }
        return response(status, headers=headers)

    def _put_manifest(self, request: Req, repo: str, ref: str) -> Answer:
        body = request.content
        try:
            doc = json.loads(body)
        except ValueError:
            return error(400, "MANIFEST_INVALID", "manifest invalid")
        for desc in [doc.get("config"), *doc.get("layers", [])]:
            if isinstance(desc, dict) and desc.get("digest") not in self.blobs:
                return error(400, "MANIFEST_BLOB_UNKNOWN", f"blob unknown: {desc.get('digest')}")
        digest = self.add_manifest(
            repo, None if ref.startswith("sha256:") else ref, body, request.headers["Content-Type"]
        )
        headers = {
            "Location": self._location(request, f"/v2/{repo}/manifests/{digest}"),
            "Docker-Content-Digest": str(digest),
        }
        return response(201, headers=headers)

    async def _blob(self, request: Req, ref: str) -> Answer:
        data = self.blobs.get(ref)
        if data is None:
            return error(404, "BLOB_UNKNOWN", f"blob unknown: {ref}")
        return await serve_bytes(request, data, self.chunk)


async def serve_bytes(
    request: Req,
    data: bytes,
    chunk: int = 64 * 1024,
    *,
    honour_range: bool = True,
    cut_after: int | None = None,
) -> Answer:
    """Answer with ``data`` (206 for a Range), optionally dropping the connection midway."""
    start, end = 0, len(data) - 1
    status = 200
    header = request.headers.get("Range")
    m = _RANGE_RE.match(header or "")
    if honour_range and m:
        start = int(m.group(1))
        if m.group(2):
            end = min(int(m.group(2)), len(data) - 1)
        if start >= len(data):
            return response(416, headers={"Content-Range": f"bytes */{len(data)}"})
        status = 206
    headers = {"Content-Length": str(end - start + 1), "Content-Type": "application/octet-stream"}
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"

    async def body() -> AsyncIterator[bytes]:
        pos = start
        while pos <= end:
            stop = min(pos + chunk, end + 1)
            if cut_after is not None and stop - start > cut_after:
                yield data[pos : start + cut_after]
                raise ConnectionResetError("connection dropped by the fake server")
            yield data[pos:stop]
            pos = stop

    return respond(status, body(), headers)


def aiohttp_app(handler: Handler) -> web.Application:
    """A handler behind a real aiohttp server, for tests of code that opens its own sessions."""

    async def serve(request: web.Request) -> web.StreamResponse:
        form = None
        if request.method == "POST":
            form = {k: str(v) for k, v in (await request.post()).items()}
        req = Request(request.method, request.url, dict(request.headers), form)
        answer = await handler(Req(req))
        resp = web.StreamResponse(status=answer.status, headers=answer.headers)
        body = answer.body
        if isinstance(body, bytes):
            resp.content_length = len(body)
        await resp.prepare(request)
        if request.method != "HEAD":
            if isinstance(body, bytes):
                await resp.write(body)
            else:
                async for chunk in body:
                    await resp.write(chunk)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", serve)
    return app
