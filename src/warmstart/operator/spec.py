"""The ImageCache resource (``warmstart.dev/v1alpha1``) and the validation of its spec (pure).

An ImageCache keeps ``images`` (hot or warm, as ``hot`` says) and ``models`` (always hot: each
materialised read-only by the agents) on the same selected nodes; at least one of the two lists
is given.

The CRD's OpenAPI schema (deploy/kubernetes/base/crd-imagecache.yaml) refuses most bad specs at
the API server; :func:`validate_spec` checks everything again with warmstart's own reference
parser and label rules, so an ImageCache the schema let through (or a cluster without the
schema) still gets a one-line ``InvalidSpec`` condition instead of a crash loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from warmstart.kube.selectors import SelectorError, check_labels
from warmstart.oci import OCIError, Reference

GROUP = "warmstart.dev"
VERSION = "v1alpha1"
PLURAL = "imagecaches"
KIND = "ImageCache"
API_VERSION = f"{GROUP}/{VERSION}"

MAX_IMAGES = 64
MAX_MODELS = 16
MAX_NODES = 100_000
KNOWN_FIELDS = frozenset({"images", "models", "nodeSelector", "nodes", "hot", "imagePullSecrets"})


@dataclass(frozen=True)
class ImageCacheSpec:
    """A valid spec: normalised references (``docker.io/library/busybox:latest``)."""

    images: tuple[str, ...]
    node_selector: Mapping[str, str] = field(default_factory=dict)
    nodes: int | None = None  # None: every matching node
    hot: bool = True  # the images'; models are always materialised (hot)
    pull_secrets: tuple[str, ...] = ()
    models: tuple[str, ...] = ()  # model artifacts, materialised and pinned like the images

    @property
    def references(self) -> tuple[str, ...]:
        """Images and models: what the agents pin for this ImageCache."""
        return (*self.images, *self.models)


def _references(value: Any, where: str, limit: int, problems: list[str]) -> tuple[str, ...]:
    """A list of references (``where``: ``spec.images``); None is an empty list."""
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        problems.append(f"{where} must be a non-empty list of references")
        return ()
    if len(value) > limit:
        problems.append(f"{where} has {len(value)} entries; at most {limit}")
    out: list[str] = []
    for i, text in enumerate(value):
        if not isinstance(text, str):
            problems.append(f"{where}[{i}] must be a string")
            continue
        try:
            ref = str(Reference.parse(text))
        except OCIError as e:
            problems.append(f"{where}[{i}] {text!r}: {e}")
            continue
        if ref not in out:
            out.append(ref)
    return tuple(out)


def _nodes(value: Any, problems: list[str]) -> int | None:
    if value is None or value == "all":
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.isdigit():
            return int(value)
        problems.append(f'spec.nodes must be "all" or a whole number >= 0, not {value!r}')
        return None
    if value < 0 or value > MAX_NODES:
        problems.append(f"spec.nodes must be between 0 and {MAX_NODES}, not {value}")
        return None
    return value


def _secrets(value: Any, problems: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append("spec.imagePullSecrets must be a list of {name: ...}")
        return ()
    names: list[str] = []
    for i, entry in enumerate(value):
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or not name:
            problems.append(f"spec.imagePullSecrets[{i}] must be {{name: <secret name>}}")
        elif name not in names:
            names.append(name)
    return tuple(names)


def validate_spec(spec: Any) -> ImageCacheSpec | list[str]:
    """The spec, or the list of what is wrong with it (each one line)."""
    if not isinstance(spec, Mapping):
        return ["spec must be an object"]
    problems: list[str] = []
    unknown = sorted(str(k) for k in spec if k not in KNOWN_FIELDS)
    if unknown:
        problems.append(f"spec has unknown fields: {', '.join(unknown)}")
    images = _references(spec.get("images"), "spec.images", MAX_IMAGES, problems)
    models = _references(spec.get("models"), "spec.models", MAX_MODELS, problems)
    if spec.get("images") is None and spec.get("models") is None:
        problems.append("spec.images or spec.models must be a non-empty list of references")
    both = sorted(set(images) & set(models))
    if both:
        problems.append(f"spec.images and spec.models both list {', '.join(both)}")
    try:
        selector = check_labels(spec.get("nodeSelector"), "spec.nodeSelector")
    except SelectorError as e:
        problems.append(str(e))
        selector = {}
    nodes = _nodes(spec.get("nodes"), problems)
    hot = spec.get("hot", True)
    if not isinstance(hot, bool):
        problems.append(f"spec.hot must be true or false, not {hot!r}")
    secrets = _secrets(spec.get("imagePullSecrets"), problems)
    if problems:
        return problems
    return ImageCacheSpec(images, selector, nodes, bool(hot), secrets, models)


__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "ImageCacheSpec",
    "validate_spec",
]
