"""containerd 1.6 + the warmstart agent, all real: pulls through the agent via hosts.toml,
fallback when the agent dies mid-transfer, and hot pre-warm (content + unpacked snapshot).

Upstream blob requests are counted in the upstream registry's access log; requests that reach
the agent are recorded by a pass-through proxy in front of it where that matters.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.containerd import (
    ContainerdFactory,
    ctr_pull,
    ctr_pull_command,
    image_state,
    snapshot_count,
    write_hosts,
)
from tests.support.fault_proxy import FaultProxy
from tests.support.images import ImageBuilder
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.registry import RegistryProcess

MiB = 1 << 20


def upstream_agents(registry: RegistryProcess, since: int) -> set[str]:
    return {r.user_agent.split("/")[0] for r in registry.blob_get_requests(since=since)}


def test_second_node_pulls_with_zero_upstream_blob_requests(
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    containerd: ContainerdFactory,
    agents: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    image = image_builder.build(registry, "team/app", "v1", [2 * MiB, MiB], seed="through")
    agent = agents(upstreams={registry.host: registry.url})
    hosts = write_hosts(tmp_path / "hosts", registry.host, agent.url, registry.url)

    mark = registry.mark()
    first = containerd()
    result, _ = ctr_pull(first, image.reference, hosts)
    assert result.returncode == 0, result.stderr
    fetched = registry.blob_get_requests(since=mark, successful_only=True)
    assert sorted(r.blob_digest for r in fetched) == sorted(image.blobs)  # each blob once
    assert "containerd" not in upstream_agents(registry, mark)  # the agent fetched, not ctr

    mark = registry.mark()
    second = containerd()
    result, _ = ctr_pull(second, image.reference, hosts)
    assert result.returncode == 0, result.stderr
    assert registry.blob_gets(since=mark) == 0
    for ctd in (first, second):
        state = image_state(ctd, image.reference)
        assert state is not None and state.tier == "hot" and state.digest == image.manifest_digest


@pytest.mark.timeout(180)
def test_agent_killed_mid_transfer_containerd_falls_back_and_store_stays_clean(
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    fault_proxy: Callable[..., FaultProxy],
    containerd: ContainerdFactory,
    agents: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    image = image_builder.build(registry, "team/big", "v1", [40 * MiB], seed="crash")
    layer = image.layer_digests[0]
    slow = fault_proxy(registry)
    slow.throttle(5_000_000, path_contains="/blobs/")  # the agent's upstream: ~8 s for the layer
    agent = agents(upstreams={registry.host: slow.url})
    # containerd falls back to the registry itself (not throttled).
    hosts = write_hosts(tmp_path / "hosts", registry.host, agent.url, registry.url)
    ctd = containerd()
    mark = registry.mark()
    pull = subprocess.Popen(
        ctr_pull_command(ctd, image.reference, hosts),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(layer in r.path and r.body_bytes > 4 * MiB for r in list(slow.requests)):
            assert pull.poll() is None, f"ctr ended before the kill: {pull.stderr.read()}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the agent never started the layer transfer"
            time.sleep(0.05)
        agent.kill()  # SIGKILL by PID, mid-transfer
        _, stderr = pull.communicate(timeout=120)
    finally:
        if pull.poll() is None:
            pull.kill()
            pull.wait()
    assert pull.returncode == 0, stderr
    state = image_state(ctd, image.reference)
    assert state is not None and state.tier == "hot"
    direct = [
        r
        for r in registry.blob_get_requests(layer, since=mark)
        if r.user_agent.startswith("containerd")
    ]
    assert direct, "containerd did not fall back to the registry"

    agent.start()  # same port, same store: recovery runs on open
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
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # Only the layer the crash interrupted is left, kept for a resume.
    partial = agent.store / "ingest" / f"{layer.split(':', 1)[1]}.partial"
    leftovers = sorted(p.name for p in (agent.store / "ingest").iterdir())
    assert leftovers == [partial.name], leftovers
    kept = partial.stat().st_size
    assert kept > 0
    # The restarted agent serves the image again, asking its upstream only for the rest.
    slow.clear()
    proxy_mark = len(slow.requests)
    again = containerd()
    result, _ = ctr_pull(again, image.reference, hosts)
    assert result.returncode == 0, result.stderr
    asked = [
        r.header("Range")
        for r in slow.requests[proxy_mark:]
        if layer in r.path and r.method == "GET"
    ]
    assert asked == [f"bytes={kept}-"], asked
    assert list((agent.store / "ingest").iterdir()) == []


def test_hot_prewarm_leaves_nothing_for_the_next_pull(
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    fault_proxy: Callable[..., FaultProxy],
    containerd: ContainerdFactory,
    agents: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    image = image_builder.build(registry, "team/app", "v7", [3 * MiB, MiB, 500_000], seed="hot")
    ctd = containerd()
    agent = agents(
        upstreams={registry.host: registry.url},
        settings={"containerd_socket": str(ctd.socket), "containerd_namespace": ctd.namespace},
    )
    mark = registry.mark()
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "warmstart.cli.main",
            "prewarm",
            image.reference,
            "--agent",
            agent.url,
            "--hot",
            "--quiet",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    [outcome] = json.loads(cli.stdout)
    assert outcome["ok"] and outcome["result"]["containerd"]["unpacked"] is True
    fetched = registry.blob_get_requests(since=mark, successful_only=True)
    assert sorted(r.blob_digest for r in fetched) == sorted(image.blobs)  # via the agent, once
    assert upstream_agents(registry, mark) == {"warmstart-agent"}  # ctr never went upstream
    state = image_state(ctd, image.reference)
    assert state is not None and state.tier == "hot"
    assert snapshot_count(ctd) >= len(image.layer_digests)
    tiers = {i["reference"]: i["tier"] for i in agent.status()["images"]}
    assert tiers.get(image.reference) == "hot"

    # The next pull (as kubelet would do it, through the agent) fetches and unpacks nothing.
    recorder = fault_proxy(agent.url)
    hosts = write_hosts(tmp_path / "hosts", registry.host, recorder.url, registry.url)
    mark = registry.mark()
    snapshots = snapshot_count(ctd)
    result, _ = ctr_pull(ctd, image.reference, hosts)
    assert result.returncode == 0, result.stderr
    assert registry.blob_gets(since=mark) == 0
    assert [r.path for r in recorder.requests if "/blobs/" in r.path and r.method == "GET"] == []
    assert snapshot_count(ctd) == snapshots


def test_hot_prewarm_without_containerd_is_refused(
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    agents: Callable[..., AgentProcess],
) -> None:
    image = image_builder.build(registry, "team/app", "v8", [100_000], seed="nohot")
    agent = agents(upstreams={registry.host: registry.url})
    status, body = agent.prewarm(image.reference, hot=True)
    assert status == 409, body
    status, body = agent.prewarm(image.reference)
    assert status == 200, body
    assert body["blobs"] == len(image.blobs) and body["containerd"] is None


def test_registries_conf_mirror_for_cri_o_and_podman(
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    agents: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    """docs/configuration.md's registries.conf snippet, with skopeo (containers/image, like CRI-O and
    podman). These clients send no ?ns=, so the agent serves its default upstream."""
    image = image_builder.build(registry, "team/app", "v9", [200_000], seed="conf")
    agent = agents(upstreams={registry.host: registry.url})  # one upstream: the default
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f'[[registry]]\nprefix = "{registry.host}"\nlocation = "{registry.host}"\n'
        f"insecure = true\n\n"
        f'[[registry.mirror]]\nlocation = "{agent.host}"\ninsecure = true\n'
    )
    mark = registry.mark()
    copy = subprocess.run(
        [
            "skopeo",
            "--registries-conf",
            str(conf),
            "copy",
            f"docker://{image.reference}",
            f"oci:{tmp_path / 'out'}:v1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert copy.returncode == 0, copy.stderr
    assert upstream_agents(registry, mark) == {"warmstart-agent"}
    assert (tmp_path / "out/blobs/sha256" / image.layer_digests[0].split(":")[1]).exists()


def _prewarm_cli(
    ref: str, agent: AgentProcess, *creds: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "warmstart.cli.main",
            "prewarm",
            ref,
            "--agent",
            agent.url,
            "--hot",
            "--quiet",
            "--json",
            *creds,
        ],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
    )


def test_hot_prewarm_of_a_private_image_acts_for_the_client_who_asked(
    auth_registry: Any,
    image_builder: ImageBuilder,
    containerd: ContainerdFactory,
    agents: Callable[..., AgentProcess],
) -> None:
    """ctr sends no credentials to the agent: the import runs on a one-time grant carrying the
    identity of the client who asked, so a private image can be made hot, and only by a client
    the upstream accepts."""
    image = image_builder.build(auth_registry, "private/model", "v1", [2 * MiB, 300_000], seed="p")
    ctd = containerd()
    agent = agents(
        settings={
            "containerd_socket": str(ctd.socket),
            "containerd_namespace": ctd.namespace,
            "upstreams": {
                auth_registry.host: {
                    "url": auth_registry.url,
                    "username": "alice",
                    "password": "secret",
                    "ca_file": str(auth_registry.ca_file),
                }
            },
        },
    )
    anonymous = _prewarm_cli(image.reference, agent)
    assert anonymous.returncode != 0
    [outcome] = json.loads(anonymous.stdout)
    assert not outcome["ok"]
    assert outcome["error"].startswith("HTTP 401") and "needs credentials" in outcome["error"]
    assert image_state(ctd, image.reference) is None

    wrong = _prewarm_cli(image.reference, agent, "-u", "alice", "--password-stdin", stdin="nope\n")
    assert wrong.returncode != 0
    assert "refused these credentials" in json.loads(wrong.stdout)[0]["error"]
    assert image_state(ctd, image.reference) is None

    ok = _prewarm_cli(image.reference, agent, "-u", "alice", "--password-stdin", stdin="secret\n")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    [outcome] = json.loads(ok.stdout)
    assert outcome["ok"] and outcome["result"]["containerd"]["unpacked"] is True
    state = image_state(ctd, image.reference)
    assert state is not None and state.tier == "hot"


def _pull_through(ctd: Any, image_reference: str, hosts: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ctr_pull_command(ctd, image_reference, hosts),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.timeout(300)
def test_sigterm_mid_pull_finishes_the_transfers_in_flight_and_exits_0(
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    fault_proxy: Callable[..., FaultProxy],
    containerd: ContainerdFactory,
    agents: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    """A rolling update (SIGTERM) in the middle of a ``ctr images pull`` through the agent: the
    agent stops accepting connections, finishes the responses it is sending, exits 0, and the
    pull completes with every blob; the layer in flight came from the agent, not a fallback."""
    image = image_builder.build(registry, "team/big", "v1", [88 * MiB, 8 * MiB], seed="term")
    layer = image.layer_digests[0]
    slow = fault_proxy(registry)
    # ~26 s for the big layer: what is left of it at SIGTERM (~24 s) takes longer than the
    # 2 x 10 s aiohttp waited before (its shutdown timeout, twice), less than the default
    # grace (30 s)
    slow.throttle(3_500_000, path_contains="/blobs/")
    agent = agents(upstreams={registry.host: slow.url})
    hosts = write_hosts(tmp_path / "hosts", registry.host, agent.url, registry.url)

    # undisturbed, for the record: a fresh containerd, a fresh agent store
    ctd = containerd()
    started = time.monotonic()
    result, _ = ctr_pull(ctd, image.reference, hosts)
    undisturbed = time.monotonic() - started
    assert result.returncode == 0, result.stderr

    agent2 = agents(upstreams={registry.host: slow.url})
    hosts2 = write_hosts(tmp_path / "hosts2", registry.host, agent2.url, registry.url)
    ctd2 = containerd()
    mark = registry.mark()
    proxy_mark = len(slow.requests)
    started = time.monotonic()
    pull = _pull_through(ctd2, image.reference, hosts2)
    try:
        deadline = time.monotonic() + 60
        while not any(
            layer in r.path and r.body_bytes > 8 * MiB for r in list(slow.requests)[proxy_mark:]
        ):
            assert pull.poll() is None, f"ctr ended before SIGTERM: {pull.stderr.read()}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the agent never started the layer transfer"
            time.sleep(0.05)
        assert agent2.proc is not None
        terminated = time.monotonic()
        agent2.proc.send_signal(signal.SIGTERM)
        code = agent2.proc.wait(timeout=60)
        exited = time.monotonic() - terminated
        _, stderr = pull.communicate(timeout=120)
        elapsed = time.monotonic() - started
    finally:
        if pull.poll() is None:
            pull.kill()
            pull.wait()
    print(f"undisturbed pull {undisturbed:.1f} s; with SIGTERM {elapsed:.1f} s; agent exited "
          f"{exited:.1f} s after SIGTERM")  # fmt: skip
    assert code == 0, agent2.log_tail()
    assert pull.returncode == 0, stderr
    state = image_state(ctd2, image.reference)
    assert state is not None and state.tier == "hot" and state.digest == image.manifest_digest
    direct = [
        r
        for r in registry.blob_get_requests(layer, since=mark)
        if r.user_agent.startswith("containerd")
    ]
    assert direct == [], "the layer in flight was fetched again by containerd"
    log = agent2.log.read_text(errors="replace")
    assert f"/blobs/{layer}" in log and "Traceback" not in log
