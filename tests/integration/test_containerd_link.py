"""One copy of the bytes per node, with real containerd 1.6, a real registry and real agents.

The agent hard-links its verified blobs into containerd's content store before containerd opens
its writers; containerd (content sharing policy ``shared``) then commits them with no transfer.
Blob GETs that reach the agent are recorded by a pass-through proxy in front of it; upstream
blob GETs are read from the registry's access log.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.containerd import ContainerdFactory, ctr_pull, image_state, write_hosts
from tests.support.fault_proxy import FaultProxy
from tests.support.images import BuiltImage, ImageBuilder
from warmstart.containerd.plugins import content_dir
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.containerd import ContainerdProcess
from warmstart_harness.testbed.registry import RegistryProcess

MiB = 1 << 20


def node_agent(
    agents: Callable[..., AgentProcess],
    registry: RegistryProcess,
    ctd: ContainerdProcess,
    **settings: Any,
) -> AgentProcess:
    """An agent configured as on a containerd node: only the socket; the content store is found
    by asking containerd."""
    return agents(
        upstreams={registry.host: registry.url},
        settings={
            "containerd_socket": str(ctd.socket),
            "containerd_namespace": ctd.namespace,
            **settings,
        },
    )


def blob_gets(recorder: FaultProxy) -> list[str]:
    return [r.path for r in recorder.requests if "/blobs/" in r.path and r.method == "GET"]


def agent_blob(agent: AgentProcess, digest: str) -> Path:
    algorithm, hex_ = digest.split(":")
    return agent.store / "blobs" / algorithm / hex_


def containerd_blob(ctd: ContainerdProcess, digest: str) -> Path:
    algorithm, hex_ = digest.split(":")
    return content_dir(ctd.root) / "blobs" / algorithm / hex_


def all_blobs(image: BuiltImage) -> list[str]:
    return [image.config_digest, *image.layer_digests]


def metric(agent: AgentProcess, name: str) -> float:
    status, body = agent.get("/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_warm_image_pulls_with_no_blob_transfer_and_survives_containerd_gc(
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    fault_proxy: Callable[..., FaultProxy],
    containerd: ContainerdFactory,
    agents: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    image = image_builder.build(registry, "team/warm", "v1", [6 * MiB, 2 * MiB], seed="link")
    ctd = containerd()
    agent = node_agent(agents, registry, ctd)
    status, body = agent.prewarm(image.reference)  # warm: the store holds it, containerd not
    assert status == 200, body
    recorder = fault_proxy(agent.url)
    hosts = write_hosts(tmp_path / "hosts", registry.host, recorder.url, registry.url)

    mark = registry.mark()
    result, _ = ctr_pull(ctd, image.reference, hosts)  # a plain pull, as kubelet's would be
    assert result.returncode == 0, result.stderr
    assert blob_gets(recorder) == []
    assert registry.blob_gets(since=mark) == 0
    state = image_state(ctd, image.reference)
    assert state is not None and state.complete and state.tier == "hot"
    listed = ctd.ctr("content", "ls").stdout
    for digest in all_blobs(image):
        assert digest in listed
        # one copy of the bytes: containerd's file is the agent's file
        assert (
            os.stat(containerd_blob(ctd, digest)).st_ino
            == os.stat(agent_blob(agent, digest)).st_ino
        )
    assert metric(agent, "warmstart_agent_linked_blobs_total") == len(all_blobs(image))

    # containerd drops the image and collects its content: the agent's copies stay intact.
    ctd.ctr("images", "rm", "--sync", image.reference)
    for digest in all_blobs(image):
        assert not containerd_blob(ctd, digest).exists()
        assert os.stat(agent_blob(agent, digest)).st_nlink == 1
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "warmstart.cli.main",
            "store",
            "verify",
            "--store",
            str(agent.store),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr

    mark = registry.mark()
    result, _ = ctr_pull(ctd, image.reference, hosts)
    assert result.returncode == 0, result.stderr
    assert blob_gets(recorder) == [] and registry.blob_gets(since=mark) == 0
    state = image_state(ctd, image.reference)
    assert state is not None and state.complete


def test_cold_pull_through_the_agent_is_linked_not_streamed_into_containerd(
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    fault_proxy: Callable[..., FaultProxy],
    containerd: ContainerdFactory,
    agents: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    image = image_builder.build(registry, "team/cold", "v1", [8 * MiB, MiB, 300_000], seed="c")
    ctd = containerd()
    agent = node_agent(agents, registry, ctd)
    recorder = fault_proxy(agent.url)
    hosts = write_hosts(tmp_path / "hosts", registry.host, recorder.url, registry.url)
    mark = registry.mark()
    result, _ = ctr_pull(ctd, image.reference, hosts)
    assert result.returncode == 0, result.stderr
    fetched = registry.blob_get_requests(since=mark, successful_only=True)
    assert sorted(r.blob_digest for r in fetched) == sorted(all_blobs(image))  # each once
    assert blob_gets(recorder) == []  # fetched by the agent while the manifest answer waited
    state = image_state(ctd, image.reference)
    assert state is not None and state.tier == "hot"


def test_with_no_wait_the_manifest_is_answered_at_once_and_the_pull_still_completes(
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    containerd: ContainerdFactory,
    agents: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    image = image_builder.build(registry, "team/nowait", "v1", [4 * MiB, MiB], seed="nowait")
    ctd = containerd()
    agent = node_agent(agents, registry, ctd, link_wait=0)
    hosts = write_hosts(tmp_path / "hosts", registry.host, agent.url, registry.url)
    mark = registry.mark()
    result, _ = ctr_pull(ctd, image.reference, hosts)
    assert result.returncode == 0, result.stderr
    fetched = registry.blob_get_requests(since=mark, successful_only=True)
    assert sorted(r.blob_digest for r in fetched) == sorted(all_blobs(image))  # still once
    state = image_state(ctd, image.reference)
    assert state is not None and state.tier == "hot"


@pytest.mark.parametrize("damage", ["truncate", "same-size"])
def test_a_corrupt_store_file_is_never_linked(
    damage: str,
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    containerd: ContainerdFactory,
    agents: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    image = image_builder.build(registry, "team/bad", damage, [2 * MiB], seed=f"bad-{damage}")
    ctd = containerd()
    agent = node_agent(agents, registry, ctd)
    status, body = agent.prewarm(image.reference)
    assert status == 200, body
    # The config is small: linking hashes it again. The layer is checked by size.
    victim = image.config_digest if damage == "same-size" else image.layer_digests[0]
    path = agent_blob(agent, victim)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    hosts = write_hosts(tmp_path / "hosts", registry.host, agent.url, registry.url)
    result, _ = ctr_pull(ctd, image.reference, hosts)
    assert result.returncode == 0, result.stderr  # from the agent's other sources, or upstream
    # containerd's copy is good: the damaged file was refused, removed, and fetched again.
    algorithm, hex_ = victim.split(":")
    assert hashlib.new(algorithm, containerd_blob(ctd, victim).read_bytes()).hexdigest() == hex_
    assert hashlib.new(algorithm, path.read_bytes()).hexdigest() == hex_
    state = image_state(ctd, image.reference)
    assert state is not None and state.tier == "hot"


def test_hot_prewarm_links_every_blob_and_unpacks_only(
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    containerd: ContainerdFactory,
    agents: Callable[..., AgentProcess],
) -> None:
    image = image_builder.build(registry, "team/hot", "v1", [3 * MiB, MiB], seed="hotlink")
    ctd = containerd()
    agent = node_agent(agents, registry, ctd)
    status, body = agent.prewarm(image.reference)
    assert status == 200, body
    status, body = agent.prewarm(image.reference, hot=True)
    assert status == 200, body
    link = body["containerd"]["link"]
    assert link["linked"] == len(all_blobs(image)) and link["missing"] == 0
    assert body["sources"] == {"local": sum(image.layer_sizes) + image.config_size}
    state = image_state(ctd, image.reference)
    assert state is not None and state.tier == "hot"


@pytest.fixture
def other_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs: another filesystem than containerd's root (unmounted even on failure)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs: {done.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


@pytest.mark.parametrize("mode", ["hardlink", "copy"])
def test_a_store_on_another_filesystem_is_reported_and_pulls_still_work(
    mode: str,
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    fault_proxy: Callable[..., FaultProxy],
    containerd: ContainerdFactory,
    agents: Callable[..., AgentProcess],
    other_filesystem: Path,
    tmp_path: Path,
) -> None:
    image = image_builder.build(registry, "team/xfs", mode, [3 * MiB, MiB], seed=f"xfs-{mode}")
    ctd = containerd()
    agent = agents(
        upstreams={registry.host: registry.url},
        store=other_filesystem / "store",
        settings={
            "containerd_socket": str(ctd.socket),
            "containerd_namespace": ctd.namespace,
            "containerd_link": mode,
        },
    )
    log = agent.log_tail(50)
    assert "another filesystem" in log
    status, body = agent.prewarm(image.reference)
    assert status == 200, body
    recorder = fault_proxy(agent.url)
    hosts = write_hosts(tmp_path / "hosts", registry.host, recorder.url, registry.url)
    mark = registry.mark()
    result, _ = ctr_pull(ctd, image.reference, hosts)
    assert result.returncode == 0, result.stderr
    assert registry.blob_gets(since=mark) == 0
    state = image_state(ctd, image.reference)
    assert state is not None and state.tier == "hot"
    if mode == "copy":  # copied, verified, so containerd transfers nothing
        assert blob_gets(recorder) == []
        assert metric(agent, 'warmstart_agent_linked_blobs_total{outcome="copied"}') == 3
    else:  # not linked: containerd streams the blobs from the agent, as before
        assert len(blob_gets(recorder)) == len(all_blobs(image))
        assert metric(agent, "warmstart_agent_linked_blobs_total") == 0


def test_a_containerd_root_that_is_not_containerds_stops_the_agent_with_one_line(
    tmp_path: Path,
) -> None:
    bogus = tmp_path / "not-containerd"
    bogus.mkdir()
    config = tmp_path / "agent.toml"
    config.write_text(f'containerd_root = "{bogus}"\n')
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "warmstart.cli.main",
            "agent",
            "--config",
            str(config),
            "--listen",
            "127.0.0.1:0",
            "--store",
            str(tmp_path / "store"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "is not containerd's content store" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_image_containerd_pulled_without_the_agent_is_hot_in_status(
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    containerd: ContainerdFactory,
    agents: Callable[..., AgentProcess],
) -> None:
    image = image_builder.build(registry, "team/direct", "v1", [MiB], seed="direct")
    ctd = containerd()
    result, _ = ctr_pull(ctd, image.reference, None, "--plain-http")
    assert result.returncode == 0, result.stderr
    agent = node_agent(agents, registry, ctd)  # its store has no record of the image
    tiers = {i["reference"]: (i["tier"], i["size"]) for i in agent.status()["images"]}
    assert tiers == {image.reference: ("hot", 0)}
