"""The containerd runtime driver against a real containerd 1.6 + runc: a busybox image pulled
through a warmstart agent, served on the host network, stopped, its exit status and logs read,
and everything (tasks, containers, snapshots, logs) removed, also when a test fails."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import secrets
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.containerd import ContainerdFactory, snapshot_count
from tests.support.tools import require_tool
from warmstart.containerd.ctr import Ctr
from warmstart.runtime import (
    ImageNotPresent,
    ImagePullError,
    Mount,
    ReplicaNotFound,
    ReplicaSpec,
    ReplicaState,
)
from warmstart.runtime.containerd import ContainerdRuntime
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.containerd import ContainerdProcess
from warmstart_harness.testbed.layout import push_layout
from warmstart_harness.testbed.net import free_port
from warmstart_harness.testbed.registry import RegistryProcess

HTTPD = "exec /bin/busybox httpd -f -v -p $PORT -h /www"


def _busybox() -> Path:
    path = shutil.which("busybox") or "/bin/busybox"
    require_tool("busybox")
    out = Path(path).resolve()
    if b"ld-linux" in out.read_bytes()[:4096]:
        pytest.skip("busybox is not static (apt-get install busybox-static)")
    return out


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_busybox_image(layout: Path, tag: str) -> None:
    """An OCI layout with one uncompressed layer: static busybox and ``/www/ping``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("bin", "www", "tmp"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        data = _busybox().read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("bin/sh")
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
        tar.addfile(info)
        ping = b"pong\n"
        info = tarfile.TarInfo("www/ping")
        info.size, info.mode = len(ping), 0o644
        tar.addfile(info, io.BytesIO(ping))
    layer = _blob(layout, buf.getvalue())
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": ["/bin/busybox"],
            "Cmd": ["sh", "-c", HTTPD],
            "Env": ["PATH=/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
    }
    config_desc = _blob(layout, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}],
    }
    manifest_desc = _blob(layout, json.dumps(manifest).encode())
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest_desc,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))


@pytest.fixture
def busybox_image(registry: RegistryProcess, tmp_path: Path) -> str:
    require_tool("skopeo")
    layout = tmp_path / "layout"
    write_busybox_image(layout, "v1")
    reference = f"{registry.host}/team/busybox:v1"
    push_layout(layout, "v1", reference)
    return reference


@pytest.fixture
def agent(
    request: pytest.FixtureRequest, registry: RegistryProcess, tmp_path: Path
) -> Iterator[AgentProcess]:
    failures = request.session.testsfailed
    process = AgentProcess(tmp_path / "agent", upstreams={registry.host: registry.url})
    try:
        yield process
    finally:
        if request.session.testsfailed > failures:
            sys.stderr.write(f"\n=== agent {process.url} log ===\n{process.log_tail()}\n")
        process.stop()


@pytest.fixture
async def runtime(
    containerd: ContainerdFactory,
    agent: AgentProcess,
    registry: RegistryProcess,
    tmp_path: Path,
) -> AsyncIterator[ContainerdRuntime]:
    ctd = containerd()
    driver = ContainerdRuntime(
        Ctr(ctd.socket, ctd.namespace),
        tmp_path / "runtime",
        id_prefix=f"wsrt{secrets.token_hex(4)}",
        agent_url=agent.url,
        insecure_registries=frozenset({registry.host}),
    )
    try:
        yield driver
    finally:
        # Everything this driver created, also when the test failed half-way: first through
        # the driver, then whatever is left with our prefix, straight with ctr.
        try:
            for replica in await driver.list():
                await driver.delete(replica)
        finally:
            _sweep(ctd, driver.id_prefix)


def _sweep(ctd: ContainerdProcess, prefix: str) -> None:
    def ours(*args: str) -> list[str]:
        out = ctd.ctr(*args, "-q", check=False).stdout.split()
        return [cid for cid in out if cid.startswith(prefix)]

    for cid in ours("tasks", "ls"):
        ctd.ctr("tasks", "kill", "-s", "SIGKILL", "--all", cid, check=False)
        ctd.ctr("tasks", "delete", "-f", cid, check=False)
    for cid in ours("containers", "ls"):
        ctd.ctr("containers", "delete", cid, check=False)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


