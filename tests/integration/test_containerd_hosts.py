"""Real containerd 1.6 reading the hosts.toml files ``warmstart containerd-config`` writes.

No agent here: a recording proxy in front of the registry stands in for the mirror, so these
pin down what containerd itself does with the files (``?ns=``, the mirror first, fallback to
``server``) independently of the agent.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.support.containerd import ContainerdFactory, ctr_pull, image_state, write_hosts
from tests.support.fault_proxy import FaultProxy
from tests.support.images import ImageBuilder
from warmstart_harness.testbed.net import free_port
from warmstart_harness.testbed.registry import RegistryProcess


def test_containerd_pulls_through_the_mirror_with_ns(
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    fault_proxy: Callable[..., FaultProxy],
    containerd: ContainerdFactory,
    tmp_path: Path,
) -> None:
    image = image_builder.build(registry, "team/app", "v1", [300_000, 200_000], seed="hosts")
    mirror = fault_proxy(registry)
    hosts = write_hosts(tmp_path / "hosts", registry.host, mirror.url, registry.url)
    doc = tomllib.loads((hosts / registry.host / "hosts.toml").read_text())
    assert doc["host"][mirror.url]["dial_timeout"] == "200ms"  # 1.6 must not choke on it
    ctd = containerd()
    result, _ = ctr_pull(ctd, image.reference, hosts)
    assert result.returncode == 0, result.stderr
    state = image_state(ctd, image.reference)
    assert state is not None and state.tier == "hot"
    assert state.digest == image.manifest_digest
    # Every request went to the mirror first, naming the registry in ?ns=.
    seen = [(r.method, urlsplit(r.path)) for r in mirror.requests]
    assert seen, "containerd never asked the mirror"
    for _, url in seen:
        assert parse_qs(url.query) == {"ns": [registry.host]}
    blob_gets = {u.path.rsplit("/", 1)[1] for m, u in seen if m == "GET" and "/blobs/" in u.path}
    assert blob_gets == set(image.blobs)


def test_mirror_down_falls_back_to_the_server_at_once(
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    containerd: ContainerdFactory,
    tmp_path: Path,
) -> None:
    image = image_builder.build(registry, "team/app", "v2", [100_000, 100_000], seed="down")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    hosts = write_hosts(tmp_path / "hosts", registry.host, dead, registry.url)
    mark = registry.mark()
    ctd = containerd()
    result, seconds = ctr_pull(ctd, image.reference, hosts)
    assert result.returncode == 0, result.stderr
    assert seconds < 10, f"fallback took {seconds:.1f}s"
    assert registry.blob_gets(since=mark, successful_only=True) == len(image.blobs)
    state = image_state(ctd, image.reference)
    assert state is not None and state.tier == "hot"


def test_mirror_errors_fall_back_to_the_server(
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    fault_proxy: Callable[..., FaultProxy],
    containerd: ContainerdFactory,
    tmp_path: Path,
) -> None:
    image = image_builder.build(registry, "team/app", "v3", [100_000], seed="5xx")
    mirror = fault_proxy(registry)
    mirror.fail_status(503, times=None, path_contains="/v2/")
    hosts = write_hosts(tmp_path / "hosts", registry.host, mirror.url, registry.url)
    ctd = containerd()
    result, _ = ctr_pull(ctd, image.reference, hosts)
    assert result.returncode == 0, result.stderr
    assert all(r.status == 503 for r in mirror.requests) and mirror.requests
    state = image_state(ctd, image.reference)
    assert state is not None and state.tier == "hot"
