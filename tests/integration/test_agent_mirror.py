"""The agent as a pull-through mirror in front of a real docker-registry, used by real clients
(skopeo, python-dxf, raw HTTP): the second pull takes no blob from the upstream."""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dxf import DXF

from tests.support.agent_log import assert_no_tracebacks
from tests.support.images import BuiltImage, ImageBuilder
from tests.support.tools import require_tool
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.registry import RegistryProcess

MakeAgent = Callable[..., AgentProcess]


@pytest.fixture
def make_agent() -> Iterator[MakeAgent]:
    """``make_agent(registry)``: a ``warmstart agent`` subprocess mirroring ``registry`` (its
    only upstream, so also the default one). Its log goes to stderr at teardown (shown by
    pytest for failed tests). These tests send bad input (unknown registries, bad names and
    ranges, writes, layers asked for as manifests): the answer to it is a status, so the
    agent's log must hold 0 tracebacks and no ERROR line when the test ends."""
    started: list[AgentProcess] = []

    def make(registry: RegistryProcess, **kwargs: Any) -> AgentProcess:
        agent = AgentProcess(upstreams={registry.host: registry.url}, **kwargs)
        started.append(agent)
        return agent

    try:
        yield make
        for agent in started:
            assert_no_tracebacks(agent.log)
    finally:
        for agent in started:
            sys.stderr.write(f"\n=== agent {agent.url} log ===\n{agent.log_tail()}\n")
            agent.cleanup()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def http_request(
    agent: AgentProcess, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def skopeo_pull(agent: AgentProcess, image: BuiltImage, dest: Path) -> dict[str, Any]:
    """``skopeo copy docker://AGENT/repo:tag oci:DEST`` (no ns: the default upstream)."""
    skopeo = require_tool("skopeo")
    proc = subprocess.run(
        [
            skopeo,
            "--insecure-policy",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--src-no-creds",
            f"docker://{agent.host}/{image.repository}:{image.tag}",
            f"oci:{dest}:{image.tag}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stderr}\n--- agent log ---\n{agent.log_tail()}"
    return json.loads((dest / "index.json").read_text())


def layout_blob(dest: Path, digest: str) -> bytes:
    algorithm, hex_ = digest.split(":", 1)
    return (dest / "blobs" / algorithm / hex_).read_bytes()


@pytest.fixture
def image(registry: RegistryProcess, image_builder: ImageBuilder) -> BuiltImage:
    return image_builder.build(registry, "team/app", "v1", layer_sizes=[300_000, 2_000_000], seed=7)


def test_skopeo_pulls_through_the_mirror_and_the_second_pull_is_local(
    registry: RegistryProcess, image: BuiltImage, make_agent: MakeAgent, tmp_path: Path
) -> None:
    agent = make_agent(registry)
    mark = registry.mark()
    first = tmp_path / "first"
    index = skopeo_pull(agent, image, first)
    for digest in image.blobs:  # one transfer per blob, verified by the agent
        assert registry.blob_gets(digest, since=mark, successful_only=True) == 1
    # skopeo stored exactly the image the registry has (it verifies every digest itself)
    assert index["manifests"][0]["digest"] == image.manifest_digest
    assert layout_blob(first, image.manifest_digest) == image.manifest
    for digest, size in image.blobs.items():
        blob = layout_blob(first, digest)
        assert len(blob) == size and sha256(blob) == digest

    mark = registry.mark()
    second = tmp_path / "second"
    skopeo_pull(agent, image, second)
    assert registry.blob_gets(since=mark) == 0, registry.requests(mark)
    for digest in image.blobs:
        assert layout_blob(second, digest) == layout_blob(first, digest)

    status, _, body = http_request(agent, "GET", "/metrics")
    assert status == 200
    text = body.decode()
    assert 'warmstart_agent_served_bytes_total{source="local"}' in text
    local = next(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith('warmstart_agent_served_bytes_total{source="local"}')
    )
    assert local >= sum(image.blobs.values())


def test_python_dxf_reads_manifest_and_blobs(
    registry: RegistryProcess, image: BuiltImage, make_agent: MakeAgent
) -> None:
    agent = make_agent(registry)
    dxf = DXF(agent.host, image.repository, insecure=True)
    manifest, resp = dxf.get_manifest_and_response(image.tag)
    assert manifest.encode() == image.manifest
    assert resp.headers["Docker-Content-Digest"] == image.manifest_digest
    for digest, size in image.blobs.items():
        data = b"".join(dxf.pull_blob(digest))
        assert len(data) == size and sha256(data) == digest
        assert dxf.blob_size(digest) == size  # HEAD
    mark = registry.mark()
    for digest in image.blobs:
        assert sha256(b"".join(dxf.pull_blob(digest))) == digest
    assert registry.blob_gets(since=mark) == 0


def test_ns_headers_ranges_and_errors_against_a_real_upstream(
    registry: RegistryProcess, image: BuiltImage, make_agent: MakeAgent
) -> None:
    agent = make_agent(registry)
    ns = f"?ns={registry.host}"
    accept = {"Accept": image.media_type}
    status, headers, body = http_request(
        agent, "GET", f"/v2/{image.repository}/manifests/{image.tag}{ns}", accept
    )
    assert status == 200 and body == image.manifest
    assert headers["content-type"] == image.media_type
    assert headers["docker-content-digest"] == image.manifest_digest
    assert headers["content-length"] == str(len(image.manifest))
    status, head_headers, body = http_request(
        agent, "HEAD", f"/v2/{image.repository}/manifests/{image.manifest_digest}{ns}", accept
    )
    assert status == 200 and body == b""
    assert head_headers["content-length"] == str(len(image.manifest))

    layer, size = image.layer_digests[1], image.layer_sizes[1]
    status, headers, body = http_request(
        agent, "GET", f"/v2/{image.repository}/blobs/{layer}{ns}", {"Range": "bytes=1000-1999"}
    )
    assert status == 206 and len(body) == 1000
    assert headers["content-range"] == f"bytes 1000-1999/{size}"
    status, full_headers, full = http_request(agent, "GET", f"/v2/{image.repository}/blobs/{layer}")
    assert status == 200 and sha256(full) == layer and full[1000:2000] == body
    assert full_headers["content-type"] == "application/octet-stream"
    assert full_headers["accept-ranges"] == "bytes"
    status, headers, _ = http_request(
        agent, "GET", f"/v2/{image.repository}/blobs/{layer}", {"Range": f"bytes={size}-"}
    )
    assert status == 416 and headers["content-range"] == f"bytes */{size}"

    status, _, body = http_request(
        agent, "GET", f"/v2/{image.repository}/manifests/v1?ns=evil.example"
    )
    assert status == 403 and json.loads(body)["errors"][0]["code"] == "DENIED"
    status, _, body = http_request(agent, "GET", f"/v2/{image.repository}/manifests/nope")
    assert status == 404 and json.loads(body)["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    missing = "sha256:" + "0" * 64
    status, _, body = http_request(agent, "GET", f"/v2/{image.repository}/blobs/{missing}")
    assert status == 404 and json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"
    status, _, body = http_request(agent, "GET", "/v2/a/../../etc/passwd/manifests/v1")
    assert status == 400 and json.loads(body)["errors"][0]["code"] == "NAME_INVALID"
    status, _, _ = http_request(agent, "PUT", f"/v2/{image.repository}/manifests/v2")
    assert status == 405

    status, _, body = http_request(agent, "GET", "/status")
    assert status == 200
    doc = json.loads(body)
    assert doc["store"]["usage"] >= size
    assert registry.host in doc["upstreams"]


def put_peers(agent: AgentProcess, urls: list[str]) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=10)
    try:
        conn.request(
            "PUT",
            "/peers",
            body=json.dumps({"peers": urls}),
            headers={"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, body
        return json.loads(body)
    finally:
        conn.close()


def test_peers_replaced_at_run_time_serve_the_second_node(
    registry: RegistryProcess, image: BuiltImage, make_agent: MakeAgent, tmp_path: Path
) -> None:
    a, b = make_agent(registry), make_agent(registry)
    for agent in (a, b):  # started without peers; the list arrives over the API
        assert put_peers(agent, [a.url, b.url])["peers"] == [a.url, b.url]
        status, _, body = http_request(agent, "GET", "/peers")
        assert status == 200 and json.loads(body)["peers"] == [a.url, b.url]
    skopeo_pull(a, image, tmp_path / "a")
    mark = registry.mark()
    skopeo_pull(b, image, tmp_path / "b")  # every blob from node a (or b's own home copy)
    assert registry.blob_gets(since=mark) == 0, registry.requests(mark)
    for digest in image.blobs:
        assert layout_blob(tmp_path / "b", digest) == layout_blob(tmp_path / "a", digest)


# -- podman: a second real client, configured with a registries.conf mirror ------------------


def podman(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    binary = require_tool("podman")
    return subprocess.run(
        [
            binary,
            "--root",
            str(root / "storage"),
            "--runroot",
            str(root / "run"),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--runtime",
            "runc",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def podman_env(tmp_path: Path, registry: RegistryProcess, agent: AgentProcess) -> dict[str, str]:
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f"""
unqualified-search-registries = []

[[registry]]
prefix = "{registry.host}"
location = "{registry.host}"
insecure = true

[[registry.mirror]]
location = "{agent.host}"
insecure = true
"""
    )
    containers = tmp_path / "containers.conf"
    containers.write_text(
        '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
        '[engine]\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\n'
    )
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    auth = tmp_path / "auth.json"
    auth.write_text('{"auths": {}}')
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(tmp_path),
        "CONTAINERS_REGISTRIES_CONF": str(conf),
        "CONTAINERS_CONF": str(containers),
        "CONTAINERS_POLICY_JSON": str(policy),
        "REGISTRY_AUTH_FILE": str(auth),
        "TMPDIR": str(tmp_path),
    }


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """podman refuses a runroot longer than 50 characters: pytest's tmp_path is too long."""
    path = Path(tempfile.mkdtemp(prefix="wsp-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_podman_pulls_through_the_mirror(
    registry: RegistryProcess,
    image: BuiltImage,
    make_agent: MakeAgent,
    tmp_path: Path,
    short_dir: Path,
) -> None:
    agent = make_agent(registry)
    env = podman_env(tmp_path, registry, agent)
    ref = f"{registry.host}/{image.repository}:{image.tag}"
    for attempt in ("a", "b"):
        mark = registry.mark()
        root = short_dir / attempt
        proc = podman(root, env, "pull", "--quiet", ref)
        assert proc.returncode == 0, f"{proc.stderr}\n--- agent ---\n{agent.log_tail()}"
        listed = podman(root, env, "images", "--digests", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)[0]["Digest"] == image.manifest_digest
        if attempt == "b":  # every blob came from the agent's store
            assert registry.blob_gets(since=mark) == 0, registry.requests(mark)
    status, _, body = http_request(agent, "GET", "/metrics")
    assert status == 200
    assert 'route="blob",status="200"' in body.decode()


@pytest.mark.parametrize("accept", ["*/*", None, "application/*"])
def test_a_wildcard_or_no_accept_gets_the_manifest_as_stored(
    registry: RegistryProcess, image: BuiltImage, make_agent: MakeAgent, accept: str | None
) -> None:
    """curl and many HTTP libraries send ``Accept: */*`` (or nothing): the manifest comes back
    with its own media type, as a registry serves it (distribution itself answers 404 here for
    an OCI manifest)."""
    agent = make_agent(registry)
    headers = {"Accept": accept} if accept is not None else {}
    for reference in (image.tag, image.manifest_digest):
        path = f"/v2/{image.repository}/manifests/{reference}"
        status, got, body = http_request(agent, "GET", path, headers)
        assert status == 200, body
        assert body == image.manifest
        assert got["content-type"] == image.media_type
        assert got["docker-content-digest"] == image.manifest_digest
        status, got, body = http_request(agent, "HEAD", path, headers)
        assert status == 200 and got["content-type"] == image.media_type


def test_a_layer_or_config_asked_for_as_a_manifest_is_a_4xx(
    registry: RegistryProcess, image_builder: ImageBuilder, make_agent: MakeAgent
) -> None:
    """distribution answers 500 for ``/manifests/<layer digest>`` (it reads the blob and fails
    to parse it); a 5xx means "retry" to every client, so the mirror answers 404
    MANIFEST_UNKNOWN: on a cold agent, after the layer is stored, and for HEAD."""
    image = image_builder.build(registry, "team/big", "v1", layer_sizes=[16 << 20], seed=11)
    layer, config = image.layer_digests[0], image.config_digest
    agent = make_agent(registry)

    def ask(method: str, digest: str) -> int:
        status, headers, body = http_request(
            agent, method, f"/v2/{image.repository}/manifests/{digest}"
        )
        if method == "GET":
            assert json.loads(body)["errors"][0]["code"] == "MANIFEST_UNKNOWN", body
        assert headers["content-type"] == "application/json"
        return status

    assert ask("GET", layer) == 404  # cold: nothing known about the digest
    assert ask("HEAD", config) == 404
    status, _, _ = http_request(agent, "GET", f"/v2/{image.repository}/manifests/{image.tag}")
    assert status == 200
    for digest in (layer, config):  # stored now: the store's own bytes say what they are
        status, _, body = http_request(agent, "GET", f"/v2/{image.repository}/blobs/{digest}")
        assert status == 200 and sha256(body) == digest
        assert ask("GET", digest) == 404
        assert ask("HEAD", digest) == 404
    status, _, body = http_request(
        agent, "GET", f"/v2/{image.repository}/manifests/{image.manifest_digest}"
    )
    assert status == 200 and body == image.manifest
