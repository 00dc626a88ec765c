"""Node setup against real containerd 1.6: the agent (a real process) writes a hosts.toml per
upstream into ``containerd_certs_dir`` at start, a plain ``ctr images pull --hosts-dir`` goes
through it, and its check of containerd's CRI ``config_path`` reads the real config file:
ok when the file names the directory (with the lines the agent's message recommends, which
containerd accepts), one log line and ``/status`` when it does not — the agent serves either way.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.containerd import ContainerdFactory, ctr_pull, image_state
from tests.support.images import ImageBuilder
from warmstart.agent.api import StatusResponse
from warmstart.containerd.cri_config import fix_lines
from warmstart.containerd.hosts import written_by_warmstart
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.registry import RegistryProcess

MiB = 1 << 20


def served_blob_requests(agent: AgentProcess) -> float:
    status, text = agent.get("/metrics")
    assert status == 200
    total = 0.0
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            if s.name == "warmstart_agent_requests_total" and s.labels.get("route") == "blob":
                total += s.value
    return total


def node_status(agent: AgentProcess) -> StatusResponse:
    return StatusResponse.model_validate(agent.status())


def test_agent_writes_hosts_toml_and_containerd_pulls_through_it(
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    containerd: ContainerdFactory,
    agents: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    certs = tmp_path / "certs.d"
    # containerd's config as the agent's fix says it should be (containerd must accept it).
    ctd = containerd(extra_config="\n" + fix_lines(str(certs)).replace("  ", "\n  ", 1) + "\n")
    image = image_builder.build(registry, "team/app", "v1", [MiB, MiB // 2], seed="node-setup")
    agent = agents(
        upstreams={registry.host: registry.url},
        settings={"containerd_certs_dir": str(certs), "containerd_config": str(ctd.config)},
    )
    hosts = certs / registry.host / "hosts.toml"
    text = hosts.read_text()
    assert written_by_warmstart(text) and "written by `warmstart agent`" in text
    doc = tomllib.loads(text)
    assert doc["server"] == registry.url and list(doc["host"]) == [agent.url]
    setup = node_status(agent).node_setup
    assert setup is not None
    assert setup.hosts_written == [str(hosts)] and setup.config_path_ok is True
    assert setup.message == "note: " + str(ctd.config) + " disables the CRI plugin"

    mark = registry.mark()
    before = served_blob_requests(agent)
    result, _ = ctr_pull(ctd, image.reference, certs)
    assert result.returncode == 0, result.stderr
    state = image_state(ctd, image.reference)
    assert state is not None and state.digest == image.manifest_digest
    assert served_blob_requests(agent) - before >= len(image.layer_digests)
    # Every upstream blob GET was the agent's, none containerd's own.
    agents_gets = {r.user_agent.split("/")[0] for r in registry.blob_get_requests(since=mark)}
    assert agents_gets == {"warmstart-agent"}

    # A restart leaves the identical file alone.
    inode = hosts.stat().st_ino
    agent.restart()
    setup = node_status(agent).node_setup
    assert setup is not None and setup.hosts_written == [] and setup.hosts_unchanged == [str(hosts)]
    assert hosts.stat().st_ino == inode


def test_config_path_missing_is_one_line_and_the_agent_serves(
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    containerd: ContainerdFactory,
    agents: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    certs = tmp_path / "certs.d"
    foreign = certs / "other.example" / "hosts.toml"
    foreign.parent.mkdir(parents=True)
    foreign.write_text('server = "https://other.example"\n')
    ctd = containerd()  # the fixture's config: no config_path
    image = image_builder.build(registry, "team/app", "v2", [MiB], seed="no-config-path")
    agent = agents(
        upstreams={registry.host: registry.url},
        settings={
            "containerd_certs_dir": str(certs),
            "containerd_config": str(ctd.config),
            "upstreams": {"other.example": {}},
        },
    )
    setup = node_status(agent).node_setup
    assert setup is not None and setup.config_path_ok is False
    assert "restart containerd" in setup.message and str(certs) in setup.message
    assert setup.hosts_skipped == [str(foreign)]
    assert foreign.read_text() == 'server = "https://other.example"\n'
    log = agent.log.read_text().splitlines()
    fix = [line for line in log if "containerd does not read the agent's hosts.toml" in line]
    assert len(fix) == 1 and "config_path" in fix[0]
    assert agent.healthy()
    result, _ = ctr_pull(ctd, image.reference, certs)  # --hosts-dir still works
    assert result.returncode == 0, result.stderr
    assert served_blob_requests(agent) >= 1
