"""``warmstart pull`` and ``warmstart store`` against real registries, with faults and bad input."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

from tests.support.images import Layer
from warmstart.oci import Digest, parse_reference
from warmstart.oci import mediatypes as mt
from warmstart.pull import Puller
from warmstart.registry import ClientOptions, RegistryClient
from warmstart.store import ContentStore
from warmstart_harness.testbed.aiohttp_thread import ThreadedAiohttpServer

pytestmark = pytest.mark.integration


def warmstart(
    *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warmstart.cli.main", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def pull(
    ref: str, store: Path, *extra: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return warmstart("pull", ref, "--store", str(store), "--quiet", *extra, stdin=stdin)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]


def stored(store: Path, digest: str) -> Path:
    return store / "blobs" / "sha256" / Digest.parse(digest).hex


def assert_blobs_verified(store: Path, blobs: dict[str, int]) -> None:
    for digest, size in blobs.items():
        path = stored(store, digest)
        assert path.stat().st_size == size
        assert Digest.of(path.read_bytes()) == Digest.parse(digest)


def test_pull_stores_every_blob_and_second_pull_is_local(registry, image_builder, tmp_store):
    image = image_builder.build(
        registry, "team/app", "v1", [300_000, 1_200_000, Layer(50_000, "nine")]
    )
    mark = registry.mark()
    proc = pull(image.reference, tmp_store, "--insecure-registry", registry.host, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["digest"] == image.manifest_digest
    assert out["bytes_fetched"] == sum(image.blobs.values())
    assert_blobs_verified(tmp_store, image.blobs)
    assert stored(tmp_store, image.manifest_digest).read_bytes() == image.manifest
    assert registry.blob_gets(since=mark) == len(image.blobs)

    mark = registry.mark()
    again = pull(image.reference, tmp_store, "--insecure-registry", registry.host, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["bytes_fetched"] == 0
    assert registry.blob_gets(since=mark) == 0

    ls = warmstart("store", "ls", "--store", str(tmp_store))
    assert ls.returncode == 0 and "team/app:v1" in ls.stdout and "complete" in ls.stdout
    verify = warmstart("store", "verify", "--store", str(tmp_store))
    assert verify.returncode == 0, verify.stdout


def test_store_rm_and_gc(registry, image_builder, tmp_store):
    shared = Layer(200_000, "shared")
    a = image_builder.build(registry, "rm/a", "v1", [shared, 100_000], seed=1)
    b = image_builder.build(registry, "rm/b", "v1", [shared, 120_000], seed=2)
    for img in (a, b):
        assert pull(img.reference, tmp_store, "--insecure-registry", registry.host).returncode == 0
    rm = warmstart("store", "rm", a.reference, "--store", str(tmp_store))
    assert rm.returncode == 0, rm.stderr
    assert stored(tmp_store, a.layer_digests[0]).exists(), "a layer b still uses was deleted"
    assert not stored(tmp_store, a.layer_digests[1]).exists()
    assert_one_line_error(
        warmstart("store", "rm", "nope:1", "--store", str(tmp_store)), "not in the store"
    )
    assert warmstart("store", "gc", "--store", str(tmp_store)).returncode == 0
    assert_blobs_verified(tmp_store, b.blobs)


def test_platform_is_chosen_from_an_index(registry, image_builder, tmp_store):
    index = image_builder.build_index(registry, "multi/app", "v1", ("amd64", "arm64"))
    arm = index.manifests["linux/arm64"]
    proc = pull(
        index.reference,
        tmp_store,
        "--insecure-registry",
        registry.host,
        "--platform",
        "linux/arm64",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["digest"] == index.index_digest
    assert out["manifest"] == arm.manifest_digest
    assert out["platform"] == arm.platform
    assert_blobs_verified(tmp_store, arm.blobs)
    amd = index.manifests["linux/amd64"]
    assert not any(stored(tmp_store, d).exists() for d in amd.layer_digests)
    assert_one_line_error(
        pull(
            index.reference,
            tmp_store,
            "--insecure-registry",
            registry.host,
            "--platform",
            "linux/s390x",
        ),
        "no manifest for platform",
    )


def test_token_auth_over_tls(auth_registry, image_builder, tmp_store, tmp_path):
    image = image_builder.build(auth_registry, "private/app", "v1", [100_000])
    ca = ["--ca-file", str(auth_registry.ca_file)]
    proc = pull(
        image.reference, tmp_store, *ca, "-u", "alice", "--password-stdin", stdin="secret\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert_blobs_verified(tmp_store, image.blobs)

    config = tmp_path / "config.json"
    auth = base64.b64encode(b"alice:secret").decode()
    config.write_text(json.dumps({"auths": {auth_registry.host: {"auth": auth}}}))
    other = tmp_path / "store2"
    proc = pull(image.reference, other, *ca, "--docker-config", str(config))
    assert proc.returncode == 0, proc.stderr

    anonymous = pull(
        image.reference, tmp_path / "store3", *ca, "--docker-config", str(tmp_path / "none.json")
    )
    assert_one_line_error(anonymous)
    wrong = pull(
        image.reference, tmp_path / "store4", *ca, "-u", "alice", "--password-stdin", stdin="nope\n"
    )
    assert_one_line_error(wrong)
    no_ca = pull(
        image.reference, tmp_path / "store5", "-u", "alice", "--password-stdin", stdin="secret\n"
    )
    assert_one_line_error(no_ca)


def test_dropped_connection_resumes_with_range(registry, image_builder, fault_proxy, tmp_store):
    image = image_builder.build(registry, "flaky/app", "v1", [3_000_000])
    proxy = fault_proxy(registry)
    proxy.drop_after(1_000_000, times=2, path_contains=image.layer_digests[0])
    ref = f"{proxy.host}/flaky/app:v1"
    proc = pull(ref, tmp_store, "--insecure-registry", proxy.host)
    assert proc.returncode == 0, proc.stderr
    assert_blobs_verified(tmp_store, image.blobs)
    layer_gets = [
        r for r in proxy.requests if r.method == "GET" and image.layer_digests[0] in r.path
    ]
    assert len(layer_gets) == 3
    assert [r.header("Range") for r in layer_gets[1:]] == ["bytes=1000000-", "bytes=2000000-"]


def test_corrupt_bytes_are_never_stored(registry, image_builder, fault_proxy, tmp_store):
    image = image_builder.build(registry, "evil/app", "v1", [500_000])
    proxy = fault_proxy(registry)
    proxy.corrupt(path_contains=image.layer_digests[0], times=None)
    proc = pull(f"{proxy.host}/evil/app:v1", tmp_store, "--insecure-registry", proxy.host)
    assert_one_line_error(proc, "hashes to", "nothing was stored")
    assert not stored(tmp_store, image.layer_digests[0]).exists()
    assert not any((tmp_store / "ingest").iterdir())
    assert warmstart("store", "verify", "--store", str(tmp_store)).returncode == 0


def test_sigkill_mid_blob_then_pull_again(registry, image_builder, fault_proxy, tmp_store):
    image = image_builder.build(registry, "killed/app", "v1", [8_000_000])
    proxy = fault_proxy(registry)
    proxy.throttle(2_000_000, path_contains=image.layer_digests[0])
    ref = f"{proxy.host}/killed/app:v1"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "warmstart.cli.main",
            "pull",
            ref,
            "--store",
            str(tmp_store),
            "--insecure-registry",
            proxy.host,
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        ingest = tmp_store / "ingest"
        while time.monotonic() < deadline:
            partial = (
                [p for p in ingest.glob("*") if p.is_file() and p.stat().st_size > 500_000]
                if ingest.exists()
                else []
            )
            if partial:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the pull never started writing the layer")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not stored(tmp_store, image.layer_digests[0]).exists()
    proxy.clear()
    again = pull(ref, tmp_store, "--insecure-registry", proxy.host)
    assert again.returncode == 0, again.stderr
    assert_blobs_verified(tmp_store, image.blobs)
    assert [p for p in (tmp_store / "ingest").iterdir() if p.is_file()] == []
    verify = warmstart("store", "verify", "--store", str(tmp_store))
    assert verify.returncode == 0, verify.stdout


def test_budget_evicts_least_recently_used_and_never_pinned(registry, image_builder, tmp_store):
    images = [
        image_builder.build(registry, f"budget/i{i}", "v1", [1_000_000], seed=i) for i in range(3)
    ]
    budget = ["--budget", "2500000", "--insecure-registry", registry.host]
    for img in images:
        proc = pull(img.reference, tmp_store, *budget)
        assert proc.returncode == 0, proc.stderr
        time.sleep(0.01)
    # i0 was the least recently used: evicted to make room for i2.
    assert not stored(tmp_store, images[0].layer_digests[0]).exists()
    for img in images[1:]:
        assert_blobs_verified(tmp_store, img.blobs)

    # Pin both remaining images (as a running replica would): i0 cannot get room.
    holder = ContentStore(tmp_store)
    try:
        digests = [Digest.parse(d) for img in images[1:] for d in (img.manifest_digest, *img.blobs)]
        with holder.pin("test-replicas", digests):
            proc = pull(images[0].reference, tmp_store, *budget)
            assert_one_line_error(proc, "budget")
            for img in images[1:]:
                assert_blobs_verified(tmp_store, img.blobs)
        # Unpinned again: the pull succeeds by evicting the least recently used (i1).
        proc = pull(images[0].reference, tmp_store, *budget)
        assert proc.returncode == 0, proc.stderr
        assert not stored(tmp_store, images[1].layer_digests[0]).exists()
        assert_blobs_verified(tmp_store, images[2].blobs)
        assert_blobs_verified(tmp_store, images[0].blobs)
    finally:
        holder.close()


def _gets_per_blob(registry, mark: int) -> Counter[str]:
    return Counter(r.blob_digest for r in registry.blob_get_requests(since=mark))


async def test_16_concurrent_pulls_in_one_process_fetch_each_blob_once(
    registry, image_builder, tmp_store
):
    image = image_builder.build(registry, "crowd/app", "v1", [2_000_000, 700_000, 300_000])
    ref = parse_reference(image.reference)
    mark = registry.mark()
    store = ContentStore(tmp_store)
    try:
        async with RegistryClient(ClientOptions(insecure=frozenset({registry.host}))) as client:
            results = await asyncio.gather(*(Puller(client, store).pull(ref) for _ in range(16)))
    finally:
        store.close()
    assert {str(r.manifest_digest) for r in results} == {image.manifest_digest}
    assert_blobs_verified(tmp_store, image.blobs)
    assert _gets_per_blob(registry, mark) == dict.fromkeys(image.blobs, 1)


def test_4_pull_processes_on_one_store_fetch_each_blob_once(registry, image_builder, tmp_store):
    image = image_builder.build(registry, "crowd/procs", "v1", [3_000_000, 1_000_000])
    mark = registry.mark()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "warmstart.cli.main",
                "pull",
                image.reference,
                "--store",
                str(tmp_store),
                "--insecure-registry",
                registry.host,
                "--quiet",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert_blobs_verified(tmp_store, image.blobs)
    assert _gets_per_blob(registry, mark) == dict.fromkeys(image.blobs, 1)


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "needle"),
    [
        ("Bad Ref", "invalid reference"),
        ("127.0.0.1:5000/UPPER/case", "invalid"),
        ("127.0.0.1:5000/a/../../etc", "invalid"),
        ("127.0.0.1:5000/a@sha256:abc", "64 lower-case hex"),
        ("127.0.0.1:5000/a@sha256:" + "a" * 65, "64 lower-case hex"),
        ("127.0.0.1:5000/a:" + "t" * 200, "invalid tag"),
        ("127.0.0.1:99999/a", "port"),
    ],
)
def test_malformed_references(ref, needle, tmp_store):
    assert_one_line_error(pull(ref, tmp_store), needle)


def test_bad_options(tmp_store):
    assert_one_line_error(pull("127.0.0.1:1/a", tmp_store, "--budget", "lots"), "invalid size")
    assert_one_line_error(pull("127.0.0.1:1/a", tmp_store, "--platform", "linux"), "platform")
    assert_one_line_error(pull("127.0.0.1:1/a", tmp_store, "-u", "bob"), "--password-stdin")
    assert_one_line_error(
        pull("127.0.0.1:1/a", tmp_store, "--ca-file", "/nonexistent.pem"), "CA file"
    )


class EvilRegistry(ThreadedAiohttpServer):
    """Serves whatever manifest a test sets, to see that bad upstream answers are refused."""

    def __init__(self) -> None:
        super().__init__(None, name="evil-registry")
        self.manifests: dict[str, tuple[bytes, str]] = {}

    def build_app(self) -> web.Application:
        app = web.Application()

        async def v2(_: web.Request) -> web.Response:
            return web.json_response({})

        async def manifest(request: web.Request) -> web.StreamResponse:
            body, media_type = self.manifests[request.match_info["tag"]]
            return web.Response(body=body, headers={"Content-Type": media_type})

        app.router.add_get("/v2/", v2)
        app.router.add_route("*", "/v2/evil/manifests/{tag}", manifest)
        return app


@pytest.fixture
def evil_registry():
    server = EvilRegistry()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _manifest(**overrides) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": "sha256:" + "1" * 64, "size": 2},
        "layers": [],
        **overrides,
    }
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("body", "content_type", "needle"),
    [
        (
            _manifest(mediaType="application/vnd.example.unknown+json"),
            mt.OCI_MANIFEST,
            "media type",
        ),
        (_manifest(mediaType=None), "application/vnd.example.unknown+json", "media type"),
        (b"{" + b" " * (4 * 1024 * 1024 + 10) + b"}", mt.OCI_MANIFEST, "limit"),
        (
            _manifest(
                config={"mediaType": mt.OCI_CONFIG, "digest": "sha256:" + "1" * 63, "size": 2}
            ),
            mt.OCI_MANIFEST,
            "digest",
        ),
        (b"not json at all", mt.OCI_MANIFEST, "json"),
        (json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(), mt.DOCKER_SCHEMA1, "schema 1"),
    ],
)
def test_bad_manifests_from_upstream(evil_registry, tmp_store, body, content_type, needle):
    if b'"mediaType": null' in body:
        body = body.replace(b'"mediaType": null, ', b"")
    evil_registry.manifests["bad"] = (body, content_type)
    proc = pull(
        f"{evil_registry.host}/evil:bad", tmp_store, "--insecure-registry", evil_registry.host
    )
    assert_one_line_error(proc, needle)
    assert (
        not any((tmp_store / "blobs" / "sha256").glob("*"))
        if (tmp_store / "blobs").exists()
        else True
    )
