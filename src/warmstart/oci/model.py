"""Model artifacts: which files an OCI manifest holds and where they go. Pure, no I/O.

Three shapes are accepted, as people publish them:

- **CNCF ModelPack**: ``artifactType`` (or config) ``application/vnd.cncf.model.*``; layers
  ``application/vnd.cncf.model.<kind>.v1.<packing>`` with kind ``weight``, ``weight.config``,
  ``doc``, ``code``, ``dataset`` and packing ``raw``, ``tar``, ``tar+gzip``, ``tar+zstd``; a raw
  layer's file name is its ``org.cncf.model.filepath`` annotation. The older draft's
  ``vnd.cnai.*`` / ``org.cnai.model.filepath`` names are read too.
- **an ORAS artifact**: any other non-image manifest whose every layer carries
  ``org.opencontainers.image.title`` (what ``oras push`` writes); a layer marked
  ``io.deis.oras.content.unpack`` is a directory packed as tar (+gzip) under that title.
- **a modelcar** (KServe): an ordinary container image with the model under ``/models``; its
  tar layers are read for the entries below ``models/`` only.

:func:`model_layout` turns a manifest into a :class:`ModelLayout` or raises
:class:`InvalidModel` (one line); :func:`safe_relative_path` and :func:`check_tar_member` are
the path rules that every name from an untrusted artifact passes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from warmstart.oci import mediatypes as mt
from warmstart.oci import modelpack
from warmstart.oci.errors import InvalidModel
from warmstart.oci.manifest import Descriptor, ImageManifest
from warmstart.oci.model_paths import safe_relative_path

MODELPACK_ARTIFACT = modelpack.ARTIFACT_TYPE
MODELPACK_CONFIG = modelpack.CONFIG_MEDIA_TYPE
CNAI_ARTIFACT = "application/vnd.cnai.model.manifest.v1+json"
CNAI_CONFIG = "application/vnd.cnai.model.config.v1+json"
MODELPACK_ARTIFACTS = frozenset({MODELPACK_ARTIFACT, CNAI_ARTIFACT})
MODELPACK_CONFIGS = frozenset({MODELPACK_CONFIG, CNAI_CONFIG})
FILEPATH_ANNOTATIONS = (modelpack.ANNOTATION_FILEPATH, "org.cnai.model.filepath")
TITLE_ANNOTATION = modelpack.ANNOTATION_TITLE
ORAS_UNPACK_ANNOTATION = "io.deis.oras.content.unpack"
MODELCAR_DIR = "models"  # KServe's modelcar convention: the model under /models

# application/vnd.cncf.model.weight.config.v1.tar+zstd -> ("weight.config", "tar+zstd")
_MODELPACK_LAYER = re.compile(
    r"^application/vnd\.(?:cncf|cnai)\.model\."
    r"(weight|weight\.config|doc|code|dataset)\.v1\.(raw|tar|tar\+gzip|tar\+zstd)$"
)
_IMAGE_CONFIGS = frozenset({mt.DOCKER_CONFIG, mt.OCI_CONFIG})
_IMAGE_LAYERS = {
    mt.OCI_LAYER: "tar",
    mt.OCI_LAYER_GZIP: "tar+gzip",
    mt.OCI_LAYER_ZSTD: "tar+zstd",
    mt.DOCKER_LAYER_GZIP: "tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "tar+zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "tar+gzip",
}
MAX_LAYERS = 10_000


class ModelFormat(StrEnum):
    MODELPACK = "modelpack"
    ARTIFACT = "artifact"  # ORAS-style: layers named by org.opencontainers.image.title
    MODELCAR = "modelcar"  # a container image with the model under /models


class LayerKind(StrEnum):
    RAW = "raw"  # the blob is the file itself: hard-linked, never copied
    TAR = "tar"
    TAR_GZIP = "tar+gzip"
    TAR_ZSTD = "tar+zstd"

    @property
    def is_tar(self) -> bool:
        return self is not LayerKind.RAW


@dataclass(frozen=True)
class ModelLayer:
    """One layer and where its bytes go under the model's root.

    ``path``: for a raw layer the file's path; for a tar layer the directory its members are
    extracted into (``""`` is the root). ``strip``: a tar layer keeps only members below this
    prefix, with the prefix removed (a modelcar's ``models/``); ``""`` keeps every member."""

    descriptor: Descriptor
    kind: LayerKind
    path: str
    strip: str = ""
    role: str = "weight"  # ModelPack kind (weight, weight.config, doc, code, dataset) or "layer"

    @property
    def size(self) -> int:
        return self.descriptor.size


@dataclass(frozen=True)
class ModelLayout:
    format: ModelFormat
    config: Descriptor
    layers: tuple[ModelLayer, ...]
    artifact_type: str | None = None

    @property
    def raw_files(self) -> tuple[ModelLayer, ...]:
        return tuple(layer for layer in self.layers if layer.kind is LayerKind.RAW)

    @property
    def total_size(self) -> int:
        """Bytes of the blobs (config and layers) the model needs."""
        return self.config.size + sum(layer.size for layer in self.layers)

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Config first, then every layer, each digest once."""
        seen: dict[object, Descriptor] = {self.config.digest: self.config}
        for layer in self.layers:
            seen.setdefault(layer.descriptor.digest, layer.descriptor)
        return tuple(seen.values())


class MemberType(StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    DEVICE = "device"  # character or block device
    FIFO = "fifo"
    OTHER = "other"


@dataclass(frozen=True)
class MemberAction:
    """What to do with one tar member: write ``path`` (a file or a directory), or delete
    ``path`` (an overlay whiteout in a modelcar layer)."""

    path: str
    kind: MemberType
    whiteout: bool = False


def check_tar_member(
    name: str, kind: MemberType, strip: str = "", where: str = "tar layer"
) -> MemberAction | None:
    """The rule for one member of an untrusted tar layer.

    ``None``: skip it (outside ``strip``, or the ``strip`` directory itself). Otherwise the
    member's clean path below the model root. Links (symbolic or hard), devices and FIFOs are
    refused whatever their target: a model is regular files and directories. A whiteout
    (``.wh.NAME``) below ``strip`` means "delete NAME"; an opaque-directory marker is kept as a
    no-op (the directory is written fresh)."""
    raw = name
    while raw.startswith("./"):
        raw = raw[2:]
    if strip:
        prefix = strip.rstrip("/") + "/"
        if raw.rstrip("/") == strip.rstrip("/") or not raw.startswith(prefix):
            return None
        raw = raw[len(prefix) :]
    path = safe_relative_path(raw, f"{where} member")
    base = path.rsplit("/", 1)[-1]
    if base.startswith(".wh."):
        if base == ".wh..wh..opq":
            return None
        target = path[: -len(base)] + base[len(".wh.") :]
        return MemberAction(safe_relative_path(target, f"{where} whiteout"), kind, whiteout=True)
    if kind not in (MemberType.FILE, MemberType.DIR):
        raise InvalidModel(
            f"{where} member {path!r} is a {kind.value}: a model holds only regular files "
            "and directories"
        )
    return MemberAction(path, kind)


# -- layouts -------------------------------------------------------------------------------------


def is_modelpack(manifest: ImageManifest) -> bool:
    return (
        manifest.artifact_type in MODELPACK_ARTIFACTS
        or manifest.config.media_type in MODELPACK_CONFIGS
    )


def is_model_candidate(manifest: ImageManifest) -> bool:
    """Whether a manifest is a model artifact rather than a container image (a modelcar is a
    container image: it is a model only when asked for as one)."""
    return manifest.config.media_type not in _IMAGE_CONFIGS or is_modelpack(manifest)


def model_layout(manifest: ImageManifest, *, modelcar: bool | None = None) -> ModelLayout:
    """Where every layer of ``manifest`` goes, or :class:`InvalidModel`.

    ``modelcar``: ``None`` accepts a container image as a modelcar (its ``/models``); ``False``
    refuses container images; ``True`` requires one."""
    if len(manifest.layers) > MAX_LAYERS:
        raise InvalidModel(f"the artifact has {len(manifest.layers)} layers, over {MAX_LAYERS}")
    if not manifest.layers:
        raise InvalidModel("the artifact has no layers: there is no model in it")
    if is_modelpack(manifest):
        if modelcar:
            raise InvalidModel("a ModelPack artifact is not a modelcar image")
        layout = _modelpack(manifest)
    elif manifest.config.media_type in _IMAGE_CONFIGS:
        if modelcar is False:
            raise InvalidModel(
                "this is a container image, not a model artifact (a modelcar keeps its model "
                "under /models)"
            )
        layout = _modelcar(manifest)
    else:
        if modelcar:
            raise InvalidModel(
                f"not a container image (config {manifest.config.media_type}): not a modelcar"
            )
        layout = _titled(manifest)
    check_names(layout)
    return layout


def _modelpack(manifest: ImageManifest) -> ModelLayout:
    layers = []
    for i, desc in enumerate(manifest.layers):
        match = _MODELPACK_LAYER.match(desc.media_type)
        if match is None:
            raise InvalidModel(
                f"layers[{i}] has media type {desc.media_type[:100]!r}, not a ModelPack layer "
                "(application/vnd.cncf.model.<weight|weight.config|doc|code|dataset>.v1.<raw|tar|"
                "tar+gzip|tar+zstd>)"
            )
        role, packing = match.group(1), LayerKind(match.group(2))
        named = _annotation(desc, FILEPATH_ANNOTATIONS) or _annotation(desc, (TITLE_ANNOTATION,))
        if packing is LayerKind.RAW:
            if named is None:
                raise InvalidModel(
                    f"layers[{i}] ({desc.digest.short}) is a raw file with no "
                    f"{FILEPATH_ANNOTATIONS[0]} annotation: its file name is unknown"
                )
            path = safe_relative_path(named, f"layers[{i}] file path")
        else:
            # A tar layer's members carry their own paths below the model root; its filepath
            # annotation names what was packed (checked, not used as a prefix).
            if named is not None:
                safe_relative_path(named, f"layers[{i}] file path")
            path = ""
        layers.append(ModelLayer(desc, packing, path, role=role))
    return ModelLayout(
        ModelFormat.MODELPACK, manifest.config, tuple(layers), manifest.artifact_type
    )


def _titled(manifest: ImageManifest) -> ModelLayout:
    layers = []
    for i, desc in enumerate(manifest.layers):
        title = _annotation(desc, (TITLE_ANNOTATION,))
        if title is None:
            raise InvalidModel(
                f"unknown kind of artifact (artifactType {manifest.artifact_type or 'none'}, "
                f"config {manifest.config.media_type}): layers[{i}] has no {TITLE_ANNOTATION} "
                "annotation, so its file name is unknown"
            )
        path = safe_relative_path(title, f"layers[{i}] title")
        unpack = desc.annotations.get(ORAS_UNPACK_ANNOTATION, "").lower() == "true"
        packing = _IMAGE_LAYERS.get(desc.media_type) if unpack else None
        if unpack and packing is None:
            packing = "tar+gzip" if desc.media_type.endswith("gzip") else "tar"
        if packing is None:
            layers.append(ModelLayer(desc, LayerKind.RAW, path, role="layer"))
        else:
            layers.append(ModelLayer(desc, LayerKind(packing), path, role="layer"))
    return ModelLayout(ModelFormat.ARTIFACT, manifest.config, tuple(layers), manifest.artifact_type)


def _modelcar(manifest: ImageManifest) -> ModelLayout:
    layers = []
    for i, desc in enumerate(manifest.layers):
        packing = _IMAGE_LAYERS.get(desc.media_type)
        if packing is None:
            raise InvalidModel(
                f"layers[{i}] of the modelcar image has media type {desc.media_type[:100]!r}, "
                "not an image layer"
            )
        layers.append(ModelLayer(desc, LayerKind(packing), "", strip=MODELCAR_DIR, role="layer"))
    return ModelLayout(ModelFormat.MODELCAR, manifest.config, tuple(layers), None)


def _annotation(desc: Descriptor, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = desc.annotations.get(key)
        if value:
            return value
    return None


def check_names(layout: ModelLayout) -> None:
    """Two raw layers may not claim one name, nor a file be another's directory. (Tar members
    that collide are found while extracting.)"""
    owners: dict[str, int] = {}
    for i, layer in enumerate(layout.layers):
        if layer.kind is not LayerKind.RAW:
            continue
        if layer.path in owners:
            raise InvalidModel(
                f"layers[{owners[layer.path]}] and layers[{i}] both claim the file {layer.path!r}"
            )
        owners[layer.path] = i
    for path, i in owners.items():
        parts = path.split("/")
        for cut in range(1, len(parts)):
            parent = "/".join(parts[:cut])
            if parent in owners:
                raise InvalidModel(
                    f"layers[{owners[parent]}] claims {parent!r} as a file, but layers[{i}] "
                    f"puts {path!r} inside it"
                )


__all__ = [
    "FILEPATH_ANNOTATIONS",
    "MODELCAR_DIR",
    "MODELPACK_ARTIFACT",
    "MODELPACK_CONFIG",
    "ORAS_UNPACK_ANNOTATION",
    "TITLE_ANNOTATION",
    "InvalidModel",
    "LayerKind",
    "MemberAction",
    "MemberType",
    "ModelFormat",
    "ModelLayer",
    "ModelLayout",
    "check_names",
    "check_tar_member",
    "is_model_candidate",
    "is_modelpack",
    "model_layout",
    "safe_relative_path",
]
