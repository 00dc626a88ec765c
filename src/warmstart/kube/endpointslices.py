"""Peer URLs from the EndpointSlices of a Service (pure).

An EndpointSlice (``discovery.k8s.io/v1``) lists ``endpoints`` (each ``addresses`` and
``conditions``) and the ``ports`` they serve. Kubernetes: "ready ... nil should be interpreted as
true"; a terminating endpoint has ``ready: false``. Slices of ``addressType: FQDN`` are skipped
(peers are addressed by IP).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def service_selector(service: str) -> str:
    """The label selector of a Service's EndpointSlices."""
    return f"{SERVICE_NAME_LABEL}={service}"


def _port(ports: Any, port_name: str) -> int | None:
    """The port named ``port_name``, else the slice's only port; None if neither."""
    if not isinstance(ports, list):
        return None
    usable = [
        p
        for p in ports
        if isinstance(p, Mapping)
        and isinstance(p.get("port"), int)
        and not isinstance(p.get("port"), bool)
        and 0 < p["port"] < 65536
        and (p.get("protocol") or "TCP") == "TCP"
    ]
    named = [p for p in usable if (p.get("name") or "") == port_name]
    if named:
        return int(named[0]["port"])
    if len(ports) == 1 and len(usable) == 1:
        return int(usable[0]["port"])
    return None


def _ready(endpoint: Mapping[str, Any]) -> bool:
    conditions = endpoint.get("conditions")
    if not isinstance(conditions, Mapping):
        return True
    return conditions.get("ready") is not False


def _host(address: Any) -> str | None:
    if not isinstance(address, str):
        return None
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    return f"[{ip.compressed}]" if ip.version == 6 else ip.compressed


def peers_from_endpointslices(
    slices: Iterable[Mapping[str, Any]], port_name: str = "http", scheme: str = "http"
) -> list[str]:
    """``scheme://address:port`` of every ready endpoint (IPv6 bracketed), deduplicated and
    sorted. The port is the slice's port named ``port_name``, else its only port; a slice
    with neither is skipped."""
    out: set[str] = set()
    for eps in slices:
        if not isinstance(eps, Mapping) or eps.get("addressType") == "FQDN":
            continue
        port = _port(eps.get("ports"), port_name)
        endpoints = eps.get("endpoints")
        if port is None or not isinstance(endpoints, list):
            continue
        for endpoint in endpoints:
            if not isinstance(endpoint, Mapping) or not _ready(endpoint):
                continue
            addresses = endpoint.get("addresses")
            for address in addresses if isinstance(addresses, list) else ():
                host = _host(address)
                if host is not None:
                    out.add(f"{scheme}://{host}:{port}")
    return sorted(out)


__all__ = ["SERVICE_NAME_LABEL", "peers_from_endpointslices", "service_selector"]
