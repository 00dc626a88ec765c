"""Which files a model artifact holds and where they go: the three shapes, and every hostile
name refused."""

from __future__ import annotations

import pytest

from tests.support.models import (
    WEIGHT_RAW,
    WEIGHT_TAR_ZSTD,
    Blob,
    config_blob,
    manifest_bytes,
    raw_file,
    titled,
)
from warmstart.oci import mediatypes as mt
from warmstart.oci.manifest import ImageManifest, parse_manifest
from warmstart.oci.model import (
    InvalidModel,
    LayerKind,
    MemberType,
    ModelFormat,
    check_tar_member,
    is_model_candidate,
    model_layout,
    safe_relative_path,
)


def parsed(config: Blob, layers: list[Blob], artifact_type: str | None = None) -> ImageManifest:
    m = parse_manifest(manifest_bytes(config, layers, artifact_type))
    assert isinstance(m, ImageManifest)
    return m


def modelpack(*layers: Blob) -> ImageManifest:
    return parsed(config_blob(), list(layers), "application/vnd.cncf.model.manifest.v1+json")


def test_modelpack_raw_files_keep_their_paths_and_roles() -> None:
    layout = model_layout(
        modelpack(
            raw_file("model.safetensors", b"w"),
            raw_file("tok/tokenizer.json", b"t", "application/vnd.cncf.model.weight.config.v1.raw"),
            Blob(
                b"d",
                "application/vnd.cncf.model.doc.v1.raw",
                {"org.cncf.model.filepath": "README.md"},
            ),
        )
    )
    assert layout.format is ModelFormat.MODELPACK
    assert [(x.path, x.kind, x.role) for x in layout.layers] == [
        ("model.safetensors", LayerKind.RAW, "weight"),
        ("tok/tokenizer.json", LayerKind.RAW, "weight.config"),
        ("README.md", LayerKind.RAW, "doc"),
    ]
    assert layout.total_size == len(config_blob().data) + 3


def test_modelpack_by_config_alone_and_the_older_cnai_names() -> None:
    old = Blob(
        b"x", "application/vnd.cnai.model.weight.v1.raw", {"org.cnai.model.filepath": "a.bin"}
    )
    m = parsed(config_blob("application/vnd.cnai.model.config.v1+json"), [old], None)
    layout = model_layout(m)
    assert layout.format is ModelFormat.MODELPACK and layout.layers[0].path == "a.bin"


@pytest.mark.parametrize(
    ("media_type", "kind"),
    [
        ("application/vnd.cncf.model.weight.v1.tar", LayerKind.TAR),
        ("application/vnd.cncf.model.weight.v1.tar+gzip", LayerKind.TAR_GZIP),
        (WEIGHT_TAR_ZSTD, LayerKind.TAR_ZSTD),
        ("application/vnd.cncf.model.dataset.v1.tar", LayerKind.TAR),
        ("application/vnd.cncf.model.code.v1.raw", LayerKind.RAW),
    ],
)
def test_modelpack_packings(media_type: str, kind: LayerKind) -> None:
    layer = Blob(b"x", media_type, {"org.cncf.model.filepath": "sub/x"})
    assert model_layout(modelpack(layer)).layers[0].kind is kind


def test_oras_artifact_named_by_title_and_unpacked_directories() -> None:
    m = parsed(
        Blob(b"{}", mt.OCI_EMPTY, {}),
        [
            titled("weights.bin", b"w"),
            Blob(
                b"t",
                mt.OCI_LAYER_GZIP,
                {"org.opencontainers.image.title": "vocab", "io.deis.oras.content.unpack": "true"},
            ),
        ],
        "application/vnd.example.model",
    )
    layout = model_layout(m)
    assert layout.format is ModelFormat.ARTIFACT
    assert [(x.path, x.kind) for x in layout.layers] == [
        ("weights.bin", LayerKind.RAW),
        ("vocab", LayerKind.TAR_GZIP),
    ]


