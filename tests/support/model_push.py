"""Pushing model artifacts to a real registry for tests (blobs, then the manifest by tag)."""

from __future__ import annotations

from tests.support.http_client import RegistryLike
from tests.support.images import push_blob, push_raw_manifest
from tests.support.models import Blob, manifest_bytes
from warmstart.oci import Digest
from warmstart.oci import mediatypes as mt


def push_model(
    registry: RegistryLike,
    repo: str,
    tag: str,
    config: Blob,
    layers: list[Blob],
    artifact_type: str | None = "application/vnd.cncf.model.manifest.v1+json",
) -> Digest:
    """Upload every blob and the manifest; returns the manifest's digest."""
    for blob in [config, *layers]:
        push_blob(registry, repo, blob.data)
    body = manifest_bytes(config, layers, artifact_type)
    resp = push_raw_manifest(registry, repo, tag, body, mt.OCI_MANIFEST)
    if resp.status not in (200, 201):
        raise RuntimeError(f"manifest PUT answered {resp.status}: {resp.body[:200]!r}")
    return Digest.of(body)
