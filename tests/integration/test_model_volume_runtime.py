"""The model volume in a real container: the path the operator writes into a workload's
hostPath (``<store>/models/by-ref/<reference>``, a relative symlink the agent keeps) is
bind-mounted read-only at /opt/ml/model by a real runtime (containerd 1.6's ``ctr run`` with
runc), after a real agent materialised a model pushed to a real registry.

This is the OCI runtime's side of a hostPath volume (a read-only bind mount of the host path),
not the kubelet's: the kubelet's ``type: Directory`` check (it follows the link) and the CRI
plugin's translation of the volume were not run here (no kubelet on these machines).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.containerd import ContainerdFactory
from tests.support.model_push import push_model
from tests.support.models import config_blob, raw_file
from tests.support.tools import require_tool
from warmstart.operator.model_mount import MODEL_MOUNT_PATH, model_host_path
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.registry import RegistryProcess

pytestmark = pytest.mark.integration


def _busybox_rootfs(where: Path) -> Path:
    """A root filesystem of one static busybox (Debian's), enough for sh, cat and touch."""
    busybox = Path(require_tool("busybox"))
    rootfs = where / "rootfs"
    for d in ("bin", "proc", "dev", "sys", "tmp", "opt/ml"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    return rootfs


@pytest.mark.timeout(120)
def test_the_by_ref_path_mounts_read_only_in_a_real_container(
    registry: RegistryProcess,
    agents: Callable[..., AgentProcess],
    containerd: ContainerdFactory,
    tmp_path: Path,
) -> None:
    weights = os.urandom(64 * 1024)
    push_model(registry, "models/mounted", "v1", config_blob(),
               [raw_file("model.safetensors", weights), raw_file("sub/notes.txt", b"hi")])  # fmt: skip
    ref = f"{registry.host}/models/mounted:v1"
    agent = agents(upstreams={registry.host: registry.url})
    code, answer = agent.prewarm(ref, hot=True, model=True)
    assert code == 200, answer
    host_path = Path(model_host_path(str(agent.store), ref))  # what the operator writes
    assert host_path.is_symlink() and str(host_path) == answer["model"]["reference_path"]

    ctd = containerd()
    rootfs = _busybox_rootfs(tmp_path)
    script = (
        f"cat {MODEL_MOUNT_PATH}/sub/notes.txt; echo; "
        f"busybox sha256sum {MODEL_MOUNT_PATH}/model.safetensors; "
        f"busybox touch {MODEL_MOUNT_PATH}/new 2>&1; echo touch=$?; id -u"
    )
    result = ctd.ctr(
        "run", "--rm", "--rootfs",
        "--mount", f"type=bind,src={host_path},dst={MODEL_MOUNT_PATH},options=rbind:ro",
        str(rootfs), f"ws-model-{uuid.uuid4().hex[:12]}",
        "/bin/busybox", "sh", "-c", script,
        check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "hi"
    assert lines[1].split()[0] == hashlib.sha256(weights).hexdigest()
    assert "Read-only file system" in lines[2] and lines[3] == "touch=1"
    assert lines[4] == "0"  # even root cannot write there
    assert not (Path(answer["model"]["path"]) / "new").exists()
