"""The agent's configuration: one TOML file, every field with a default, the CLI overrides it.

```toml
listen = "127.0.0.1:5050"          # HOST:PORT to serve on
store = "/var/lib/warmstart/store"
budget = "20GiB"                   # disk budget of the store (none: unlimited)
node_id = "node-a"                 # default: <hostname>:<port>
advertise_url = "http://10.0.0.1:5050"  # how peers reach this agent (default: from listen)
default_upstream = "registry.example"    # for clients that send no ?ns= (podman, skopeo)
peers = ["http://10.0.0.2:5050"]
peer_token = "cluster-secret"      # shared secret on peer requests and control routes
peer_token_file = "/etc/warmstart/peer-token"  # or: the secret in a file (a mounted Secret)
peers_from_kubernetes = false      # true: peers are the ready endpoints of peers_service
peers_service = "warmstart-agent"  # the agents' headless Service (namespace: $POD_NAMESPACE)
kube_api = "https://10.0.0.1:6443" # default: in-cluster service account ($WARMSTART_KUBE_API)
kube_token_file = "/path/token"    # with kube_api: a bearer token file
containerd_certs_dir = "/etc/containerd/certs.d"  # write <dir>/<registry>/hosts.toml at start
containerd_config = "/etc/containerd/config.toml" # checked for the CRI config_path
tag_ttl = 10                       # seconds a tag -> digest answer is reused
peer_timeout = 1.0                 # connect timeout to a peer, seconds
max_header_size = 8190             # longest request line / header field accepted
containerd_socket = "/run/containerd/containerd.sock"  # for hot pre-warm and /status "hot"
containerd_namespace = "k8s.io"    # default "default"
containerd_snapshotter = "overlayfs"  # default: containerd's own default
ctr_binary = "ctr"
containerd_root = "/var/lib/containerd"  # default: what containerd reports, else this
containerd_link = "hardlink"       # "copy": also copy where a hard link is impossible; "off"
link_wait = 60                     # seconds a manifest answer to containerd waits for the
                                   # image's missing blobs to be fetched and linked
pieces = true                      # big blobs travel between nodes as pieces (3+ nodes)
piece_threshold = "64MiB"          # ... blobs at least this big
piece_min = "8MiB"                 # piece size: blob / 256, a power of two within min..max
piece_max = "64MiB"
piece_downloads = 4                # pieces fetched at once
piece_uploads = 4                  # pieces served at once (more: 503 + Retry-After)
shutdown_grace = 30                # seconds: on SIGTERM (a rolling update, systemctl restart)
                                   # the agent stops accepting connections and finishes the
                                   # responses in flight for up to this long, then exits 0

[upstreams."registry.example"]
url = "https://registry.example"   # "http://..." for a plain-HTTP registry
username = "robot"
password = "..."                   # or: credentials_file = "/root/.docker/config.json"
ca_file = "/etc/ssl/registry-ca.pem"
shared = false                     # true: cluster-shared, no per-client auth check
```
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from warmstart.containerd.content_link import LinkMode
from warmstart.fetch.pieces import PIECE_MAX, PIECE_MIN, PIECE_THRESHOLD
from warmstart.files import read_capped
from warmstart.oci import InvalidReference
from warmstart.oci.reference import validate_registry
from warmstart.registry.endpoints import DOCKER_HUB, DOCKER_HUB_API_HOST, canonical_registry
from warmstart.token_file import TokenFileError, read_token_file
from warmstart.units import parse_size
from warmstart.validation import describe_invalid

DEFAULT_LISTEN = "127.0.0.1:5050"
DEFAULT_STORE_PATH = "/var/lib/warmstart/store"
DEFAULT_CONTAINERD_ROOT = Path("/var/lib/containerd")
STORE_ENV = "WARMSTART_STORE"
DEFAULT_TAG_TTL = 10.0
DEFAULT_PEER_TIMEOUT = 1.0
DEFAULT_MAX_HEADER_SIZE = 8190  # aiohttp's default for a request line and one header field
DEFAULT_SHUTDOWN_GRACE = 30.0
DEFAULT_LINK_WAIT = 60.0  # seconds a manifest answer to containerd waits for its blobs
MAX_PEERS = 1024
MAX_CONFIG_BYTES = 1 << 20
DEFAULT_PEERS_SERVICE = "warmstart-agent"
DEFAULT_CONTAINERD_CONFIG = Path("/etc/containerd/config.toml")
POD_IP_ENV = "POD_IP"
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message is one line."""


