"""Materialising a model in a real store: links not copies, read-only, atomic, hostile layers
refused with nothing left behind, and the budget counting every byte once."""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.models import (
    WEIGHT_TAR,
    WEIGHT_TAR_GZIP,
    WEIGHT_TAR_ZSTD,
    Blob,
    Member,
    config_blob,
    manifest_bytes,
    raw_file,
    tar_bytes,
)
from tests.unit.store.helpers import MemorySource
from warmstart.model.materialise import ModelMaterialiser
from warmstart.oci import Digest
from warmstart.oci import mediatypes as mt
from warmstart.oci.manifest import ImageManifest, parse_manifest
from warmstart.oci.model import InvalidModel, ModelLayout, model_layout
from warmstart.store import ContentStore

MiB = 1 << 20


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ContentStore]:
    s = ContentStore(tmp_path / "store", poll_interval=0.005)
    yield s
    await s.aclose()


async def put_model(
    store: ContentStore,
    layers: list[Blob],
    reference: str = "r.example/m:v1",
    config: Blob | None = None,
    artifact_type: str | None = "application/vnd.cncf.model.manifest.v1+json",
) -> tuple[Digest, ModelLayout]:
    config = config or config_blob()
    body = manifest_bytes(config, layers, artifact_type)
    digest = Digest.of(body)
    store.put_bytes(digest, body)
    for b in [config, *layers]:
        if not store.has(b.digest):
            await store.fetch(b.digest, len(b.data), MemorySource(b.data))
    manifest = parse_manifest(body)
    assert isinstance(manifest, ImageManifest)
    layout = model_layout(manifest)
    store.record_image(
        reference,
        digest,
        [
            (digest, len(body), mt.OCI_MANIFEST),
            *((b.digest, len(b.data), b.media_type) for b in [config, *layers]),
        ],
        model_format=layout.format.value,
    )
    return digest, layout


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


async def test_raw_layers_are_hard_links_and_the_tree_is_read_only(store: ContentStore) -> None:
    big = os.urandom(3 * MiB)
    digest, layout = await put_model(
        store, [raw_file("model.safetensors", big), raw_file("cfg/config.json", b"{}")]
    )
    done = await ModelMaterialiser(store).materialise(digest, layout)
    assert done.built and done.files == 2 and done.linked_bytes == len(big) + 2
    assert done.extracted_bytes == 0
    assert tree(done.path) == {"model.safetensors": big, "cfg/config.json": b"{}"}
    weights = done.path / "model.safetensors"
    blob = store.blob_path(Digest.of(big))
    assert weights.stat().st_ino == blob.stat().st_ino  # the same bytes, no copy
    for p in [done.path, *done.path.rglob("*")]:
        assert p.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) == 0, p
    assert done.path == store.model_dir(digest)
    again = await ModelMaterialiser(store).materialise(digest, layout)
    assert not again.built and again.path == done.path
    # counted once: a blob linked by the store's own model is not "shared" with containerd
    assert store.shared_blobs() == {}
    record = next(r for r in store.images() if r.reference == "r.example/m:v1")
    assert record.model_format == "modelpack" and record.materialised


@pytest.mark.parametrize(
    ("media_type", "compression"),
    [(WEIGHT_TAR, ""), (WEIGHT_TAR_GZIP, "gzip"), (WEIGHT_TAR_ZSTD, "zstd")],
)
async def test_tar_layers_are_extracted(
    store: ContentStore, media_type: str, compression: str
) -> None:
    layer = tar_bytes(
        [
            Member("sub", type=tarfile.DIRTYPE),
            Member("sub/a.bin", b"A" * 1000),
            Member("b.txt", b"B"),
        ],
        compression,
    )
    digest, layout = await put_model(
        store, [Blob(layer, media_type, {"org.cncf.model.filepath": "sub"})]
    )
    done = await ModelMaterialiser(store).materialise(digest, layout)
    assert tree(done.path) == {"sub/a.bin": b"A" * 1000, "b.txt": b"B"}
    assert done.extracted_bytes == 1001
    assert store.model_usage() == 1001


