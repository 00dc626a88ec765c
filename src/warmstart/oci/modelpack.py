"""CNCF ModelPack artifacts (github.com/modelpack/model-spec), built from a list of files. Pure.

A model artifact is an OCI image manifest with ``artifactType``
``application/vnd.cncf.model.manifest.v1+json``, a config blob
``application/vnd.cncf.model.config.v1+json`` (``descriptor``, ``config``, ``modelfs``) and one
layer per file. Here every layer is *raw* (the file's bytes as they are, no tar): weights
``weight.v1.raw``, their configuration and tokenizer files ``weight.config.v1.raw``,
documentation ``doc.v1.raw``, code ``code.v1.raw``. Each layer names its file twice: the spec's
``org.cncf.model.filepath`` and ``org.opencontainers.image.title``, which ORAS clients use as
the file name. A file whose kind is only guessed (an unknown extension, taken as weights) also
carries ``org.cncf.model.file.mediatype.untested: "true"``, as the spec's annotations provide.

Output is deterministic: layers sorted by path, JSON with fixed key order and no timestamps,
so the same files give the same manifest digest.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from warmstart.oci import mediatypes as mt
from warmstart.oci.digest import Digest
from warmstart.oci.manifest import Descriptor
from warmstart.oci.model_paths import safe_relative_path

ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.cncf.model.config.v1+json"
WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_CONFIG_RAW = "application/vnd.cncf.model.weight.config.v1.raw"
DOC_RAW = "application/vnd.cncf.model.doc.v1.raw"
CODE_RAW = "application/vnd.cncf.model.code.v1.raw"
DATASET_RAW = "application/vnd.cncf.model.dataset.v1.raw"
RAW_LAYER_TYPES = frozenset({WEIGHT_RAW, WEIGHT_CONFIG_RAW, DOC_RAW, CODE_RAW, DATASET_RAW})

ANNOTATION_FILEPATH = "org.cncf.model.filepath"
ANNOTATION_UNTESTED = "org.cncf.model.file.mediatype.untested"
ANNOTATION_TITLE = "org.opencontainers.image.title"

WEIGHT_EXTENSIONS = frozenset(
    {
        ".safetensors",
        ".bin",
        ".gguf",
        ".ggml",
        ".onnx",
        ".onnx_data",
        ".pt",
        ".pth",
        ".ckpt",
        ".h5",
        ".keras",
        ".msgpack",
        ".tflite",
        ".pb",
        ".npz",
        ".npy",
    }
)
CONFIG_EXTENSIONS = frozenset(
    {".json", ".txt", ".model", ".tiktoken", ".yaml", ".yml", ".jinja", ".vocab"}
)
DOC_EXTENSIONS = frozenset({".md", ".rst"})
DOC_NAME_PREFIXES = ("readme", "license", "licence", "notice", "copying")
CODE_EXTENSIONS = frozenset({".py", ".ipynb", ".sh"})
# Weight file extension -> the config's ``format`` (the spec's examples: onnx, safetensors,
# gguf, pt). ``.bin`` says nothing certain (PyTorch pickles, GGML, ...): no format from it.
FORMATS = {
    ".safetensors": "safetensors",
    ".gguf": "gguf",
    ".onnx": "onnx",
    ".pt": "pt",
    ".pth": "pt",
}


@dataclass(frozen=True)
class FileKind:
    """A file's layer media type, and whether it was only guessed."""

    media_type: str
    untested: bool = False