async def _wait_ping(port: int, seconds: float = 15.0) -> tuple[int, bytes]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        try:
            return await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/ping")
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_replica_serves_ping_on_the_host_network_then_stops_and_is_removed(
    runtime: ContainerdRuntime,
    busybox_image: str,
    registry: RegistryProcess,
    containerd: ContainerdFactory,
) -> None:
    [ctd] = containerd.started
    mark = registry.mark()
    pulled = await runtime.pull(busybox_image)
    assert pulled.digest is not None and pulled.digest.startswith("sha256:")
    assert pulled.total_seconds >= pulled.fetch_seconds > 0
    assert pulled.unpack_seconds > 0
    agents = {r.user_agent.split("/")[0] for r in registry.blob_get_requests(since=mark)}
    assert agents == {"warmstart-agent"}  # ctr pulled through the agent, not the registry

    port = free_port()
    spec = ReplicaSpec("model-a", busybox_image, port=port, env={"GREETING": "hi"})
    replica = await runtime.create(spec, pull=pulled)
    assert replica.container_id.startswith(runtime.id_prefix)
    assert (await runtime.status(replica)).state is ReplicaState.CREATED
    assert [r.spec for r in await runtime.list()] == [spec]

    replica = await runtime.start(replica)
    timings = replica.timings
    assert timings.pull is pulled and timings.create_seconds and timings.start_seconds
    status = await runtime.status(replica)
    assert status.state is ReplicaState.RUNNING and status.pid

    code, body = await _wait_ping(port)
    assert (code, body) == (200, b"pong\n")
    for _ in range(100):  # httpd -v logs each response to stderr, right after sending it
        if "response:200" in await runtime.logs(replica):
            break
        await asyncio.sleep(0.05)
    assert "response:200" in await runtime.logs(replica)

    # busybox httpd is PID 1 without a SIGTERM handler: the kernel ignores SIGTERM for it,
    # so this exercises the SIGKILL escalation.
    stopped = await runtime.stop(replica, grace=0.5)
    assert stopped.state is ReplicaState.EXITED and stopped.exit_code == 137
    assert (await runtime.status(replica)).exit_code == 137  # kept after the task is gone
    with pytest.raises(OSError):
        _get(f"http://127.0.0.1:{port}/ping")

    snapshots = snapshot_count(ctd)
    await runtime.delete(replica)
    assert await runtime.list() == []
    assert snapshot_count(ctd) == snapshots - 1  # the replica's rootfs went with it
    assert replica.container_id not in ctd.ctr("containers", "ls", "-q").stdout
    assert not runtime.log_path(replica.container_id).exists()
    with pytest.raises(ReplicaNotFound):
        await runtime.status(replica)
    await runtime.delete(replica)  # idempotent

    again = await runtime.pull(busybox_image)  # hot: nothing to fetch or unpack
    assert again.total_seconds < pulled.total_seconds + 1


async def test_exit_code_logs_mounts_and_sigterm(
    runtime: ContainerdRuntime, busybox_image: str, tmp_path: Path
) -> None:
    await runtime.pull(busybox_image)
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights").write_text("w1\n")
    script = (
        "cat /opt/ml/model/weights; echo out $PORT $GREETING; echo err >&2; "
        "touch /opt/ml/model/new 2>/dev/null && exit 9; exit 3"  # the mount is read-only
    )
    crash = await runtime.create(
        ReplicaSpec(
            "crash",
            busybox_image,
            env={"GREETING": "hi"},
            args=("sh", "-c", script),
            mounts=(Mount(str(model), "/opt/ml/model"),),
        )
    )
    crash = await runtime.start(crash)
    for _ in range(200):
        status = await runtime.status(crash)
        if status.state is ReplicaState.EXITED:
            break
        await asyncio.sleep(0.05)
    assert status.state is ReplicaState.EXITED and status.exit_code == 3
    logs = await runtime.logs(crash)
    # stdout and stderr are copied into one file by two goroutines: lines may interleave.
    assert sorted(logs.splitlines()) == ["err", "out 8080 hi", "w1"]
    assert not (model / "new").exists()
    assert (await runtime.stop(crash)).exit_code == 3  # not running: nothing to do

    # A process that handles SIGTERM exits with it, before the grace period ends.
    polite = await runtime.create(
        ReplicaSpec(
            "polite",
            busybox_image,
            args=("sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"),
        )
    )
    polite = await runtime.start(polite)
    await asyncio.sleep(0.3)
    status = await runtime.stop(polite, grace=20)
    assert status.state is ReplicaState.EXITED and status.exit_code == 0
    assert sorted(r.id for r in await runtime.list()) == ["crash", "polite"]
    for replica in (crash, polite):
        await runtime.delete(replica)
    assert await runtime.list() == []


async def test_missing_image_and_failed_pull(
    runtime: ContainerdRuntime, registry: RegistryProcess
) -> None:
    with pytest.raises(ImageNotPresent):
        await runtime.create(ReplicaSpec("nope", f"{registry.host}/team/absent:v1"))
    with pytest.raises(ImagePullError):
        await runtime.pull(f"{registry.host}/team/absent:v1")
