"""A minimal synchronous registry HTTP client for the support code (stdlib only).

Independent of ``warmstart.registry`` on purpose: fixtures must not depend on the code under
test. Handles the Bearer token challenge (with Basic credentials if given) and Basic auth.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryLike(Protocol):
    """What the support code needs to know about a registry (RegistryProcess satisfies it)."""

    @property
    def url(self) -> str: ...

    @property
    def host(self) -> str: ...

    ca_file: Path | None
    cert_dir: Path | None
    username: str | None
    password: str | None


@dataclass(frozen=True)
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self) -> object:
        return json.loads(self.body)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="..",service="..",scope=".."`` -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


class RegistryClient:
    def __init__(
        self,
        base_url: str,
        *,
        ca_file: Path | str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 60,
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self.scheme = parsed.scheme
        self.netloc = parsed.netloc
        self.username = username
        self.password = password
        self.timeout = timeout
        self._ssl = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._tokens: dict[str, str] = {}  # scope -> token
        self.token_fetches = 0

    @classmethod
    def for_registry(cls, registry: RegistryLike, *, anonymous: bool = False) -> RegistryClient:
        return cls(
            registry.url,
            ca_file=registry.ca_file,
            username=None if anonymous else registry.username,
            password=None if anonymous else registry.password,
        )

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        host, _, port = netloc.rpartition(":")
        if scheme == "https":
            return http.client.HTTPSConnection(
                host, int(port), timeout=self.timeout, context=self._ssl
            )
        return http.client.HTTPConnection(host, int(port), timeout=self.timeout)

    def _send(self, url: str, method: str, headers: dict[str, str], body: bytes | None) -> Response:
        parts = urllib.parse.urlsplit(url)
        conn = self._connection(parts.scheme, parts.netloc)
        try:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return Response(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def _basic(self) -> str | None:
        if self.username is None:
            return None
        raw = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def fetch_token(self, realm: str, service: str | None, scope: str | None) -> str:
        query = {k: v for k, v in (("service", service), ("scope", scope)) if v}
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = {}
        basic = self._basic()
        if basic is not None:
            headers["Authorization"] = basic
        resp = self._send(url, "GET", headers, None)
        if resp.status != 200:
            raise PermissionError(f"token server answered {resp.status}: {resp.body[:200]!r}")
        data = resp.json()
        assert isinstance(data, dict)
        self.token_fetches += 1
        return str(data.get("token") or data.get("access_token"))

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        *,
        scope: str | None = None,
    ) -> Response:
        """Send ``method path`` (path relative to the registry root, e.g. ``/v2/``)."""
        url = f"{self.scheme}://{self.netloc}{path}"
        hdrs = dict(headers or {})
        key = scope or ""
        if key in self._tokens:
            hdrs["Authorization"] = f"Bearer {self._tokens[key]}"
        resp = self._send(url, method, hdrs, body)
        if resp.status != 401:
            return resp
        challenge = resp.header("WWW-Authenticate") or ""
        kind, params = parse_challenge(challenge)
        if kind == "bearer" and "realm" in params:
            token = self.fetch_token(
                params["realm"], params.get("service"), scope or params.get("scope")
            )
            self._tokens[key] = token
            hdrs["Authorization"] = f"Bearer {token}"
        elif kind == "basic" and self._basic() is not None:
            hdrs["Authorization"] = self._basic() or ""
        else:
            return resp
        return self._send(url, method, hdrs, body)

    # -- conveniences -------------------------------------------------------------------------
    def get_manifest(self, repo: str, reference: str, accept: str) -> Response:
        return self.request(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            {"Accept": accept},
            scope=f"repository:{repo}:pull",
        )

    def get_blob(self, repo: str, digest: str) -> Response:
        return self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull")

    def push_blob(self, repo: str, data: bytes) -> str:
        """Monolithic upload (POST then PUT ?digest=); returns the digest."""
        digest = sha256_digest(data)
        scope = f"repository:{repo}:pull,push"
        start = self.request(
            "POST", f"/v2/{repo}/blobs/uploads/", {"Content-Length": "0"}, b"", scope=scope
        )
        if start.status != 202:
            raise RuntimeError(f"blob upload start: {start.status} {start.body[:300]!r}")
        location = start.header("Location") or ""
        loc = urllib.parse.urlsplit(location)
        sep = "&" if loc.query else "?"
        path = (
            loc.path
            + (f"?{loc.query}" if loc.query else "")
            + f"{sep}digest={urllib.parse.quote(digest)}"
        )
        done = self.request(
            "PUT",
            path,
            {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
            data,
            scope=scope,
        )
        if done.status != 201:
            raise RuntimeError(f"blob upload finish: {done.status} {done.body[:300]!r}")
        return digest

    def put_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> Response:
        return self.request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            {"Content-Type": media_type, "Content-Length": str(len(body))},
            body,
            scope=f"repository:{repo}:pull,push",
        )
