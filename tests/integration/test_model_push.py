"""``warmstart model push`` against real registries (distribution 2.8), checked by independent
clients: oras-py pulls the artifact back, skopeo reads the manifest, the access log counts."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import oras.client
import pytest

from tests.support.tools import require_tool
from warmstart.oci.modelpack import (
    ANNOTATION_FILEPATH,
    ANNOTATION_TITLE,
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    WEIGHT_CONFIG_RAW,
    WEIGHT_RAW,
)
from warmstart_harness.testbed.model_files import write_safetensors_model
from warmstart_harness.testbed.registry import RegistryProcess

pytestmark = pytest.mark.integration

MIB = 1 << 20


def warmstart(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warmstart.cli.main", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def model_push(
    directory: Path, ref: str, *extra: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return warmstart("model", "push", str(directory), ref, *extra, stdin=stdin)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]


def make_model(root: Path) -> dict[str, bytes]:
    """Two safetensors shards (5 MiB in all), an index, a config, a tokenizer in a
    subdirectory, a README, code; a .git directory that must stay out. Returns path -> bytes."""
    write_safetensors_model(root, 5 * MIB, shard_size=3 * MIB, tensor_size=MIB, seed=16)
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0", "model": {}}')
    (root / "README.md").write_text("# tiny stand-in\n")
    (root / "modeling_tiny.py").write_text("print('hi')\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith(".git"):
            files[rel] = path.read_bytes()
    return files


def upload_requests(registry: RegistryProcess, since: int) -> list[str]:
    return [r.method for r in registry.requests(since) if "/blobs/uploads/" in r.path.split("?")[0]]


def pull_with_oras(host: str, ref: str, out: Path) -> dict[str, bytes]:
    client = oras.client.OrasClient(hostname=host, insecure=True)
    client.pull(target=ref, outdir=str(out))
    return {
        p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
    }


def test_push_then_pull_back_with_oras_and_push_again(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    files = make_model(tmp_path / "tiny")
    ref = f"{registry.host}/models/tiny:v1"
    mark = registry.mark()
    proc = model_push(
        tmp_path / "tiny", ref, "--insecure-registry", registry.host, "--chunk-size", "1MiB"
    )
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    pinned = last.split()[0]
    assert pinned.startswith(f"{ref}@sha256:")
    digest = pinned.split("@", 1)[1]
    assert f"({len(files)} files" in last
    assert "left out (names starting with a dot): .git" in proc.stderr

    # chunked: each shard of ~2.5 MiB went in 1 MiB PATCHes
    uploads = upload_requests(registry, mark)
    assert uploads.count("POST") == len(files) + 1  # and the config
    assert uploads.count("PATCH") == 2 * 3 + (len(files) - 2) + 1
    failed = [r for r in registry.requests(mark) if r.status >= 400]
    assert {(r.method, r.status) for r in failed} == {("HEAD", 404)}  # the blobs were new

    # an independent client gets the same files back, by the title annotations
    pulled = pull_with_oras(registry.host, ref, tmp_path / "pulled")
    assert pulled.keys() == files.keys()
    for path, data in files.items():
        assert hashlib.sha256(pulled[path]).digest() == hashlib.sha256(data).digest(), path

    # the second push sends no blob: HEADs, then the manifest again
    mark = registry.mark()
    again = model_push(tmp_path / "tiny", ref, "--insecure-registry", registry.host, "--json")
    assert again.returncode == 0, again.stderr
    out = json.loads(again.stdout)
    assert out["digest"] == digest
    assert out["bytes_uploaded"] == 0 and out["bytes_sent"] == 0
    assert out["bytes_skipped"] == out["bytes_total"] == sum(len(d) for d in files.values())
    assert out["left_out"] == [".git"]
    assert upload_requests(registry, mark) == []
    methods = sorted({r.method for r in registry.requests(mark)})
    assert methods == ["HEAD", "PUT"]


def test_manifest_as_skopeo_reads_it(registry: RegistryProcess, tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    files = make_model(tmp_path / "tiny")
    ref = f"{registry.host}/models/tiny:v2"
    proc = model_push(tmp_path / "tiny", ref, "--insecure-registry", registry.host, "-q")
    assert proc.returncode == 0, proc.stderr
    digest = proc.stdout.split()[0].split("@", 1)[1]
    raw = subprocess.run(
        [skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    manifest = json.loads(raw)
    assert manifest["artifactType"] == ARTIFACT_TYPE
    assert manifest["config"]["mediaType"] == CONFIG_MEDIA_TYPE
    layers = {layer["annotations"][ANNOTATION_FILEPATH]: layer for layer in manifest["layers"]}
    assert layers.keys() == files.keys()
    for path, layer in layers.items():
        assert layer["annotations"][ANNOTATION_TITLE] == path
        assert layer["digest"] == "sha256:" + hashlib.sha256(files[path]).hexdigest()
    assert layers["model-00001-of-00002.safetensors"]["mediaType"] == WEIGHT_RAW
    assert layers["tokenizer/tokenizer.json"]["mediaType"] == WEIGHT_CONFIG_RAW

    status, _, body = registry.http("GET", f"/v2/models/tiny/blobs/{manifest['config']['digest']}")
    assert status == 200
    config = json.loads(body)
    assert config["descriptor"] == {"name": "tiny"}
    assert config["config"] == {"format": "safetensors"}
    assert config["modelfs"]["diffIds"] == [layer["digest"] for layer in manifest["layers"]]


def test_model_ls_and_inspect_show_what_was_pushed(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    files = make_model(tmp_path / "tiny")
    ref = f"{registry.host}/models/tiny:v3"
    proc = model_push(tmp_path / "tiny", ref, "--insecure-registry", registry.host, "-q")
    assert proc.returncode == 0, proc.stderr
    digest = proc.stdout.split()[0].split("@", 1)[1]
    ls = warmstart("model", "ls", ref, "--insecure-registry", registry.host, "--json")
    assert ls.returncode == 0, ls.stderr
    rows = {row["path"]: row for row in json.loads(ls.stdout)}
    assert {p: r["size"] for p, r in rows.items()} == {p: len(b) for p, b in files.items()}
    for path, row in rows.items():
        assert row["digest"] == "sha256:" + hashlib.sha256(files[path]).hexdigest()
    assert rows["README.md"]["kind"] == "doc" and rows["modeling_tiny.py"]["kind"] == "code"
    table = warmstart("model", "ls", ref, "--insecure-registry", registry.host)
    assert table.returncode == 0 and "tokenizer/tokenizer.json" in table.stdout
    assert digest in table.stdout

    info = warmstart("model", "inspect", ref, "--insecure-registry", registry.host)
    assert info.returncode == 0, info.stderr
    doc = json.loads(info.stdout)
    assert doc["digest"] == digest and doc["format"] == "modelpack"
    assert doc["artifact_type"] == ARTIFACT_TYPE
    assert doc["config"]["descriptor"] == {"name": "tiny"}
    assert doc["size"] >= sum(len(b) for b in files.values())

    missing = warmstart(
        "model", "ls", f"{registry.host}/models/nope:v1", "--insecure-registry", registry.host
    )
    assert_one_line_error(missing, "not found")


def test_a_broken_upload_is_resumed(registry: RegistryProcess, fault_proxy, tmp_path: Path) -> None:
    files = make_model(tmp_path / "tiny")
    proxy = fault_proxy(registry)
    host = f"127.0.0.1:{proxy.port}"
    # the first PATCH of a shard (1 MiB) breaks after 300 KB of it reached the registry
    proxy.cut_request_after(300_000, times=1)
    ref = f"{host}/models/tiny:v1"
    proc = model_push(
        tmp_path / "tiny",
        ref,
        "--insecure-registry",
        host,
        "--chunk-size",
        "1MiB",
        "--concurrency",
        "1",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["bytes_uploaded"] == out["bytes_total"]
    assert out["bytes_sent"] > out["bytes_total"]  # what broke was sent again
    cut = [r for r in proxy.requests if r.fault == "cut"]
    assert len(cut) == 1 and cut[0].method == "PATCH"
    after = proxy.requests[proxy.requests.index(cut[0]) + 1]
    # the client asked the session for its offset; distribution 2.8 had dropped it (it does
    # after every broken PATCH), so a new session took the blob from its start
    assert after.method == "GET" and "/blobs/uploads/" in after.path
    assert after.status == 404
    posts = [r for r in proxy.requests if r.method == "POST"]
    assert len(posts) == len(files) + 1 + 1  # every file, the config, the new session

    pulled = pull_with_oras(registry.host, f"{registry.host}/models/tiny:v1", tmp_path / "back")
    assert pulled == files


def test_token_auth_over_tls(auth_registry, tmp_path: Path) -> None:
    files = make_model(tmp_path / "tiny")
    ref = f"{auth_registry.host}/models/tiny:v1"
    no_config = ("--docker-config", str(tmp_path / "none.json"))
    ca = ("--ca-file", str(auth_registry.ca_file))

    denied = model_push(tmp_path / "tiny", ref, *ca, *no_config, "-q")
    assert_one_line_error(denied, "requires authentication", "no credentials")

    alice = ("-u", "alice", "--password-stdin")
    wrong = model_push(tmp_path / "tiny", ref, *ca, *no_config, *alice, "-q", stdin="nope\n")
    assert_one_line_error(wrong, "alice")

    ok = model_push(tmp_path / "tiny", ref, *ca, *no_config, *alice, "--json", stdin="secret\n")
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["bytes_uploaded"] == sum(len(d) for d in files.values())
    scopes = {s for r in auth_registry.token_requests if r.username == "alice" for s in r.scopes}
    assert "repository:models/tiny:pull,push" in scopes

    without_tls = model_push(tmp_path / "tiny", ref, *no_config, "-q")
    assert_one_line_error(without_tls, "TLS")
