"""containerd ``hosts.toml`` files that send pulls through the warmstart agent.

containerd (1.5+, ``config_path`` in the CRI config or ``ctr --hosts-dir``) looks up
``DIR/<registry>/hosts.toml`` for every pull from ``<registry>``. Each ``[host."URL"]`` entry is
tried first, in file order, with ``?ns=<registry>`` added to every request; ``server`` is the
fallback that containerd uses when every host fails with a connection error or a non-404 error
status (and, mid-transfer, when the connection to a host breaks: it resumes with a Range
request). Verified with containerd 1.6.20's ``remotes/docker/config/hosts.go``.

``dial_timeout``: only containerd >= 2.1 reads it (containerd PR #11106). 1.6 and 1.7 parse
hosts.toml leniently (unknown keys are ignored, checked with a real pull on 1.6.20) and use a
fixed 30 s dial timeout; a node-local agent that is down refuses the connection at once, so the
fallback is immediate there too. A remote mirror that does not answer costs 30 s a request on 1.6.

Every file this module renders starts with ``# <registry>: written by `warmstart ...```, the
marker by which the agent tells its own files from an operator's (:func:`written_by_warmstart`).

Everything here is pure (rendering, validation) except :func:`write_hosts_dir` and
:func:`write_hosts_file`.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from warmstart.oci.errors import InvalidReference
from warmstart.oci.reference import validate_registry
from warmstart.oci.registry_name import (
    DOCKER_HUB,
    DOCKER_HUB_API_HOST,
    canonical_registry,
    registry_names,
)

DOCKER_HUB_SERVER = f"https://{DOCKER_HUB_API_HOST}"
DEFAULT_CAPABILITIES = ("pull", "resolve")
KNOWN_CAPABILITIES = frozenset({"pull", "resolve", "push"})
DEFAULT_DIAL_TIMEOUT = "200ms"
# containerd's fallback directory for registries without a directory of their own.
DEFAULT_HOST_DIR = "_default"
DEFAULT_WRITER = "warmstart containerd-config"
_MARKER = re.compile(r"^# \S+: written by `warmstart[ `]")
_GO_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")


class HostsConfigError(ValueError):
    """Bad input for a hosts.toml (a URL, registry name, capability or duration)."""


@dataclass(frozen=True)
class MirrorHost:
    """One ``[host."URL"]`` entry."""

    url: str
    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    skip_verify: bool | None = None
    ca: tuple[str, ...] = ()  # CA files (absolute paths, or relative to the registry's directory)
    dial_timeout: str | None = DEFAULT_DIAL_TIMEOUT  # a Go duration; containerd >= 2.1 only
    override_path: bool = False
    headers: tuple[tuple[str, str], ...] = ()  # [host."URL".header]: sent on every request


@dataclass(frozen=True)
class HostsFile:
    """``<registry>/hosts.toml``: mirrors first, ``server`` as the fallback."""

    # the host namespace: the name in the references it is for, which is also the directory
    # ("docker.io", "registry.hub.docker.com", "127.0.0.1:5000", "_default")
    registry: str
    server: str | None  # the upstream URL; None leaves it to containerd's default
    hosts: tuple[MirrorHost, ...] = ()

    @property
    def directory(self) -> str:
        return host_directory(self.registry)


# -- validation ---------------------------------------------------------------------------------


def _valid(name: str) -> str:
    name = name.strip()
    if name == DEFAULT_HOST_DIR:
        return name
    try:
        return validate_registry(name).lower()
    except InvalidReference as e:
        raise HostsConfigError(str(e)) from None


def checked_registry(name: str) -> str:
    """The registry's one name (``registry.hub.docker.com`` -> ``docker.io``, as
    :func:`~warmstart.oci.registry_name.canonical_registry` says everywhere); raise
    :class:`HostsConfigError` on anything that is not a registry host."""
    name = _valid(name)
    return name if name == DEFAULT_HOST_DIR else canonical_registry(name)


def host_directory(registry: str) -> str:
    """The directory containerd looks in for pulls of references naming ``registry``
    (``DIR/<registry>/hosts.toml``): that name itself, not the canonical one (containerd looks
    up the host as the reference has it)."""
    name = _valid(registry)
    if "/" in name or name in (".", ".."):  # validate_registry already rules these out
        raise HostsConfigError(f"invalid registry host {registry!r}")
    return name


def check_url(url: str, what: str = "URL") -> str:
    """An ``http(s)://host[:port][/path]`` URL without query, fragment or credentials."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HostsConfigError(f"invalid {what} {url!r}: expected http(s)://HOST[:PORT][/PATH]")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise HostsConfigError(f"invalid {what} {url!r}: no query, fragment or credentials allowed")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise HostsConfigError(f"invalid {what} {url!r}: bad port") from None
    return url.strip().rstrip("/")


