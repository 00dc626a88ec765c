"""peers_from_endpointslices: ready endpoints only, the port by name, IPv6 bracketed."""

from __future__ import annotations

from typing import Any

import pytest

from warmstart.kube.endpointslices import peers_from_endpointslices, service_selector

HTTP = [{"name": "http", "port": 5050, "protocol": "TCP"}]


def eps(*endpoints: dict[str, Any], ports: Any = HTTP, kind: str = "IPv4") -> dict[str, Any]:
    return {"addressType": kind, "endpoints": list(endpoints), "ports": ports}


def ep(*addresses: str, ready: bool | None = True, conditions: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"addresses": list(addresses)}
    if conditions:
        out["conditions"] = {} if ready is None else {"ready": ready}
    return out


CASES = [
    ("empty", [], []),
    ("one ready", [eps(ep("10.0.0.1"))], ["http://10.0.0.1:5050"]),
    (
        "not ready is left out",
        [eps(ep("10.0.0.1"), ep("10.0.0.2", ready=False))],
        ["http://10.0.0.1:5050"],
    ),
    ("ready absent counts as ready", [eps(ep("10.0.0.3", ready=None))], ["http://10.0.0.3:5050"]),
    ("no conditions at all", [eps(ep("10.0.0.4", conditions=False))], ["http://10.0.0.4:5050"]),
    (
        "IPv6 bracketed and compressed",
        [eps(ep("fd00:0:0::0001"), kind="IPv6")],
        ["http://[fd00::1]:5050"],
    ),
    (
        "sorted and deduplicated across slices",
        [eps(ep("10.0.0.9"), ep("10.0.0.1")), eps(ep("10.0.0.1"))],
        ["http://10.0.0.1:5050", "http://10.0.0.9:5050"],
    ),
    (
        "port by name among several",
        [
            eps(
                ep("10.0.0.1"),
                ports=[{"name": "metrics", "port": 9100}, {"name": "http", "port": 6000}],
            )
        ],
        ["http://10.0.0.1:6000"],
    ),
    (
        "the only port when none is named http",
        [eps(ep("10.0.0.1"), ports=[{"port": 7000}])],
        ["http://10.0.0.1:7000"],
    ),
    (
        "several ports, none named: skipped",
        [eps(ep("10.0.0.1"), ports=[{"name": "a", "port": 1}, {"name": "b", "port": 2}])],
        [],
    ),
    ("no ports: skipped", [eps(ep("10.0.0.1"), ports=[])], []),
    (
        "UDP port is not ours",
        [eps(ep("10.0.0.1"), ports=[{"name": "http", "port": 53, "protocol": "UDP"}])],
        [],
    ),
    ("FQDN slices skipped", [eps(ep("agent-0.example"), kind="FQDN")], []),
    ("garbage addresses skipped", [eps(ep("not-an-ip", "10.0.0.1"))], ["http://10.0.0.1:5050"]),
    ("null endpoints", [{"addressType": "IPv4", "endpoints": None, "ports": HTTP}], []),
    (
        "several addresses of one endpoint",
        [eps(ep("10.0.0.2", "10.0.0.1"))],
        ["http://10.0.0.1:5050", "http://10.0.0.2:5050"],
    ),
]


@pytest.mark.parametrize(("slices", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_peers_from_endpointslices(slices: list[dict[str, Any]], expected: list[str]) -> None:
    assert peers_from_endpointslices(slices) == expected


def test_port_name_and_scheme() -> None:
    slices = [
        eps(ep("10.0.0.1"), ports=[{"name": "peer", "port": 8443}, {"name": "http", "port": 1}])
    ]
    assert peers_from_endpointslices(slices, port_name="peer", scheme="https") == [
        "https://10.0.0.1:8443"
    ]


def test_service_selector() -> None:
    assert service_selector("warmstart-agent") == "kubernetes.io/service-name=warmstart-agent"
