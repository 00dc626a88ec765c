"""The replica's own model download (no agent): names, manifests, and a fake registry over
HTTP on 127.0.0.1 (the real one is in tests/integration/test_model_download.py)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.models import WEIGHT_CONFIG_RAW, WEIGHT_RAW, WEIGHT_TAR, raw_file, titled
from warmstart.oci.errors import InvalidModel
from warmstart.oci.model_paths import safe_relative_path
from warmstart.oci.modelpack import ANNOTATION_FILEPATH, ANNOTATION_TITLE, RAW_LAYER_TYPES
from warmstart_harness.model_server.download import (
    DownloadError,
    LayerFile,
    ModelSource,
    check_path,
    download_model,
    parse_source,
    plan_files,
)

HEX = "ab" * 32


def test_sources() -> None:
    assert parse_source("http://10.1.0.1:5000/models/qwen:v1") == ModelSource(
        "http", "10.1.0.1:5000", "models/qwen", "v1"
    )
    by_digest = parse_source(f"https://reg.example/a/b-c__d@sha256:{HEX}")
    assert by_digest.reference == f"sha256:{HEX}" and by_digest.by_digest
    assert by_digest.url("blobs", "sha256:00") == "https://reg.example/v2/a/b-c__d/blobs/sha256:00"
    assert parse_source("http://h/m").reference == "latest"
    assert str(parse_source("http://h:1/m:t")) == "http://h:1/m:t"
    for bad in ("h/m:t", "ftp://h/m", "http://h/", "http://h/UPPER:t", "http://h/m:t@sha256:1"):
        with pytest.raises(DownloadError):
            parse_source(bad)


NAMES = [
    "model.safetensors",
    "./a//b/c.json",
    "a/./b",
    "",
    "/etc/passwd",
    "../x",
    "a/../../x",
    "a\\b",
    "a\nb",
    "a\x7fb",
    ".",
    "x" * 256,
    "d/" + "y" * 255,
    "ok/" * 10 + "f",
]


@pytest.mark.parametrize("name", NAMES)
def test_file_names_follow_the_agents_rule(name: str) -> None:
    try:
        expected: str | None = safe_relative_path(name)
    except InvalidModel:
        expected = None
    if expected is None:
        with pytest.raises(DownloadError):
            check_path(name)
    else:
        assert check_path(name) == expected


def test_the_annotations_and_raw_types_are_the_model_packs() -> None:
    from warmstart_harness.model_server import download

    assert ANNOTATION_FILEPATH in download.FILEPATH_ANNOTATIONS
    assert download.TITLE_ANNOTATION == ANNOTATION_TITLE
    for media_type in RAW_LAYER_TYPES:
        layer = {"mediaType": media_type, "digest": f"sha256:{HEX}", "size": 1,
                 "annotations": {ANNOTATION_FILEPATH: "f"}}  # fmt: skip
        assert plan_files({"layers": [layer]}) == [LayerFile("f", f"sha256:{HEX}", 1)]


def manifest(*blobs: Any) -> dict[str, Any]:
    return {"schemaVersion": 2, "layers": [b.descriptor() for b in blobs]}


def test_plan_files_names_raw_layers_and_refuses_the_rest() -> None:
    weights = raw_file("model-00001-of-00001.safetensors", b"w" * 10)
    config = raw_file("config.json", b"{}", WEIGHT_CONFIG_RAW)
    oras = titled("sub/notes.txt", b"n")
    files = plan_files(manifest(weights, config, oras))
    assert [(f.path, f.size) for f in files] == [
        ("model-00001-of-00001.safetensors", 10),
        ("config.json", 2),
        ("sub/notes.txt", 1),
    ]
    assert files[0].digest == str(weights.digest)
    tar = raw_file("w.tar", b"t", WEIGHT_TAR)
    unnamed = {"mediaType": WEIGHT_RAW, "digest": f"sha256:{HEX}", "size": 1}
    same = raw_file(weights.annotations[ANNOTATION_FILEPATH], b"other")
    cases = [
        (manifest(tar), "raw files only"),
        ({"layers": [unnamed]}, "names no file"),
        (manifest(weights, same), "two layers claim"),
        (manifest(raw_file("a", b"1"), raw_file("a/b", b"2")), "two layers claim"),
        (manifest(raw_file("../x", b"1")), "leaves the model directory"),
        ({"layers": []}, "no layers"),
    ]
    for doc, message in cases:
        with pytest.raises(DownloadError, match=message):
            plan_files(doc)
    bad_digest = weights.descriptor() | {"digest": "md5:00"}
    with pytest.raises(DownloadError, match="not sha256"):
        plan_files({"layers": [bad_digest]})
    with pytest.raises(DownloadError, match="size"):
        plan_files({"layers": [weights.descriptor() | {"size": -1}]})


# -- a fake registry ----------------------------------------------------------------------------


@dataclass
class FakeRegistry:
    manifests: dict[str, bytes] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    status: int | None = None  # answer every request with this
    requests: list[str] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    state = FakeRegistry()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            parts = self.path.split("/")
            body: bytes | None = None
            if state.status is None and self.path.startswith("/v2/models/m/manifests/"):
                body = state.manifests.get(parts[-1])
            elif state.status is None and self.path.startswith("/v2/models/m/blobs/"):
                body = state.blobs.get(parts[-1])
            status = state.status or (200 if body is not None else 404)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def publish(fake: FakeRegistry, *blobs: Any, tag: str = "v1") -> bytes:
    body = json.dumps(manifest(*blobs)).encode()
    fake.manifests[tag] = body
    fake.manifests["sha256:" + hashlib.sha256(body).hexdigest()] = body
    for b in blobs:
        fake.blobs[str(b.digest)] = b.data
    return body


def test_download_writes_every_file_and_reports_it(fake: FakeRegistry, tmp_path: Path) -> None:
    shard = raw_file("model-00001-of-00002.safetensors", bytes(range(256)) * 5000)
    shard2 = raw_file("model-00002-of-00002.safetensors", b"\x01" * 70_000)
    index = raw_file("model.safetensors.index.json", b'{"weight_map": {}}', WEIGHT_CONFIG_RAW)
    nested = titled("tokenizer/vocab.txt", b"a\nb\n")
    body = publish(fake, shard, shard2, index, nested)
    clock = iter([10.0, 12.5])
    report = download_model(
        parse_source(f"{fake.url}/models/m:v1"), tmp_path / "model", clock=lambda: next(clock)
    )
    for blob in (shard, shard2, index, nested):
        path = (
            blob.annotations.get("org.cncf.model.filepath")
            or blob.annotations["org.opencontainers.image.title"]
        )
        assert (tmp_path / "model" / path).read_bytes() == blob.data
    assert report.files == 4 and report.seconds == 2.5
    assert report.bytes == sum(len(b.data) for b in (shard, shard2, index, nested))
    assert report.as_dict()["source"] == f"{fake.url}/models/m:v1"
    assert not list((tmp_path / "model").rglob("*.part"))
    # by digest: the manifest is checked against it
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    download_model(parse_source(f"{fake.url}/models/m@{digest}"), tmp_path / "again")
    fake.manifests[digest] = body + b" "
    with pytest.raises(DownloadError, match="has digest"):
        download_model(parse_source(f"{fake.url}/models/m@{digest}"), tmp_path / "lied")


def test_a_blob_with_the_wrong_bytes_is_not_kept(fake: FakeRegistry, tmp_path: Path) -> None:
    good = raw_file("a.safetensors", b"a" * 1000)
    publish(fake, good)
    fake.blobs[str(good.digest)] = b"b" * 1000
    with pytest.raises(DownloadError, match="expected sha256"):
        download_model(parse_source(f"{fake.url}/models/m:v1"), tmp_path / "m")
    assert list((tmp_path / "m").iterdir()) == []
    fake.blobs[str(good.digest)] = b"a" * 999
    with pytest.raises(DownloadError, match="got 999 of 1000 bytes"):
        download_model(parse_source(f"{fake.url}/models/m:v1"), tmp_path / "m")
    fake.blobs[str(good.digest)] = b"a" * 1001
    with pytest.raises(DownloadError, match="more than 1000"):
        download_model(parse_source(f"{fake.url}/models/m:v1"), tmp_path / "m")
    assert list((tmp_path / "m").iterdir()) == []


def test_registry_errors_are_one_line(fake: FakeRegistry, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="manifest: HTTP 404"):
        download_model(parse_source(f"{fake.url}/models/m:missing"), tmp_path / "m")
    fake.status = 401
    with pytest.raises(DownloadError, match=r"HTTP 401 .* anonymously"):
        download_model(parse_source(f"{fake.url}/models/m:v1"), tmp_path / "m")
    with pytest.raises(DownloadError, match="cannot reach"):
        download_model(parse_source("http://127.0.0.1:1/models/m:v1"), tmp_path / "m")
    fake.status = None
    fake.manifests["index"] = b'{"manifests": []}'
    with pytest.raises(DownloadError, match="an index"):
        download_model(parse_source(f"{fake.url}/models/m:index"), tmp_path / "m")


# -- the server downloads before it reads -------------------------------------------------------


def test_the_server_downloads_then_reads_every_byte(fake: FakeRegistry, tmp_path: Path) -> None:
    from warmstart_harness.model_server.app import ModelApp
    from warmstart_harness.model_server.config import ConfigError, ServerConfig

    shard = raw_file("model-00001-of-00001.safetensors", b"s" * 5000)
    publish(fake, shard, raw_file("config.json", b"{}", WEIGHT_CONFIG_RAW))
    env = {"SM_MODEL_DIR": str(tmp_path / "model"), "WARMSTART_BENCH_MODE": "1",
           "WARMSTART_MODEL_SOURCE": f"{fake.url}/models/m:v1"}  # fmt: skip
    config = ServerConfig.from_env(env)
    assert config.model_source == f"{fake.url}/models/m:v1"
    app = ModelApp(config, lambda: pytest.fail("bench mode loads no embedder"))
    assert app.handle("GET", "/ping", b"").status == 503
    app.load()
    ping = json.loads(app.handle("GET", "/ping", b"").body)
    assert ping["status"] == "ready"
    assert ping["download"]["files"] == 2 and ping["download"]["bytes"] == 5002
    assert ping["weights"] == {"files": 2, "bytes": 5002, "seconds": ping["weights"]["seconds"]}

    failing = ModelApp(
        ServerConfig.from_env(env | {"WARMSTART_MODEL_SOURCE": f"{fake.url}/models/m:gone"}),
        lambda: pytest.fail("not loaded"),
    )
    failing.load()
    answer = failing.handle("GET", "/ping", b"")
    assert answer.status == 503
    assert json.loads(answer.body)["status"] == "failed"
    assert "DownloadError: manifest: HTTP 404" in json.loads(answer.body)["error"]
    with pytest.raises(ConfigError, match="WARMSTART_MODEL_SOURCE"):
        ServerConfig.from_env({"WARMSTART_MODEL_SOURCE": "s3://bucket/model"})
    assert ServerConfig.from_env({"WARMSTART_MODEL_SOURCE": " "}).model_source is None