def check_duration(value: str) -> str:
    if not _GO_DURATION.match(value):
        raise HostsConfigError(
            f"invalid duration {value!r}: use a Go duration such as 200ms, 1s or 1m30s"
        )
    return value


def upstream_server(registry: str, insecure: bool = False) -> str:
    """The registry's own URL: ``https://registry-1.docker.io`` for Docker Hub, else
    ``https://<registry>`` (``http://`` for a registry marked insecure)."""
    name = checked_registry(registry)
    if name == DEFAULT_HOST_DIR:
        raise HostsConfigError("the _default directory has no single upstream server")
    if name == DOCKER_HUB:
        return DOCKER_HUB_SERVER
    return f"{'http' if insecure else 'https'}://{name}"


def mirror_host(
    url: str,
    *,
    capabilities: Sequence[str] = DEFAULT_CAPABILITIES,
    skip_verify: bool | None = None,
    ca: Sequence[str] = (),
    dial_timeout: str | None = DEFAULT_DIAL_TIMEOUT,
) -> MirrorHost:
    caps = tuple(dict.fromkeys(c.strip().lower() for c in capabilities))
    unknown = [c for c in caps if c not in KNOWN_CAPABILITIES]
    if unknown or not caps:
        raise HostsConfigError(
            f"invalid capabilities {list(capabilities)!r}: choose from pull, resolve, push"
        )
    return MirrorHost(
        url=check_url(url, "mirror URL"),
        capabilities=caps,
        skip_verify=skip_verify,
        ca=tuple(ca),
        dial_timeout=check_duration(dial_timeout) if dial_timeout else None,
    )


def mirror_configs(
    registries: Iterable[str],
    mirror: MirrorHost,
    *,
    insecure: Iterable[str] = (),
    servers: Mapping[str, str] | None = None,
) -> list[HostsFile]:
    """One :class:`HostsFile` per name of each registry, each sending pulls to ``mirror``
    first: Docker Hub gets one under each of its names (``docker.io``, ``index.docker.io``,
    ``registry-1.docker.io``, ``registry.hub.docker.com``), since containerd looks up the
    directory, and sends ``?ns=``, under the name the reference uses (``ctr`` normalises none
    of them), and the agent maps every name to one upstream.

    ``insecure`` registries get an ``http://`` server; ``servers`` overrides the upstream URL
    of a registry (``{"registry.example": "https://mirror.example/v2"}``). Either may name a
    registry by any of its names.
    """
    insecure_set = {checked_registry(r) for r in insecure}
    overrides = {
        checked_registry(k): check_url(v, "server URL") for k, v in (servers or {}).items()
    }
    out: dict[str, HostsFile] = {}
    for raw in registries:
        name = checked_registry(raw)
        if name in overrides:
            server: str | None = overrides[name]
        elif name == DEFAULT_HOST_DIR:
            server = None
        else:
            server = upstream_server(name, insecure=name in insecure_set)
        for alias in registry_names(name):
            out[alias] = HostsFile(alias, server, (mirror,))
    if not out:
        raise HostsConfigError("name at least one registry (e.g. docker.io)")
    return list(out.values())