def default_store() -> Path:
    return Path(os.environ.get(STORE_ENV, DEFAULT_STORE_PATH))


def split_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:5050`` -> (``127.0.0.1``, 5050); ``[::1]:5050`` -> (``::1``, 5050)."""
    value = text.strip()
    if value.startswith("["):
        close = value.find("]")
        host, rest = value[1:close], value[close + 1 :] if close > 0 else ""
        if close < 0 or not rest.startswith(":"):
            raise ValueError(f"listen address {text!r} is not [HOST]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"listen address {text!r} is not HOST:PORT")
    if not host or any(c.isspace() or c in "/?#@" for c in host):
        raise ValueError(f"listen address {text!r} has no valid host")
    if not port_text.isdigit() or not (0 <= int(port_text) < 65536):
        raise ValueError(f"listen address {text!r} has no valid port (0-65535)")
    return host, int(port_text)


def normalize_base_url(text: str, what: str) -> str:
    """``http(s)://host[:port]`` without path, query or trailing slash."""
    value = str(text).strip()
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} {value!r} must be an http:// or https:// URL with a host")
    if parts.path.strip("/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{what} {value!r} must be scheme://host[:port] (no path or credentials)")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class UpstreamConfig(_Model):
    """One registry the agent mirrors. ``url`` None: ``https://<registry>``."""

    url: str | None = None
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    credentials_file: Path | None = None  # a docker config.json
    ca_file: Path | None = None
    shared: bool = False

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else normalize_base_url(v, "upstream url")

    @field_validator("credentials_file", "ca_file")
    @classmethod
    def _file_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"file {str(v)!r} does not exist")
        return v

    @model_validator(mode="after")
    def _pair(self) -> UpstreamConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.username is not None and self.credentials_file is not None:
            raise ValueError("give username/password or credentials_file, not both")
        return self

    @property
    def is_http(self) -> bool:
        return self.url is not None and self.url.startswith("http://")

    def base_url(self, registry: str) -> str:
        """Where the registry's API lives (``url``, or https://<registry>)."""
        if self.url is not None:
            return self.url
        if registry == DOCKER_HUB:
            return f"https://{DOCKER_HUB_API_HOST}"
        return f"https://{registry}"

    def netloc(self, registry: str) -> str:
        return urlsplit(self.base_url(registry)).netloc


