"""From a registry name (as in an image reference) to the URL its API lives at.

``docker.io`` (every name of Docker Hub, as :func:`warmstart.oci.registry_name.canonical_registry`
says; re-exported here) is served by ``https://registry-1.docker.io``. Every other registry is
reached over HTTPS unless the user listed its ``host:port`` as insecure, the same rule as
docker's ``insecure-registries`` minus the silent fallback: we never try plain HTTP on our own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from warmstart.oci.registry_name import (
    DOCKER_HUB,
    DOCKER_HUB_API_HOST,
    canonical_registry,
    registry_of_url,
)


def split_host_port(netloc: str) -> tuple[str, int | None]:
    """``host:5000`` -> (``host``, 5000); ``[::1]:5000`` -> (``::1``, 5000)."""
    netloc = netloc.strip()
    if netloc.startswith("["):
        close = netloc.find("]")
        if close < 0:
            return netloc, None
        host, rest = netloc[1:close], netloc[close + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    elif netloc.count(":") == 1:
        host, port = netloc.split(":", 1)
    else:
        host, port = netloc, ""
    return host.lower(), int(port) if port.isdigit() else None


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (a port, if any, is ignored)."""
    name, _ = split_host_port(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def normalize_insecure(hosts: Iterable[str]) -> frozenset[str]:
    """Entries of an insecure list as canonical ``host[:port]`` (a scheme or path is dropped)."""
    return frozenset(name for name in map(registry_of_url, hosts) if name)


def is_insecure(netloc: str, insecure: frozenset[str]) -> bool:
    """Whether ``netloc`` (host[:port]) is listed exactly in the normalised ``insecure`` set."""
    return canonical_registry(netloc) in insecure


@dataclass(frozen=True)
class Endpoint:
    """Where the API of one registry lives."""

    registry: str  # canonical name, e.g. docker.io or 127.0.0.1:5000
    scheme: str  # https or http
    netloc: str  # host[:port] to connect to

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    @property
    def origin(self) -> tuple[str, str, int]:
        return origin_of(self.base_url)


def resolve_endpoint(registry: str, insecure: frozenset[str] = frozenset()) -> Endpoint:
    """The endpoint of ``registry``; plain HTTP only if it is in ``insecure``."""
    name = canonical_registry(registry)
    if not name or any(c in name for c in "/?#@ \t"):
        raise ValueError(f"invalid registry host {registry!r}")
    if name == DOCKER_HUB:
        return Endpoint(name, "https", DOCKER_HUB_API_HOST)
    scheme = "http" if is_insecure(name, normalize_insecure(insecure)) else "https"
    return Endpoint(name, scheme, name)


def base_url(registry: str, insecure: frozenset[str] = frozenset()) -> str:
    return resolve_endpoint(registry, insecure).base_url


def origin_of(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) with the default port filled in: what same-origin means."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if scheme == "https" else 80 if scheme == "http" else 0)
    return scheme, host, port


def may_send_credentials(url: str, insecure: frozenset[str]) -> bool:
    """Credentials may go over HTTPS anywhere, over plain HTTP only to loopback or insecure hosts.

    For plain HTTP, a host counts as insecure if any insecure entry names it (on any port): a
    registry marked insecure commonly has its token server on the same host, another port.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "https":
        return True
    if scheme != "http":
        return False
    if is_loopback(parts.netloc):
        return True
    listed = normalize_insecure(insecure)
    if is_insecure(parts.netloc, listed):
        return True
    host, _ = split_host_port(parts.netloc)
    return any(split_host_port(entry)[0] == host for entry in listed)


__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_API_HOST",
    "Endpoint",
    "base_url",
    "canonical_registry",
    "is_insecure",
    "is_loopback",
    "may_send_credentials",
    "normalize_insecure",
    "origin_of",
    "resolve_endpoint",
    "split_host_port",
]