def agent_only(
    registry: str, agent_url: str, headers: tuple[tuple[str, str], ...] = ()
) -> HostsFile:
    """A hosts.toml whose only endpoint is the agent (no fallback to the upstream): what a
    pre-warm uses to import an image into containerd strictly from the agent's store.

    The agent is both the ``[host]`` and the ``server``: containerd 1.6 rejects a hosts.toml
    without a ``[host]`` table ("invalid `host` tree"), logs it, and then silently pulls
    straight from the registry as if there were no file."""
    url = check_url(agent_url, "agent URL")
    host = replace(mirror_host(url, dial_timeout=None), headers=headers)
    return HostsFile(checked_registry(registry), url, (host,))


# -- rendering ----------------------------------------------------------------------------------


def toml_string(value: str) -> str:
    """A TOML basic string (escapes quotes, backslashes and control characters)."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _string_array(values: Iterable[str]) -> str:
    return "[" + ", ".join(toml_string(v) for v in values) + "]"


def written_by_warmstart(text: str) -> bool:
    """Whether a hosts.toml is one warmstart wrote (its first line is the marker)."""
    return bool(_MARKER.match(text))


def render_hosts_toml(config: HostsFile, writer: str = DEFAULT_WRITER) -> str:
    """The file's text; its first line names ``writer`` (the marker of a warmstart file)."""
    if not config.hosts:
        # containerd 1.6 cannot parse a file without [host] tables and then ignores the file.
        raise HostsConfigError(f"{config.registry}: a hosts.toml needs at least one [host]")
    lines = [
        f"# {config.registry}: written by `{writer}`.",
        "# containerd tries each [host] in order (adding ?ns=<registry>), then the server.",
    ]
    if config.server is not None:
        lines.append(f"server = {toml_string(config.server)}")
    for host in config.hosts:
        lines += ["", f"[host.{toml_string(host.url)}]"]
        lines.append(f"  capabilities = {_string_array(host.capabilities)}")
        if host.dial_timeout:
            lines.append(
                "  # read by containerd >= 2.1; 1.6/1.7 ignore it (fixed 30 s dial timeout)"
            )
            lines.append(f"  dial_timeout = {toml_string(host.dial_timeout)}")
        if host.skip_verify is not None:
            lines.append(f"  skip_verify = {'true' if host.skip_verify else 'false'}")
        if host.ca:
            lines.append(f"  ca = {_string_array(host.ca)}")
        if host.override_path:
            lines.append("  override_path = true")
        if host.headers:
            lines.append(f"  [host.{toml_string(host.url)}.header]")
            for name, value in host.headers:
                lines.append(f"    {toml_string(name)} = {_string_array([value])}")
    return "\n".join(lines) + "\n"


# -- writing (the only I/O) ---------------------------------------------------------------------


class WriteOutcome(StrEnum):
    WRITTEN = "written"  # new or changed
    UNCHANGED = "unchanged"  # the same text was there already: left alone
    FOREIGN = "foreign"  # a file warmstart did not write: left alone


def _atomic_write(target: Path, text: str) -> None:
    """Temp file in the same directory + rename: containerd re-reads the file on every pull
    and must never see half of it."""
    fd, tmp = tempfile.mkstemp(prefix=".hosts.toml.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_hosts_dir(out: Path, configs: Iterable[HostsFile]) -> list[Path]:
    """Write ``out/<registry>/hosts.toml`` for each config (atomically), replacing any file."""
    written = []
    for config in configs:
        directory = Path(out) / config.directory
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / "hosts.toml"
        _atomic_write(target, render_hosts_toml(config))
        written.append(target)
    return written


def write_hosts_file(
    out: Path, config: HostsFile, writer: str = DEFAULT_WRITER
) -> tuple[Path, WriteOutcome]:
    """Write ``out/<registry>/hosts.toml`` unless the same text is there already or the file
    there is not warmstart's (no marker): an operator's own file is never replaced."""
    text = render_hosts_toml(config, writer)
    directory = Path(out) / config.directory
    target = directory / "hosts.toml"
    try:
        current: str | None = target.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        current = None
    if current == text:
        return target, WriteOutcome.UNCHANGED
    if current is not None and not written_by_warmstart(current):
        return target, WriteOutcome.FOREIGN
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write(target, text)
    return target, WriteOutcome.WRITTEN