class AgentConfig(_Model):
    listen: str = DEFAULT_LISTEN
    store: Path = Field(default_factory=default_store)
    budget: int | None = None  # bytes; TOML may say "20GiB"
    node_id: str = ""  # "" -> <hostname>:<port>
    advertise_url: str = ""  # "" -> http://<listen host or hostname>:<port>
    upstreams: dict[str, UpstreamConfig] = Field(default_factory=dict)
    default_upstream: str | None = None
    peers: tuple[str, ...] = ()
    peer_token: str | None = Field(default=None, repr=False)
    peer_token_file: Path | None = None  # read at start into peer_token
    peers_from_kubernetes: bool = False
    peers_service: str = DEFAULT_PEERS_SERVICE
    peers_port_name: str = Field(default="http", max_length=15)
    kube_api: str | None = None  # None: $WARMSTART_KUBE_API, else the in-cluster API
    kube_token_file: Path | None = None
    containerd_certs_dir: Path | None = None  # None: write no hosts.toml at start
    containerd_config: Path = DEFAULT_CONTAINERD_CONFIG
    tag_ttl: float = Field(default=DEFAULT_TAG_TTL, ge=0)
    peer_timeout: float = Field(default=DEFAULT_PEER_TIMEOUT, gt=0, le=60)
    max_header_size: int = Field(default=DEFAULT_MAX_HEADER_SIZE, ge=1024, le=1 << 20)
    containerd_socket: Path | None = None
    containerd_namespace: str = Field(default="default", min_length=1, max_length=255)
    containerd_snapshotter: str | None = None
    ctr_binary: str = Field(default="ctr", min_length=1)
    containerd_root: Path | None = None  # None: ask containerd, else /var/lib/containerd
    containerd_link: LinkMode = LinkMode.HARDLINK
    link_wait: float = Field(default=DEFAULT_LINK_WAIT, ge=0, le=3600)
    shutdown_grace: float = Field(default=DEFAULT_SHUTDOWN_GRACE, ge=0, le=3600)
    pieces: bool = True
    piece_threshold: int = Field(default=PIECE_THRESHOLD, ge=1)
    piece_min: int = Field(default=PIECE_MIN, ge=1)
    piece_max: int = Field(default=PIECE_MAX, ge=1)
    piece_downloads: int = Field(default=4, ge=1, le=64)
    piece_uploads: int = Field(default=4, ge=1, le=64)

    @field_validator("piece_threshold", "piece_min", "piece_max", mode="before")
    @classmethod
    def _piece_sizes(cls, v: Any) -> Any:
        return parse_size(v) if isinstance(v, str) else v

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        split_listen(v)
        return v

    @field_validator("budget", mode="before")
    @classmethod
    def _budget(cls, v: Any) -> Any:
        if isinstance(v, str):
            return parse_size(v)
        if isinstance(v, bool) or (isinstance(v, int | float) and v < 0):
            raise ValueError("budget must be a size such as '20GiB' or a number of bytes >= 0")
        return v

    @field_validator("upstreams", mode="before")
    @classmethod
    def _upstream_keys(cls, v: Any) -> Any:
        if not isinstance(v, Mapping):
            return v
        out: dict[str, Any] = {}
        for key, value in v.items():
            name = canonical_registry(str(key))
            try:
                validate_registry(name)
            except InvalidReference:
                raise ValueError(f"{str(key)!r} is not a registry host[:port]") from None
            if name in out:
                raise ValueError(f"registry {name!r} is configured twice")
            out[name] = value
        return out

    @field_validator("default_upstream")
    @classmethod
    def _default_upstream(cls, v: str | None) -> str | None:
        return None if v is None or not v.strip() else canonical_registry(v)

    @field_validator("peers", mode="before")
    @classmethod
    def _peers(cls, v: Any) -> Any:
        if isinstance(v, str):
            raise ValueError("peers must be a list of URLs")
        return v

    @field_validator("peers")
    @classmethod
    def _peer_urls(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return normalize_peers(v)

    @field_validator("advertise_url")
    @classmethod
    def _advertise(cls, v: str) -> str:
        return normalize_base_url(v, "advertise_url") if v else v

    @field_validator("peers_service")
    @classmethod
    def _service(cls, v: str) -> str:
        if not _DNS_LABEL.match(v):
            raise ValueError(f"{v!r} is not a Service name (lower-case DNS label, up to 63)")
        return v

    @field_validator("kube_api")
    @classmethod
    def _kube_api(cls, v: str | None) -> str | None:
        return None if v is None or not v.strip() else normalize_base_url(v, "kube_api")

    @model_validator(mode="after")
    def _token_file(self) -> AgentConfig:
        if self.peer_token_file is None:
            return self
        if self.peer_token is not None:
            raise ValueError("give peer_token or peer_token_file, not both")
        try:
            token = read_token_file(self.peer_token_file)
        except TokenFileError as e:
            raise ValueError(f"peer_token_file: {e}") from None
        object.__setattr__(self, "peer_token", token)
        return self

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, v: str) -> str:
        if len(v) > 255 or any(c.isspace() or not c.isprintable() for c in v):
            raise ValueError("node_id must be up to 255 printable characters without spaces")
        return v

    @model_validator(mode="after")
    def _defaults(self) -> AgentConfig:
        host, port = split_listen(self.listen)
        if not self.node_id:
            object.__setattr__(self, "node_id", f"{socket.gethostname()}:{port}")
        if not self.advertise_url:
            shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
            shown = f"[{shown}]" if ":" in shown else shown
            object.__setattr__(self, "advertise_url", f"http://{shown}:{port}")
        if self.default_upstream is None and len(self.upstreams) == 1:
            object.__setattr__(self, "default_upstream", next(iter(self.upstreams)))
        if self.default_upstream is not None and self.default_upstream not in self.upstreams:
            raise ValueError(
                f"default_upstream {self.default_upstream!r} is not one of the upstreams "
                f"({', '.join(sorted(self.upstreams)) or 'none configured'})"
            )
        return self

    # -- derived ---------------------------------------------------------------------------

    @property
    def listen_host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return split_listen(self.listen)[1]

    @property
    def local_url(self) -> str:
        """How a process on this node reaches the agent (``ctr`` during a hot pre-warm)."""
        host, port = split_listen(self.listen)
        if host in ("0.0.0.0", "*"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    def upstream(self, registry: str) -> UpstreamConfig | None:
        return self.upstreams.get(canonical_registry(registry))


def normalize_peers(urls: Any) -> tuple[str, ...]:
    """Validated, normalised peer URLs in order, without duplicates. Raise ValueError."""
    if isinstance(urls, str | bytes) or not hasattr(urls, "__iter__"):
        raise ValueError("peers must be a list of URLs")
    out: list[str] = []
    for url in urls:
        if not isinstance(url, str):
            raise ValueError(f"peer {url!r} is not a string")
        norm = normalize_base_url(url, "peer")
        if norm not in out:
            out.append(norm)
    if len(out) > MAX_PEERS:
        raise ValueError(f"at most {MAX_PEERS} peers")
    return tuple(out)


_CONFIG_MESSAGES = {"extra_forbidden": "unknown setting"}


def read_toml(path: Path) -> dict[str, Any]:
    raw = read_capped(path, MAX_CONFIG_BYTES, f"config file {path}", ConfigError)
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def build_config(data: Mapping[str, Any], source: str = "config") -> AgentConfig:
    """Validate a mapping (a parsed TOML document); raise :class:`ConfigError`."""
    try:
        return AgentConfig.model_validate(dict(data))
    except ValidationError as e:
        raise ConfigError(describe_invalid(e, source, _CONFIG_MESSAGES)) from None


def parse_upstream_flag(text: str) -> tuple[str, str]:
    """``--upstream REGISTRY=URL`` -> (registry, url)."""
    registry, sep, url = text.partition("=")
    if not sep or not registry.strip() or not url.strip():
        raise ConfigError(f"--upstream {text!r}: expected REGISTRY=URL")
    return registry.strip(), url.strip()


def load_config(
    path: Path | None = None,
    *,
    listen: str | None = None,
    store: Path | None = None,
    budget: str | None = None,
    upstreams: list[str] | None = None,
    peers: list[str] | None = None,
    node_id: str | None = None,
    default_upstream: str | None = None,
    peers_from_kubernetes: bool | None = None,
    peers_service: str | None = None,
    kube_api: str | None = None,
    kube_token_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> AgentConfig:
    """The file's settings (if any), overridden by the given flags.

    ``upstreams`` (``REGISTRY=URL``) add a registry or replace the URL of one the file names;
    ``peers``, when given, replace the file's list. With peers from Kubernetes and no
    ``advertise_url``, this agent's URL is ``http://$POD_IP:<listen port>`` (what its
    EndpointSlice entry names), so it is left out of its own peers.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = read_toml(path) if path is not None else {}
    source = str(path) if path is not None else "flags"
    if listen is not None:
        data["listen"] = listen
    if store is not None:
        data["store"] = str(store)
    if budget is not None:
        data["budget"] = budget
    if node_id is not None:
        data["node_id"] = node_id
    if default_upstream is not None:
        data["default_upstream"] = default_upstream
    if peers:
        data["peers"] = list(peers)
    if peers_from_kubernetes:
        data["peers_from_kubernetes"] = True
    for key, value in (
        ("peers_service", peers_service),
        ("kube_api", kube_api),
        ("kube_token_file", str(kube_token_file) if kube_token_file is not None else None),
    ):
        if value is not None:
            data[key] = value
    pod_ip = env.get(POD_IP_ENV, "").strip()
    if data.get("peers_from_kubernetes") is True and not data.get("advertise_url") and pod_ip:
        try:
            _, port = split_listen(str(data.get("listen", DEFAULT_LISTEN)))
        except ValueError:
            pass  # reported by build_config
        else:
            host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
            data["advertise_url"] = f"http://{host}:{port}"
    if upstreams:
        table = data.get("upstreams", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: upstreams: must be a table")
        table = {canonical_registry(str(k)): v for k, v in table.items()}
        for flag in upstreams:
            registry, url = parse_upstream_flag(flag)
            key = canonical_registry(registry)
            entry = table.get(key, {})
            if not isinstance(entry, dict):
                raise ConfigError(f"{source}: upstreams.{key}: must be a table")
            table[key] = {**entry, "url": url}
        data["upstreams"] = table
    return build_config(data, source)
