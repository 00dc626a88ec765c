"""ModelPack artifacts from file lists: media types, annotations, config, deterministic bytes."""

from __future__ import annotations

import json

import pytest

from warmstart.oci import Digest, ImageManifest, parse_manifest
from warmstart.oci import mediatypes as mt
from warmstart.oci.modelpack import (
    ANNOTATION_FILEPATH,
    ANNOTATION_TITLE,
    ANNOTATION_UNTESTED,
    ARTIFACT_TYPE,
    CODE_RAW,
    CONFIG_MEDIA_TYPE,
    DOC_RAW,
    WEIGHT_CONFIG_RAW,
    WEIGHT_RAW,
    ModelFile,
    ModelInfo,
    build_artifact,
    classify,
    infer_format,
    model_config,
)


def mf(path: str, content: bytes | None = None) -> ModelFile:
    data = path.encode() if content is None else content
    return ModelFile(path, Digest.of(data), len(data))


FILES = [
    mf("model-00002-of-00002.safetensors", b"w2" * 100),
    mf("config.json"),
    mf("model-00001-of-00002.safetensors", b"w1" * 100),
    mf("tokenizer/tokenizer.json"),
    mf("README.md"),
    mf("modeling_x.py"),
    mf("model.safetensors.index.json"),
]


@pytest.mark.parametrize(
    ("path", "media_type", "untested"),
    [
        ("model.safetensors", WEIGHT_RAW, False),
        ("pytorch_model-00001-of-00003.bin", WEIGHT_RAW, False),
        ("q4.GGUF", WEIGHT_RAW, False),
        ("onnx/model.onnx", WEIGHT_RAW, False),
        ("weights.pt", WEIGHT_RAW, False),
        ("config.json", WEIGHT_CONFIG_RAW, False),
        ("tokenizer.json", WEIGHT_CONFIG_RAW, False),
        ("generation_config.json", WEIGHT_CONFIG_RAW, False),
        ("model.safetensors.index.json", WEIGHT_CONFIG_RAW, False),
        ("vocab.txt", WEIGHT_CONFIG_RAW, False),
        ("merges.txt", WEIGHT_CONFIG_RAW, False),
        ("tokenizer.model", WEIGHT_CONFIG_RAW, False),
        ("README.md", DOC_RAW, False),
        ("README", DOC_RAW, False),
        ("LICENSE", DOC_RAW, False),
        ("LICENSE.txt", DOC_RAW, False),
        ("docs/usage.md", DOC_RAW, False),
        ("modeling_llama.py", CODE_RAW, False),
        ("scripts/run.sh", CODE_RAW, False),
        ("weird.blob", WEIGHT_RAW, True),
        ("noextension", WEIGHT_RAW, True),
        (".hidden", WEIGHT_RAW, True),
    ],
)
def test_classify(path: str, media_type: str, untested: bool) -> None:
    kind = classify(path)
    assert (kind.media_type, kind.untested) == (media_type, untested)


def test_manifest_shape() -> None:
    art = build_artifact(FILES, ModelInfo(name="tiny"))
    doc = json.loads(art.manifest)
    assert list(doc) == ["schemaVersion", "mediaType", "artifactType", "config", "layers"]
    assert doc["schemaVersion"] == 2
    assert doc["mediaType"] == mt.OCI_MANIFEST
    assert doc["artifactType"] == ARTIFACT_TYPE
    assert doc["config"] == {
        "mediaType": CONFIG_MEDIA_TYPE,
        "digest": str(Digest.of(art.config)),
        "size": len(art.config),
    }
    paths = [layer["annotations"][ANNOTATION_FILEPATH] for layer in doc["layers"]]
    assert paths == sorted(f.path for f in FILES)
    by_path = {f.path: f for f in FILES}
    for layer in doc["layers"]:
        path = layer["annotations"][ANNOTATION_FILEPATH]
        assert layer["annotations"][ANNOTATION_TITLE] == path
        assert ANNOTATION_UNTESTED not in layer["annotations"]
        assert layer["digest"] == str(by_path[path].digest)
        assert layer["size"] == by_path[path].size
        assert layer["mediaType"] == classify(path).media_type
    assert art.digest == Digest.of(art.manifest)
    assert art.total_size == len(art.config) + sum(f.size for f in FILES)

    # the project's own parser takes it as an image manifest with an artifact type
    parsed = parse_manifest(art.manifest)
    assert isinstance(parsed, ImageManifest)
    assert parsed.artifact_type == ARTIFACT_TYPE
    assert parsed.config.media_type == CONFIG_MEDIA_TYPE


def test_config_follows_the_spec() -> None:
    art = build_artifact(FILES, ModelInfo(name="tiny"))
    config = json.loads(art.config)
    assert list(config) == ["descriptor", "config", "modelfs"]
    assert config["descriptor"] == {"name": "tiny"}
    assert config["config"] == {"format": "safetensors"}
    layers = json.loads(art.manifest)["layers"]
    assert config["modelfs"] == {"type": "layers", "diffIds": [d["digest"] for d in layers]}
    # no name: an empty descriptor (every field of it is optional, the object is not)
    assert model_config(FILES)["descriptor"] == {}
    assert model_config(FILES, ModelInfo(format="pt"))["config"] == {"format": "pt"}


def test_same_files_same_digest_in_any_order() -> None:
    a = build_artifact(FILES, ModelInfo(name="tiny"))
    b = build_artifact(list(reversed(FILES)), ModelInfo(name="tiny"))
    assert a.manifest == b.manifest and a.config == b.config
    assert a.digest == b.digest
    changed = [*FILES[:-1], mf("model.safetensors.index.json", b"other")]
    assert build_artifact(changed, ModelInfo(name="tiny")).digest != a.digest
    assert build_artifact(FILES, ModelInfo(name="other")).digest != a.digest


def test_untested_kind_is_annotated() -> None:
    art = build_artifact([mf("weights.xyz"), mf("config.json")])
    layer = next(d for d in art.layers if d.annotations[ANNOTATION_FILEPATH] == "weights.xyz")
    assert layer.annotations[ANNOTATION_UNTESTED] == "true"
    assert layer.media_type == WEIGHT_RAW


def test_format_is_inferred_only_when_the_weights_agree() -> None:
    assert infer_format([mf("a.gguf"), mf("config.json")]) == "gguf"
    assert infer_format([mf("a.pt"), mf("b.pth")]) == "pt"
    assert infer_format([mf("a.safetensors"), mf("b.gguf")]) is None
    assert infer_format([mf("pytorch_model.bin")]) is None
    assert infer_format([mf("config.json")]) is None


def test_non_ascii_paths_are_kept_as_utf8() -> None:
    art = build_artifact([mf("modèle/poids.safetensors")])
    assert "modèle/poids.safetensors".encode() in art.manifest
    assert json.loads(art.manifest)["layers"][0]["annotations"][ANNOTATION_TITLE] == (
        "modèle/poids.safetensors"
    )


@pytest.mark.parametrize("path", ["", "/abs", "a//b", "./a", "a/../b", "a/", "tab\tname"])
def test_unclean_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        mf(path, b"x")


def test_duplicates_and_empty_lists_are_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        build_artifact([mf("a.bin"), mf("a.bin")])
    with pytest.raises(ValueError, match="at least one file"):
        build_artifact([])
