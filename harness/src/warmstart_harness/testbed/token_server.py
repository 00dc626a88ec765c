"""A Docker registry token server (the ``auth.token`` protocol of distribution).

``GET <realm>?service=S&scope=repository:NAME:pull,push`` with optional Basic auth answers
``{"token", "access_token", "expires_in", "issued_at"}``. The token is an ES256 JWT whose header
carries ``x5c`` with the signing certificate; distribution 2.8 verifies that chain against
``auth.token.rootcertbundle`` (x5c is tried before ``jwk`` and ``kid``), checks ``iss`` and
``aud`` (a string in 2.8) and ``exp``/``nbf`` with 60 s of leeway.

Anonymous requests get a token with an empty access list: the registry then answers 401 on use.
Runs over HTTPS in its own thread and event loop (see :mod:`.aiohttp_thread`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from warmstart_harness.testbed.aiohttp_thread import ThreadedAiohttpServer
from warmstart_harness.testbed.certs import CertificateAuthority, IssuedCert

ALL_ACTIONS = frozenset({"pull", "push", "delete", "*"})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def encode_es256_jwt(
    header: Mapping[str, object], claims: Mapping[str, object], key: ec.EllipticCurvePrivateKey
) -> str:
    """Compact JWS with ES256: the signature is r || s, 32 bytes each (RFC 7518 3.4)."""
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    der = key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def decode_jwt_unverified(token: str) -> tuple[dict[str, object], dict[str, object]]:
    """Header and claims of a JWT, without checking the signature (for assertions in tests)."""
    head, body, _sig = token.split(".")
    return (
        json.loads(base64.urlsafe_b64decode(_b64_padded(head))),
        json.loads(base64.urlsafe_b64decode(_b64_padded(body))),
    )


def _b64_padded(text: str) -> str:
    return text + "=" * (-len(text) % 4)


@dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope | None:
        # "repository:library/foo:pull,push"; the name itself may not contain ':' (ports are
        # not part of repository names), so split on the first and last colon.
        first, _, rest = text.partition(":")
        name, sep, actions = rest.rpartition(":")
        if not first or not sep or not name:
            return None
        return cls(first, name, tuple(a for a in actions.split(",") if a))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


@dataclass(frozen=True)
class TokenRequest:
    """One request the token server answered."""

    method: str
    username: str | None  # None: anonymous (no Authorization header)
    service: str | None
    scopes: tuple[str, ...]
    status: int
    granted: tuple[dict[str, object], ...] = ()
    token: str | None = None
    time: float = field(default_factory=time.time)


class TokenServer(ThreadedAiohttpServer):
    """HTTPS token endpoint at ``realm`` (``https://127.0.0.1:PORT/token``)."""

    def __init__(
        self,
        ca: CertificateAuthority,
        users: Mapping[str, str],
        *,
        service: str = "warmstart-test-registry",
        issuer: str = "warmstart-test-token-issuer",
        expires_in: int = 300,
        permissions: Mapping[str, frozenset[str] | set[str]] | None = None,
        tls: bool = True,
    ) -> None:
        self.ca = ca
        self.server_cert: IssuedCert = ca.issue_server("token-server")
        super().__init__(ca.server_ssl_context(self.server_cert) if tls else None, name="token")
        self.signer: IssuedCert = ca.issue_signer()
        self.users: dict[str, str] = dict(users)
        # user -> actions that user may get; default: whatever the client asks for
        self.permissions: dict[str, frozenset[str]] = {
            user: frozenset(acts) for user, acts in (permissions or {}).items()
        }
        self.service = service
        self.issuer = issuer
        # "expires_in" of the JSON answer (what clients use to cache the token) ...
        self.expires_in = expires_in
        # ... and the JWT "exp" = now + jwt_lifetime (default expires_in). Negative values make
        # tokens the registry rejects; mind distribution's 60 s leeway (use <= -120).
        self.jwt_lifetime: int | None = None
        self.token_requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._fail: list[tuple[int, int | None]] = []  # (status, remaining or None=forever)

    # -- knobs ---------------------------------------------------------------------------
    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    def fail_status(self, status: int, times: int | None = 1) -> None:
        """Answer the next ``times`` token requests with ``status`` (None: until cleared)."""
        with self._lock:
            self._fail.append((status, times))

    def clear_faults(self) -> None:
        with self._lock:
            self._fail.clear()

    def requests_for(self, username: str | None) -> list[TokenRequest]:
        return [r for r in self.token_requests if r.username == username]

    # -- aiohttp --------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/token", self._handle)
        app.router.add_post("/token", self._handle_post)
        return app

    def _take_fault(self) -> int | None:
        with self._lock:
            if not self._fail:
                return None
            status, remaining = self._fail[0]
            if remaining is not None:
                if remaining <= 1:
                    self._fail.pop(0)
                else:
                    self._fail[0] = (status, remaining - 1)
            return status

    def _authenticate(self, request: web.Request) -> tuple[str | None, bool]:
        """(username, ok). No header: (None, True). Bad header/credentials: (name, False)."""
        header = request.headers.get("Authorization")
        if header is None:
            return None, True
        kind, _, value = header.partition(" ")
        if kind.lower() != "basic":
            return None, False
        try:
            username, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, False
        ok = username in self.users and secrets.compare_digest(self.users[username], password)
        return username, ok

    async def _handle_post(self, request: web.Request) -> web.StreamResponse:
        # The OAuth2 POST flow is optional; 404 tells docker/containerd to fall back to GET.
        self.token_requests.append(TokenRequest("POST", None, None, (), 404))
        raise web.HTTPNotFound()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        service = request.query.get("service")
        raw_scopes = tuple(request.query.getall("scope", []))
        fault = self._take_fault()
        if fault is not None:
            self.token_requests.append(TokenRequest("GET", None, service, raw_scopes, fault))
            return web.json_response({"errors": [{"code": "UNAVAILABLE"}]}, status=fault)
        username, ok = self._authenticate(request)
        if not ok:
            self.token_requests.append(TokenRequest("GET", username, service, raw_scopes, 401))
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED", "message": "invalid username or password"}]},
                status=401,
                headers={"WWW-Authenticate": f'Basic realm="{self.realm}"'},
            )
        access: list[dict[str, object]] = []
        if username is not None:
            allowed = self.permissions.get(username, ALL_ACTIONS)
            for raw in raw_scopes:
                for part in raw.split(" "):  # some clients join several scopes with spaces
                    scope = Scope.parse(part)
                    if scope is None:
                        continue
                    actions = [a for a in scope.actions if a in allowed or "*" in allowed]
                    if actions:
                        access.append({"type": scope.type, "name": scope.name, "actions": actions})
        now = int(time.time())
        lifetime = self.expires_in if self.jwt_lifetime is None else self.jwt_lifetime
        claims = {
            "iss": self.issuer,
            "sub": username or "",
            "aud": service or self.service,
            "exp": now + lifetime,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        header = {
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [base64.b64encode(self.signer.der).decode("ascii")],
        }
        token = encode_es256_jwt(header, claims, self.signer.key)
        self.token_requests.append(
            TokenRequest("GET", username, service, raw_scopes, 200, tuple(access), token)
        )
        issued_at = dt.datetime.fromtimestamp(now, dt.UTC).isoformat().replace("+00:00", "Z")
        return web.json_response(
            {
                "token": token,
                "access_token": token,
                "expires_in": self.expires_in,
                "issued_at": issued_at,
            }
        )
