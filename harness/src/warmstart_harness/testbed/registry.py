"""Real upstream registries: Debian's ``docker-registry`` (distribution 2.8) as a subprocess.

Request accounting reads the registry's *access log* (Apache combined format on stdout, one
line per request, written by gorilla's logging handler around the whole app). The JSON
application log (stderr, kept in ``app.log`` for debugging) is NOT used for counting: in 2.8 it
writes no "response completed" line for requests refused by token auth (401 only shows up as a
status-less "error authorizing context" warning).

The access-log line is written right after the handler returns, which for blobs (sent with
sendfile) can be just *after* the client has read the last byte. ``requests()`` therefore first
sends a barrier request (``GET /v2/?warmstart-log-barrier=N``), waits until the barrier's line is
in the log and then until the log has been quiet for ``LOG_SETTLE_SECONDS``; barrier lines are
filtered out of all results. Requests still in flight when you ask are not counted.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from warmstart_harness.testbed.certs import CertificateAuthority, IssuedCert
from warmstart_harness.testbed.net import LOOPBACK, free_port
from warmstart_harness.testbed.netns import (
    NetnsHTTPConnection,
    NetnsHTTPSConnection,
    nsenter_prefix,
)
from warmstart_harness.testbed.procs import Daemon, stop_process
from warmstart_harness.testbed.token_server import TokenRequest, TokenServer
from warmstart_harness.testbed.tools import find_tool

BARRIER_PARAM = "warmstart-log-barrier"
# A request's access-log line can land a few ms after the client got the last byte (measured:
# p99 4.4 ms, max 5.1 ms for an 8 MB blob); a barrier request alone missed 5% of them.
LOG_SETTLE_SECONDS = 0.025
LOG_SYNC_TIMEOUT = 2.0
_BLOB_PATH = re.compile(
    r"^/v2/(?P<name>.+?)/blobs/(?P<digest>[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+)(?:\?.*)?$"
)
# 127.0.0.1 - - [28/Nov/2026:18:02:37 +0000] "GET /v2/ HTTP/1.1" 401 87 "" "skopeo/1.9.3"
_ACCESS_LINE = re.compile(
    r"^(?P<remote>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "
    r'"(?P<method>[A-Z]+) (?P<path>\S+) (?P<proto>[^"]+)" (?P<status>\d{3}) (?P<size>\d+|-)'
    r'(?: "(?P<referer>[^"]*)" "(?P<agent>[^"]*)")?'
)


@dataclass(frozen=True)
class Request:
    """One request as the registry logged it."""

    method: str
    path: str  # path including the query string, exactly as sent
    status: int
    size: int  # response body bytes written (0 for HEAD)
    user_agent: str = ""

    @property
    def blob_digest(self) -> str | None:
        m = _BLOB_PATH.match(self.path)
        return m.group("digest") if m else None

    @property
    def repository(self) -> str | None:
        m = re.match(r"^/v2/(.+?)/(?:blobs|manifests|tags)/", self.path)
        return m.group(1) if m else None


def parse_access_line(line: str) -> Request | None:
    m = _ACCESS_LINE.match(line)
    if m is None:
        return None
    size = m.group("size")
    return Request(
        method=m.group("method"),
        path=m.group("path"),
        status=int(m.group("status")),
        size=0 if size == "-" else int(size),
        user_agent=m.group("agent") or "",
    )


def _stop_registry(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the registry by PID, then SIGKILL if it lingers (it exits at once on SIGTERM)."""
    stop_process(proc, timeout=5)


