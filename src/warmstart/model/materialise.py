"""Materialise a model once: its read-only directory in the store, built from verified blobs.

Raw layers become hard links to the store's blobs (no copy, whatever their size); tar layers
are extracted (:mod:`warmstart.model.extract`). The directory is built under the store's
``models/tmp/`` and renamed into ``models/sha256/<manifest hex>/`` only when every file is in
(:meth:`ContentStore.commit_model_dir`); anything that fails leaves no directory behind. The
caller makes sure every blob is in the store first (the agent's pre-warm fetches them) and pins
them while this runs.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from warmstart.model.extract import extract_layer
from warmstart.model.tree import ensure_parent
from warmstart.oci import Digest
from warmstart.oci.model import InvalidModel, LayerKind, ModelFormat, ModelLayout
from warmstart.store import ContentStore
from warmstart.store.errors import BlobNotFound
from warmstart.store.model_dirs import ModelDirStats, remove_tree


@dataclass(frozen=True)
class Materialised:
    path: Path
    files: int
    linked_bytes: int  # raw layers: hard links, no bytes copied
    extracted_bytes: int  # tar layers: written once
    seconds: float
    built: bool  # False: it was already materialised


class ModelMaterialiser:
    """Builds model directories in one store; concurrent requests for one model share a build."""

    def __init__(self, store: ContentStore) -> None:
        self._store = store
        self._builds: dict[Digest, asyncio.Future[Materialised]] = {}

    async def materialise(self, manifest_digest: Digest, layout: ModelLayout) -> Materialised:
        started = time.monotonic()
        existing = self._store.model_dir(manifest_digest)
        if existing is not None:
            return Materialised(existing, 0, 0, 0, time.monotonic() - started, built=False)
        running = self._builds.get(manifest_digest)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Materialised] = asyncio.get_running_loop().create_future()
        self._builds[manifest_digest] = future
        try:
            result = await asyncio.to_thread(build_model_dir, self._store, manifest_digest, layout)
            future.set_result(result)
            return result
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            self._builds.pop(manifest_digest, None)


def build_model_dir(
    store: ContentStore, manifest_digest: Digest, layout: ModelLayout
) -> Materialised:
    """Blocking: build, verify and commit the model's directory."""
    started = time.monotonic()
    work = store.new_model_dir(manifest_digest)
    try:
        links: Counter[Digest] = Counter()
        files = linked = extracted = 0
        for i, layer in enumerate(layout.layers):
            desc = layer.descriptor
            blob = store.verified_path(desc.digest, desc.size)
            if blob is None:
                raise BlobNotFound(
                    f"layer {desc.digest} of the model is not (or no longer) in the store: "
                    "pre-warm the model again"
                )
            where = f"layers[{i}] ({desc.digest.short})"
            if layer.kind is LayerKind.RAW:
                dest = work / layer.path
                ensure_parent(work, dest, where)
                try:
                    os.link(blob, dest)
                except FileExistsError:
                    raise InvalidModel(
                        f"two layers (or members) write the file {layer.path!r}"
                    ) from None
                except OSError as e:
                    if e.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                        raise OSError(
                            e.errno,
                            f"cannot hard-link {blob} into the model directory ({e.strerror}): "
                            "the store's models/ must be on the blobs' filesystem",
                        ) from None
                    raise
                links[desc.digest] += 1
                files += 1
                linked += desc.size
            else:
                out = extract_layer(
                    blob,
                    layer.kind,
                    work,
                    base=layer.path,
                    strip=layer.strip,
                    overlay=layout.format is ModelFormat.MODELCAR,
                    where=where,
                )
                files += out.files
                extracted += out.bytes
        if files == 0:
            raise InvalidModel(
                "the artifact holds no files"
                + (
                    " under /models (not a modelcar?)"
                    if layout.format is ModelFormat.MODELCAR
                    else ""
                )
            )
        stats = ModelDirStats(dict(links), extracted, files)
        path = store.commit_model_dir(manifest_digest, work, stats)
    except BaseException:
        remove_tree(work)
        raise
    return Materialised(path, files, linked, extracted, time.monotonic() - started, built=True)


__all__ = ["Materialised", "ModelMaterialiser", "build_model_dir"]