async def test_modelcar_takes_models_dir_and_overlays_layers(store: ContentStore) -> None:
    base = tar_bytes(
        [
            Member("bin/sh", type=tarfile.SYMTYPE, linkname="busybox"),  # outside /models: ignored
            Member("models/old.bin", b"old"),
            Member("models/w.bin", b"v1"),
        ],
        "gzip",
    )
    top = tar_bytes([Member("models/.wh.old.bin"), Member("models/w.bin", b"v2")], "gzip")
    config = Blob(b'{"architecture":"amd64","os":"linux"}', mt.OCI_CONFIG, {})
    digest, layout = await put_model(
        store,
        [Blob(base, mt.OCI_LAYER_GZIP, {}), Blob(top, mt.OCI_LAYER_GZIP, {})],
        config=config,
        artifact_type=None,
    )
    done = await ModelMaterialiser(store).materialise(digest, layout)
    assert tree(done.path) == {"w.bin": b"v2"}


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([Member("link", type=tarfile.SYMTYPE, linkname="/etc/passwd")], "symlink"),
        ([Member("hard", type=tarfile.LNKTYPE, linkname="x")], "hardlink"),
        ([Member("dev", type=tarfile.CHRTYPE)], "device"),
        ([Member("../escape", b"x")], "leaves the model"),
        ([Member("/abs", b"x")], "absolute"),
        ([Member("x", b"1"), Member("x", b"2")], "write the file"),
    ],
)
async def test_hostile_tar_leaves_nothing(
    store: ContentStore, members: list[Member], message: str
) -> None:
    good = raw_file("ok.bin", b"fine")
    bad = Blob(tar_bytes(members), WEIGHT_TAR, {})
    digest, layout = await put_model(store, [good, bad])
    with pytest.raises(InvalidModel, match=message):
        await ModelMaterialiser(store).materialise(digest, layout)
    assert store.model_dir(digest) is None
    assert list(store.layout.models_temp_dir.iterdir()) == []
    assert not store.layout.model_dir(digest).exists()
    assert store.has(good.digest)  # the store's blobs are untouched


async def test_a_raw_file_and_a_tar_member_claiming_one_name(store: ContentStore) -> None:
    digest, layout = await put_model(
        store,
        [raw_file("x.bin", b"raw"), Blob(tar_bytes([Member("x.bin", b"tar")]), WEIGHT_TAR, {})],
    )
    with pytest.raises(InvalidModel, match="write the file"):
        await ModelMaterialiser(store).materialise(digest, layout)
    assert store.model_dir(digest) is None


async def test_corrupt_compressed_layer_is_refused(store: ContentStore) -> None:
    digest, layout = await put_model(store, [Blob(b"not gzip at all", WEIGHT_TAR_GZIP, {})])
    with pytest.raises(InvalidModel, match="not a readable tar"):
        await ModelMaterialiser(store).materialise(digest, layout)


async def test_removing_the_model_removes_its_directory_and_frees_the_blobs(
    store: ContentStore,
) -> None:
    data = os.urandom(MiB)
    digest, layout = await put_model(store, [raw_file("w.bin", data)])
    done = await ModelMaterialiser(store).materialise(digest, layout)
    assert store.remove_image("r.example/m:v1")
    assert not done.path.exists() and store.model_dir(digest) is None
    assert not store.has(Digest.of(data))


async def test_a_pinned_model_keeps_its_directory(store: ContentStore) -> None:
    digest, layout = await put_model(store, [raw_file("w.bin", b"w")])
    done = await ModelMaterialiser(store).materialise(digest, layout)
    pin = store.pin("replica-1", [digest, *(b.digest for b in layout.blobs)], "r.example/m:v1")
    store.remove_image("r.example/m:v1")
    store.gc()
    assert done.path.is_dir() and (done.path / "w.bin").read_bytes() == b"w"
    pin.release()
    store.gc()
    assert not done.path.exists()


async def test_eviction_under_the_budget_removes_a_model_directory(tmp_path: Path) -> None:
    s = ContentStore(tmp_path / "s", budget=3 * MiB, poll_interval=0.005)
    try:
        a = os.urandom(2 * MiB)
        digest, layout = await put_model(s, [raw_file("a.bin", a)], "r.example/a:v1")
        done = await ModelMaterialiser(s).materialise(digest, layout)
        s.touch("r.example/a:v1")
        b = os.urandom(2 * MiB)
        await s.fetch(Digest.of(b), len(b), MemorySource(b))  # needs room: the model goes
        assert not done.path.exists()
        assert not s.has(Digest.of(a))
    finally:
        await s.aclose()


async def test_restart_sweeps_half_built_and_unrecorded_directories(tmp_path: Path) -> None:
    root = tmp_path / "s"
    s = ContentStore(root, poll_interval=0.005)
    digest, layout = await put_model(s, [raw_file("w.bin", b"w")])
    done = await ModelMaterialiser(s).materialise(digest, layout)
    half = root / "models" / "tmp" / f"{'0' * 64}.dead-session.abcd"
    half.mkdir()
    (half / "partial.bin").write_bytes(b"x")
    stray = root / "models" / "sha256" / ("1" * 64)
    stray.mkdir()
    await s.aclose()
    s2 = ContentStore(root, poll_interval=0.005)
    try:
        assert not half.exists() and not stray.exists()
        assert s2.model_dir(digest) == done.path
    finally:
        await s2.aclose()
