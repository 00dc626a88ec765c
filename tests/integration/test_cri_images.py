"""The kubelet's path, for real: containerd 1.6's CRI plugin (PullImage, ImageStatus,
ListImages, RemoveImage over gRPC, as the kubelet calls them), its registry ``config_path``
naming the hosts.toml directory the agent writes at start, a real agent and real
docker-registries on 127.0.0.1.

Upstream blob GETs are counted in the registry's access log; GETs at the agent and blobs linked
into containerd come from the agent's ``/metrics``.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.containerd import ContainerdFactory
from warmstart.testbed.containerd import CRI_NAMESPACE
from warmstart.testbed.cri import CriClient


def test_the_cri_plugin_loads_without_cni_and_answers(
    containerd: ContainerdFactory, tmp_path: Path
) -> None:
    ctd = containerd(cri_config_path=tmp_path / "certs.d")
    plugins = ctd.ctr("plugins", "ls").stdout.splitlines()
    cri = [line.split() for line in plugins if " cri " in line]
    assert cri == [["io.containerd.grpc.v1", "cri", "linux/amd64", "ok"]], plugins
    assert f'config_path = "{tmp_path / "certs.d"}"' in ctd.config.read_text()
    assert ctd.namespace == CRI_NAMESPACE
    with CriClient(ctd.socket, timeout=30) as cri_client:
        version = cri_client.version()
        assert (version.runtime_name, version.runtime_api_version) == ("containerd", "v1")
        assert version.runtime_version.startswith("1.6.")
        assert cri_client.list_images() == []
        assert cri_client.image_status("127.0.0.1:9/none/such:v1") is None
    # the other fixtures' containerd keeps CRI off
    plain = containerd()
    assert not any(" cri " in line for line in plain.ctr("plugins", "ls").stdout.splitlines())