class RegistryProcess(Daemon):
    """``docker-registry serve`` on 127.0.0.1:<free port> with storage in a temp dir.

    ``workdir`` (created if needed) holds ``config.yml``, ``storage/``, ``access.log`` and
    ``app.log``; if omitted a temp dir is created and removed again by :meth:`stop`.

    ``netns`` runs it inside that network namespace (``nsenter --net=/run/netns/NAME``) and
    ``bind_host`` makes it listen on that address instead of 127.0.0.1 (e.g. a netcluster's
    upstream address, or a node's LAN address). :meth:`http` and with it the request accounting
    (barrier requests, ``mark()``, ``blob_gets()``) connect from inside ``netns``, so they work
    whether or not the root namespace can reach ``bind_host``.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        proxy_remoteurl: str | None = None,
        proxy_username: str | None = None,
        proxy_password: str | None = None,
        tls: IssuedCert | None = None,
        token_auth: dict[str, str] | None = None,
        upstream_ca_file: Path | None = None,
        extra_config: dict[str, Any] | None = None,
        netns: str | None = None,
        bind_host: str = LOOPBACK,
        start: bool = True,
    ) -> None:
        self._own_workdir = workdir is None
        self.netns = netns
        self.bind_host = bind_host
        self.workdir = (
            Path(tempfile.mkdtemp(prefix="warmstart-registry-")) if workdir is None else workdir
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage = self.workdir / "storage"
        self.config_file = self.workdir / "config.yml"
        self.access_log = self.workdir / "access.log"
        self.app_log = self.workdir / "app.log"
        self.proxy_remoteurl = proxy_remoteurl
        self._proxy_creds = (proxy_username, proxy_password)
        self._tls = tls
        self._token_auth = token_auth
        self._extra_config = extra_config or {}
        # CA for a TLS proxy.remoteurl: Go reads extra roots from SSL_CERT_FILE.
        self._upstream_ca_file = upstream_ca_file
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], RegistryProcess] | None = None
        self._log_files: list[IO[bytes]] = []
        self._parsed: list[Request] = []
        self._log_offset = 0
        self._log_lock = threading.Lock()
        self._barrier_ids = itertools.count(1)
        # set by subclasses / fixtures for clients that need them
        self.ca_file: Path | None = None
        self.cert_dir: Path | None = None  # directory with only ca.crt (skopeo --cert-dir)
        self.username: str | None = None
        self.password: str | None = None
        if start:
            self._start_now()

    # -- addresses -----------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def tls(self) -> bool:
        return self._tls is not None

    def ssl_context(self) -> ssl.SSLContext | None:
        """Client context trusting this registry's CA (None for plain HTTP)."""
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    # -- lifecycle ------------------------------------------------------------------------
    def _trust_and_log_in(self, ca: CertificateAuthority, users: dict[str, str]) -> None:
        """What clients of a TLS registry with users need: ``ca_file``, ``cert_dir`` (only
        ``ca.crt``, for skopeo), ``users`` and the first of them as ``username``/``password``."""
        self.ca_file = ca.cert_file
        self.cert_dir = self.workdir / "client-certs"
        self.cert_dir.mkdir(exist_ok=True)
        shutil.copy(ca.cert_file, self.cert_dir / "ca.crt")
        self.users = users
        self.username, self.password = next(iter(users.items()), (None, None))

    def config(self) -> dict[str, Any]:
        http_cfg: dict[str, Any] = {
            "addr": f"{self.bind_host}:{self.port}",
            "secret": "warmstart-test-secret",
        }
        if self._tls is not None:
            http_cfg["tls"] = {
                "certificate": str(self._tls.cert_file),
                "key": str(self._tls.key_file),
            }
        cfg: dict[str, Any] = {
            "version": 0.1,
            "log": {
                "level": "info",
                "formatter": "json",
                "fields": {"service": "registry"},
                "accesslog": {"disabled": False},
            },
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http_cfg,
        }
        if self._token_auth is not None:
            cfg["auth"] = {"token": dict(self._token_auth)}
        if self.proxy_remoteurl is not None:
            proxy: dict[str, Any] = {"remoteurl": self.proxy_remoteurl}
            user, password = self._proxy_creds
            if user is not None:
                proxy["username"] = user
                proxy["password"] = password or ""
            cfg["proxy"] = proxy
        for key, value in self._extra_config.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        return cfg

    def start(self, timeout: float = 15, *, same_port: bool = False) -> None:
        """Start (again); ``same_port`` reuses the port of the last start, so clients that
        know the registry's URL reach it again (an outage and its end)."""
        binary = find_tool("docker-registry")
        last_error = ""
        keep = self.port if same_port and self.port else None
        for _attempt in range(5 if keep is None else 1):
            self.port = keep or free_port()
            # distribution reads YAML; JSON is valid YAML, so no YAML library is needed.
            self.config_file.write_text(json.dumps(self.config(), indent=2))
            access = open(self.access_log, "ab")  # closed in stop()
            app = open(self.app_log, "ab")
            self._log_files = [access, app]
            env = dict(os.environ)
            if self._upstream_ca_file is not None:
                env["SSL_CERT_FILE"] = str(self._upstream_ca_file)
            proc = subprocess.Popen(
                [*self._netns_prefix(), binary, "serve", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=access,
                stderr=app,
                cwd=self.workdir,
                env=env,
            )
            self.proc = proc
            self._finalizer = weakref.finalize(self, _stop_registry, proc)
            if self._wait_ready(timeout):
                return
            _stop_registry(proc)
            self._close_logs()
            last_error = self.app_log.read_text(errors="replace")[-2000:]
            if "address already in use" not in last_error:
                break
        raise RuntimeError(f"docker-registry did not start on {self.host}:\n{last_error}")

    def _netns_prefix(self) -> list[str]:
        return nsenter_prefix(self.netns) if self.netns is not None else []

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                status, _, _ = self.http("GET", "/v2/?warmstart-ready=1", timeout=1)
            except (OSError, http.client.HTTPException):
                time.sleep(0.02)
                continue
            return status in (200, 401)
        return False

    def stop(self) -> None:
        """Terminate the registry (by PID), close logs, remove an owned temp dir."""
        if self.proc is not None:
            _stop_registry(self.proc)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self._close_logs()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _close_logs(self) -> None:
        for f in self._log_files:
            f.close()
        self._log_files = []

    # -- a tiny raw HTTP client (no auth handling; see images.RegistryClient for that) -----
    def http(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 30,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn: http.client.HTTPConnection
        if self.tls and self.netns is not None:
            conn = NetnsHTTPSConnection(
                self.netns, self.bind_host, self.port, timeout=timeout, context=self.ssl_context()
            )
        elif self.tls:
            conn = http.client.HTTPSConnection(
                self.bind_host, self.port, timeout=timeout, context=self.ssl_context()
            )
        elif self.netns is not None:
            conn = NetnsHTTPConnection(self.netns, self.bind_host, self.port, timeout=timeout)
        else:
            conn = http.client.HTTPConnection(self.bind_host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.headers, data
        finally:
            conn.close()

    # -- request accounting ---------------------------------------------------------------
    def _read_new_lines(self) -> None:
        with open(self.access_log, "rb") as f:
            f.seek(self._log_offset)
            chunk = f.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        self._log_offset += end + 1
        for raw in chunk[: end + 1].splitlines():
            req = parse_access_line(raw.decode("utf-8", errors="replace"))
            if req is not None:
                self._parsed.append(req)

    def _all_requests(self, sync: bool) -> list[Request]:
        with self._log_lock:
            if sync and self.running:
                self._sync_log()
            else:
                self._read_new_lines()
            return [
                r
                for r in self._parsed
                if BARRIER_PARAM not in r.path and "warmstart-ready=" not in r.path
            ]

    def _sync_log(self) -> None:
        """Barrier request, then wait until the log has been quiet for LOG_SETTLE_SECONDS."""
        marker = f"{BARRIER_PARAM}={next(self._barrier_ids)}"
        try:
            self.http("GET", f"/v2/?{marker}", timeout=5)
        except (OSError, http.client.HTTPException):
            pass
        deadline = time.monotonic() + LOG_SYNC_TIMEOUT
        seen_barrier = False
        last_count, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            self._read_new_lines()
            if not seen_barrier:
                seen_barrier = any(r.path.endswith(marker) for r in self._parsed[-64:])
            if len(self._parsed) != last_count:
                last_count, quiet_since = len(self._parsed), time.monotonic()
            elif seen_barrier and time.monotonic() - quiet_since >= LOG_SETTLE_SECONDS:
                return
            time.sleep(0.002)

    def requests(self, since: int = 0, *, sync: bool = True) -> list[Request]:
        """Requests the registry has answered, oldest first, from index ``since`` (see mark())."""
        return self._all_requests(sync)[since:]

    def mark(self) -> int:
        """The current request count: pass it as ``since`` to look only at later requests."""
        return len(self._all_requests(sync=True))

    def blob_gets(
        self, digest: str | None = None, since: int = 0, *, successful_only: bool = False
    ) -> int:
        """GET requests (not HEAD) on ``/v2/<name>/blobs/<digest>``, optionally for one digest.

        Range GETs (206) count; with ``successful_only`` 4xx/5xx answers (e.g. the 401 before a
        token is fetched) do not.
        """
        return len(self.blob_get_requests(digest, since, successful_only=successful_only))

    def blob_get_requests(
        self, digest: str | None = None, since: int = 0, *, successful_only: bool = False
    ) -> list[Request]:
        out = []
        for r in self.requests(since):
            if r.method != "GET" or (successful_only and r.status >= 400):
                continue
            d = r.blob_digest
            if d is not None and (digest is None or d == digest):
                out.append(r)
        return out

    def manifest_gets(self, reference: str | None = None, since: int = 0) -> int:
        """GET requests on ``/v2/<name>/manifests/<reference>``."""
        n = 0
        for r in self.requests(since):
            m = re.match(r"^/v2/.+/manifests/([^?]+)", r.path)
            if r.method == "GET" and m and (reference is None or m.group(1) == reference):
                n += 1
        return n

    def log_tail(self, lines: int = 30) -> str:
        """Last access-log lines and application-log warnings/errors (for failure reports)."""
        out = []
        if self.access_log.exists():
            tail = self.access_log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {self.access_log} (last {len(tail)}) ---\n" + "\n".join(tail))
        if self.app_log.exists():
            problems = []
            for line in self.app_log.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    problems.append(line[:300])
                    continue
                if entry.get("level") in ("warning", "error", "fatal", "panic"):
                    uri = entry.get("http.request.uri", "")
                    problems.append(f"{entry.get('level')}: {entry.get('msg')} {uri}"[:300])
            tail = problems[-lines:]
            out.append(
                f"--- {self.app_log} warnings/errors (last {len(tail)}) ---\n" + "\n".join(tail)
            )
        return "\n".join(out)


class TokenAuthRegistry(RegistryProcess):
    """A TLS registry with ``auth.token`` plus its HTTPS token server (same self-signed CA).

    ``ca_file`` is the CA certificate (trust it for both the registry and the token realm),
    ``cert_dir`` a directory holding only ``ca.crt`` for skopeo's ``--cert-dir`` options.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        users: dict[str, str] | None = None,
        expires_in: int = 300,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        own = workdir is None
        workdir = (
            Path(tempfile.mkdtemp(prefix="warmstart-authreg-")) if workdir is None else workdir
        )
        self.ca = CertificateAuthority(workdir / "pki")
        users = {"alice": "secret"} if users is None else users
        self.token_server = TokenServer(self.ca, users, expires_in=expires_in)
        self.token_server.start()
        try:
            super().__init__(
                workdir,
                tls=self.ca.issue_server("registry"),
                token_auth={
                    "realm": self.token_server.realm,
                    "service": self.token_server.service,
                    "issuer": self.token_server.issuer,
                    "rootcertbundle": str(self.ca.cert_file),
                },
                extra_config=extra_config,
                start=False,
            )
            self._own_workdir = own
            self._trust_and_log_in(self.ca, users)
            self.start()
        except BaseException:
            self.token_server.stop()
            if own:
                shutil.rmtree(workdir, ignore_errors=True)
            raise

    @property
    def token_requests(self) -> list[TokenRequest]:
        return self.token_server.token_requests

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.token_server.stop()


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash (cost 4: the registry checks it on every request) via libxcrypt.

    Uses the stdlib ``crypt`` module (deprecated, still in 3.11/3.12; Debian's libcrypt is
    libxcrypt, which has bcrypt), so no extra dependency is needed.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    if not hashed or not hashed.startswith("$2"):
        raise RuntimeError("libcrypt has no bcrypt support")
    return hashed


class BasicAuthRegistry(RegistryProcess):
    """A TLS registry with ``auth.htpasswd`` (HTTP Basic, bcrypt); user ``alice``/``secret``."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        users: dict[str, str] | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        own = workdir is None
        workdir = (
            Path(tempfile.mkdtemp(prefix="warmstart-basicreg-")) if workdir is None else workdir
        )
        try:
            users = {"alice": "secret"} if users is None else users
            self.ca = CertificateAuthority(workdir / "pki")
            htpasswd = workdir / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{bcrypt_hash(p)}\n" for u, p in users.items()))
            super().__init__(
                workdir,
                tls=self.ca.issue_server("registry"),
                token_auth=None,
                extra_config={
                    "auth": {"htpasswd": {"realm": "warmstart-basic", "path": str(htpasswd)}},
                    **(extra_config or {}),
                },
                start=False,
            )
            self._own_workdir = own
            self._trust_and_log_in(self.ca, users)
            self.start()
        except BaseException:
            if own:
                shutil.rmtree(workdir, ignore_errors=True)
            raise
