"""One name per registry: the table every layer (references, the agent's config and ``?ns=``,
the registry client's endpoints, containerd's hosts.toml) goes by."""

from __future__ import annotations

import pytest

from warmstart.agent.paths import choose_registry
from warmstart.containerd.hosts import mirror_configs, mirror_host
from warmstart.oci import parse_reference
from warmstart.oci.registry_name import (
    DOCKER_HUB,
    DOCKER_HUB_ALIASES,
    canonical_registry,
    registry_names,
    registry_of_url,
)
from warmstart.registry.endpoints import canonical_registry as endpoints_canonical
from warmstart.registry.endpoints import resolve_endpoint


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("docker.io", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("registry.hub.docker.com", "docker.io"),
        ("Registry.Hub.Docker.COM", "docker.io"),
        (" index.docker.io/ ", "docker.io"),
        ("DOCKER.IO", "docker.io"),
        # not Docker Hub's registry API under another name: left alone
        ("hub.docker.com", "hub.docker.com"),
        ("docker.io:5000", "docker.io:5000"),
        ("registry.hub.docker.com:8443", "registry.hub.docker.com:8443"),
        ("mirror.gcr.io", "mirror.gcr.io"),
        ("quay.io", "quay.io"),
        ("Reg.Example:5000", "reg.example:5000"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("localhost", "localhost"),
        ("[::1]:5000", "[::1]:5000"),
    ],
)
def test_canonical_registry(name: str, canonical: str) -> None:
    assert canonical_registry(name) == canonical
    assert canonical_registry(canonical) == canonical  # idempotent


def test_the_alias_set() -> None:
    assert DOCKER_HUB == "docker.io"
    assert (
        frozenset({"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
        == DOCKER_HUB_ALIASES
    )


def test_registry_names_lists_every_name_containerd_may_use() -> None:
    hub = registry_names("registry.hub.docker.com")
    assert hub[0] == "docker.io"  # the canonical name first
    assert set(hub) == {"docker.io", *DOCKER_HUB_ALIASES}
    assert registry_names("Reg.Example:5000") == ("reg.example:5000",)


@pytest.mark.parametrize("name", ["docker.io", *sorted(DOCKER_HUB_ALIASES)])
def test_every_layer_uses_the_same_table(name: str) -> None:
    """References, the registry client, credentials, ``?ns=`` and hosts.toml agree."""
    assert parse_reference(f"{name}/library/app:v1").registry == DOCKER_HUB
    assert parse_reference(f"{name}/app:v1").repository == "library/app"
    assert endpoints_canonical(name) == DOCKER_HUB
    assert resolve_endpoint(name).registry == DOCKER_HUB
    assert registry_of_url(f"https://{name}/v1/") == DOCKER_HUB
    assert choose_registry([name], {DOCKER_HUB: object()}, None) == DOCKER_HUB
    directories = [c.directory for c in mirror_configs([name], mirror_host("http://127.0.0.1:1"))]
    assert sorted(directories) == sorted(registry_names(DOCKER_HUB))