def _extension(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def classify(path: str) -> FileKind:
    """The layer media type of the file at ``path`` (relative, '/'-separated), from its name.

    README*, LICENSE* (and LICENCE, NOTICE, COPYING) and ``*.md``/``*.rst`` are documentation;
    ``*.py``, ``*.ipynb``, ``*.sh`` code; weights by extension (safetensors, bin, gguf, onnx,
    pt, ...); ``*.json``, ``*.txt``, ``*.model``, ... configuration and tokenizer files. Anything
    else is taken as weights and marked untested.
    """
    name = path.rsplit("/", 1)[-1]
    ext = _extension(name)
    if name.lower().startswith(DOC_NAME_PREFIXES) or ext in DOC_EXTENSIONS:
        return FileKind(DOC_RAW)
    if ext in CODE_EXTENSIONS:
        return FileKind(CODE_RAW)
    if ext in WEIGHT_EXTENSIONS:
        return FileKind(WEIGHT_RAW)
    if ext in CONFIG_EXTENSIONS:
        return FileKind(WEIGHT_CONFIG_RAW)
    return FileKind(WEIGHT_RAW, untested=True)


def check_path(path: str) -> str:
    """``path`` if it is a clean relative '/'-separated path (exactly what a node will
    materialise it as: :func:`~warmstart.oci.model_paths.safe_relative_path`), else
    :class:`ValueError`."""
    if safe_relative_path(path, "file path") != path:
        raise ValueError(f"not a clean relative file path: {path!r}")
    return path


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: its path in the model directory, digest and size."""

    path: str  # relative, '/'-separated
    digest: Digest
    size: int

    def __post_init__(self) -> None:
        check_path(self.path)
        if self.size < 0:
            raise ValueError(f"{self.path}: negative size {self.size}")


@dataclass(frozen=True)
class ModelInfo:
    """What goes into the config besides the files: ``descriptor.name`` and ``config.format``
    (None: inferred from the weights' extensions when they agree)."""

    name: str | None = None
    format: str | None = None


def layer_descriptor(file: ModelFile) -> Descriptor:
    kind = classify(file.path)
    annotations = {ANNOTATION_FILEPATH: file.path, ANNOTATION_TITLE: file.path}
    if kind.untested:
        annotations[ANNOTATION_UNTESTED] = "true"
    return Descriptor(kind.media_type, file.digest, file.size, annotations=annotations)


def infer_format(files: Iterable[ModelFile]) -> str | None:
    """The weights' format when every weight file with a known format has the same one."""
    found = {
        FORMATS[ext]
        for f in files
        if classify(f.path).media_type == WEIGHT_RAW and (ext := _extension(f.path)) in FORMATS
    }
    return found.pop() if len(found) == 1 else None


def sorted_files(files: Iterable[ModelFile]) -> list[ModelFile]:
    """The files in layer order (by path); a path twice is a :class:`ValueError`."""
    ordered = sorted(files, key=lambda f: f.path)
    for a, b in pairwise(ordered):
        if a.path == b.path:
            raise ValueError(f"file {a.path!r} is listed twice")
    if not ordered:
        raise ValueError("a model needs at least one file")
    return ordered


def model_config(files: Sequence[ModelFile], info: ModelInfo = ModelInfo()) -> dict[str, Any]:
    """The config document (``application/vnd.cncf.model.config.v1+json``) of ``files``.

    ``modelfs.diffIds`` are the layers' digests in layer order: a raw layer is uncompressed, so
    its DiffID is its digest.
    """
    ordered = sorted_files(files)
    descriptor: dict[str, Any] = {}
    if info.name:
        descriptor["name"] = info.name
    config: dict[str, Any] = {}
    fmt = info.format or infer_format(ordered)
    if fmt:
        config["format"] = fmt
    return {
        "descriptor": descriptor,
        "config": config,
        "modelfs": {"type": "layers", "diffIds": [str(f.digest) for f in ordered]},
    }


def canonical_json(doc: Any) -> bytes:
    """Compact UTF-8 JSON in the key order given: the same document, the same bytes."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def descriptor_json(desc: Descriptor) -> dict[str, Any]:
    out: dict[str, Any] = {
        "mediaType": desc.media_type,
        "digest": str(desc.digest),
        "size": desc.size,
    }
    if desc.annotations:
        out["annotations"] = dict(sorted(desc.annotations.items()))
    return out


@dataclass(frozen=True)
class ModelArtifact:
    """A built artifact: the config blob, the layers and the manifest bytes to push."""

    config: bytes
    config_descriptor: Descriptor
    layers: tuple[Descriptor, ...]
    manifest: bytes

    media_type = mt.OCI_MANIFEST
    artifact_type = ARTIFACT_TYPE

    @property
    def digest(self) -> Digest:
        return Digest.of(self.manifest)

    @property
    def total_size(self) -> int:
        """Bytes of the config and every layer."""
        return self.config_descriptor.size + sum(d.size for d in self.layers)


def build_artifact(files: Iterable[ModelFile], info: ModelInfo = ModelInfo()) -> ModelArtifact:
    """Files -> layer descriptors -> config -> manifest."""
    ordered = sorted_files(files)
    config = canonical_json(model_config(ordered, info))
    config_desc = Descriptor(CONFIG_MEDIA_TYPE, Digest.of(config), len(config))
    layers = tuple(layer_descriptor(f) for f in ordered)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": descriptor_json(config_desc),
            "layers": [descriptor_json(d) for d in layers],
        }
    )
    return ModelArtifact(config, config_desc, layers, manifest)


__all__ = [
    "ANNOTATION_FILEPATH",
    "ANNOTATION_TITLE",
    "ANNOTATION_UNTESTED",
    "ARTIFACT_TYPE",
    "CODE_RAW",
    "CONFIG_MEDIA_TYPE",
    "DATASET_RAW",
    "DOC_RAW",
    "RAW_LAYER_TYPES",
    "WEIGHT_CONFIG_RAW",
    "WEIGHT_RAW",
    "FileKind",
    "ModelArtifact",
    "ModelFile",
    "ModelInfo",
    "build_artifact",
    "canonical_json",
    "check_path",
    "classify",
    "descriptor_json",
    "infer_format",
    "layer_descriptor",
    "model_config",
    "sorted_files",
]
