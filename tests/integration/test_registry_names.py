"""Docker Hub has several names (``docker.io``, ``index.docker.io``, ``registry-1.docker.io``,
``registry.hub.docker.com``); an agent configured with any of them serves ``?ns=`` with any of
them, and the hosts.toml files it writes send containerd's pulls named any of them through it.

The upstream is a local docker-registry: only its NAME is Docker Hub's (``--upstream
registry.hub.docker.com=http://127.0.0.1:PORT``), and the hosts.toml fallback server is that
local registry too, so no request leaves 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.agent_log import assert_no_tracebacks
from tests.support.containerd import ContainerdFactory, ctr_pull, image_state
from tests.support.images import BuiltImage, ImageBuilder
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.registry import RegistryProcess

HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")
OCI_ACCEPT = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
DEAD_END = "http://127.0.0.1:9"


def hub_agent(
    agents: Callable[..., AgentProcess], name: str, registry: RegistryProcess, tmp_path: Path
) -> AgentProcess:
    config = tmp_path / "containerd-config.toml"
    config.write_text("version = 2\n")
    # A registry name without a directory of its own goes to containerd's _default: a dead
    # loopback port, never a DNS lookup of a real registry.
    dead_end = tmp_path / "certs.d" / "_default"
    dead_end.mkdir(parents=True)
    (dead_end / "hosts.toml").write_text(
        f'server = "{DEAD_END}"\n[host."{DEAD_END}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    return agents(
        upstreams={name: registry.url},  # --upstream NAME=http://127.0.0.1:PORT
        settings={
            "containerd_certs_dir": str(tmp_path / "certs.d"),
            "containerd_config": str(config),
            "containerd_link": "off",
        },
    )


def get(agent: AgentProcess, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("upstream_name", HUB_NAMES)
def test_an_upstream_named_any_way_serves_ns_named_any_way(
    upstream_name: str,
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    agents: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    image = image_builder.build(registry, "library/app", "v1", layer_sizes=[300_000], seed=5)
    agent = hub_agent(agents, upstream_name, registry, tmp_path)
    for ns in HUB_NAMES:
        status, body = get(agent, f"/v2/library/app/manifests/v1?ns={ns}", OCI_ACCEPT)
        assert (status, body) == (200, image.manifest), (ns, status, body[:200])
        layer = image.layer_digests[0]
        status, body = get(agent, f"/v2/library/app/blobs/{layer}?ns={ns}", {})
        assert status == 200 and len(body) == image.layer_sizes[0], (ns, status)
    for other in ("hub.docker.com", "docker.io:5000", "evil.example"):
        status, body = get(agent, f"/v2/library/app/manifests/v1?ns={other}", OCI_ACCEPT)
        assert status == 403 and json.loads(body)["errors"][0]["code"] == "DENIED", other
    assert list(agent.status()["upstreams"]) == ["docker.io"]

    # hosts.toml under every name containerd may look up: this agent first, then the upstream
    certs = tmp_path / "certs.d"
    assert sorted(p.name for p in certs.iterdir()) == sorted([*HUB_NAMES, "_default"])
    for name in HUB_NAMES:
        doc = tomllib.loads((certs / name / "hosts.toml").read_text())
        assert doc["server"] == registry.url
        assert list(doc["host"]) == [agent.url]
    assert_no_tracebacks(agent.log)


def through_the_agent(registry: RegistryProcess, since: int) -> bool:
    """Every request since ``since`` came from the agent (containerd's own carry ``?ns=``)."""
    asked = registry.requests(since)
    return bool(asked) and not any("ns=" in r.path for r in asked)


@pytest.mark.parametrize(
    ("upstream_name", "pulled_as"),
    [("registry.hub.docker.com", "docker.io"), ("docker.io", "registry.hub.docker.com")],
)
def test_containerd_pulls_through_the_agent_whatever_hub_name_either_side_uses(
    upstream_name: str,
    pulled_as: str,
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    agents: Callable[..., AgentProcess],
    containerd: ContainerdFactory,
    tmp_path: Path,
) -> None:
    image: BuiltImage = image_builder.build(
        registry, "library/app", "v1", layer_sizes=[1 << 20], seed=6
    )
    agent = hub_agent(agents, upstream_name, registry, tmp_path)
    ctd = containerd()
    reference = f"{pulled_as}/library/app:v1"
    mark = registry.mark()
    result, _ = ctr_pull(ctd, reference, tmp_path / "certs.d")
    assert result.returncode == 0, result.stderr
    assert through_the_agent(registry, mark), registry.requests(mark)
    state = image_state(ctd, reference)
    assert state is not None and state.digest == image.manifest_digest
    log = agent.log.read_text(errors="replace")
    assert f'/v2/library/app/manifests/v1?ns={pulled_as} HTTP/1.1" 200' in log, log[-3000:]
    assert_no_tracebacks(agent.log)