def test_modelcar_keeps_only_models_dir() -> None:
    img = parsed(Blob(b"{}", mt.OCI_CONFIG, {}), [Blob(b"l", mt.OCI_LAYER_GZIP, {})])
    assert not is_model_candidate(img)
    layout = model_layout(img)
    assert layout.format is ModelFormat.MODELCAR
    assert layout.layers[0].strip == "models" and layout.layers[0].kind is LayerKind.TAR_GZIP
    with pytest.raises(InvalidModel, match="container image"):
        model_layout(img, modelcar=False)


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([raw_file("../etc/passwd", b"x")], "leaves the model"),
        ([raw_file("/etc/passwd", b"x")], "absolute"),
        ([raw_file("a/../../b", b"x")], "leaves the model"),
        ([raw_file("a\\b", b"x")], "backslash"),
        ([raw_file("a\x00b", b"x")], "control"),
        ([raw_file(".", b"x")], "names no file"),
        ([raw_file("x", b"1"), raw_file("./x", b"2")], "both claim"),
        ([raw_file("x", b"1"), raw_file("x/y", b"2")], "inside it"),
        ([Blob(b"x", WEIGHT_RAW, {})], "no org.cncf.model.filepath"),
        (
            [
                Blob(
                    b"x",
                    "application/vnd.cncf.model.weight.v1.exe",
                    {"org.cncf.model.filepath": "x"},
                )
            ],
            "not a ModelPack layer",
        ),
        ([], "no layers"),
    ],
)
def test_hostile_modelpacks_are_refused(layers: list[Blob], message: str) -> None:
    with pytest.raises(InvalidModel, match=message):
        model_layout(modelpack(*layers))


def test_unknown_artifact_kind_is_refused() -> None:
    m = parsed(
        Blob(b"{}", "application/vnd.example.config", {}),
        [Blob(b"x", "application/x", {})],
        "application/vnd.example",
    )
    with pytest.raises(InvalidModel, match="unknown kind of artifact"):
        model_layout(m)


@pytest.mark.parametrize(
    ("name", "clean"),
    [
        ("a", "a"),
        ("./a//b/", "a/b"),
        ("a/./b", "a/b"),
        (".hidden", ".hidden"),
        ("é/ü.bin", "é/ü.bin"),
    ],
)
def test_safe_relative_path(name: str, clean: str) -> None:
    assert safe_relative_path(name) == clean


@pytest.mark.parametrize(
    ("name", "kind", "strip", "expected"),
    [
        ("a/b", MemberType.FILE, "", "a/b"),
        ("./a/", MemberType.DIR, "", "a"),
        ("models/x.bin", MemberType.FILE, "models", "x.bin"),
        ("./models/x.bin", MemberType.FILE, "models", "x.bin"),
        ("models/", MemberType.DIR, "models", None),
        ("usr/bin/sh", MemberType.SYMLINK, "models", None),  # outside /models: skipped unseen
        ("dev/null", MemberType.DEVICE, "models", None),
        ("models/.wh..wh..opq", MemberType.FILE, "models", None),
    ],
)
def test_tar_members(name: str, kind: MemberType, strip: str, expected: str | None) -> None:
    action = check_tar_member(name, kind, strip)
    assert (action.path if action else None) == expected


def test_whiteout_names_the_deleted_path() -> None:
    action = check_tar_member("models/sub/.wh.old.bin", MemberType.FILE, "models")
    assert action is not None and action.whiteout and action.path == "sub/old.bin"


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("link", MemberType.SYMLINK, "symlink"),
        ("hard", MemberType.HARDLINK, "hardlink"),
        ("dev", MemberType.DEVICE, "device"),
        ("fifo", MemberType.FIFO, "fifo"),
        ("../x", MemberType.FILE, "leaves"),
        ("/x", MemberType.FILE, "absolute"),
        ("models/../../x", MemberType.FILE, "leaves"),
    ],
)
def test_hostile_tar_members(name: str, kind: MemberType, message: str) -> None:
    with pytest.raises(InvalidModel, match=message):
        check_tar_member(name, kind, "models" if name.startswith("models") else "")
