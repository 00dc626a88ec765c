"""The body of ``GET /status`` from the store's records and containerd's hot images (pure)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path

from warmstart.agent.api import (
    ImageStatus,
    ModelStatus,
    NodeSetup,
    PeerDiscovery,
    StatusResponse,
    StoreStatus,
)
from warmstart.oci.tiers import StoredTier, Tier
from warmstart.store import ImageRecord


def image_tier(record: ImageRecord, hot: Collection[str]) -> StoredTier:
    """``hot`` (unpacked in containerd), ``warm`` (every blob stored) or ``partial``."""
    if record.reference in hot or str(record.manifest_digest) in hot:
        return Tier.HOT
    return Tier.WARM if record.complete else Tier.PARTIAL


def model_tier(record: ImageRecord) -> StoredTier:
    """``hot`` (materialised), ``warm`` (every blob stored) or ``partial``."""
    if record.materialised:
        return Tier.HOT
    return Tier.WARM if record.complete else Tier.PARTIAL


def model_status(record: ImageRecord, models_root: Path | None) -> ModelStatus:
    tier = model_tier(record)
    path = None
    if tier == Tier.HOT and models_root is not None:
        digest = record.manifest_digest
        path = str(models_root / digest.algorithm / digest.hex)
    return ModelStatus(
        reference=record.reference,
        digest=str(record.manifest_digest),
        format=record.model_format or "",
        size=record.size,
        tier=tier,
        path=path,
        pinned=record.pinned,
        last_used=record.last_used,
    )


def status_body(
    *,
    node_id: str,
    advertise_url: str,
    store_root: str,
    usage: int,
    budget: int | None,
    shared: int = 0,
    model_extracted: int = 0,
    images: Iterable[ImageRecord],
    hot: Collection[str] = (),
    hot_images: Iterable[tuple[str, str]] = (),
    peers: Iterable[str] = (),
    upstreams: Iterable[str] = (),
    default_upstream: str | None = None,
    peer_source: PeerDiscovery | None = None,
    node_setup: NodeSetup | None = None,
    models_root: Path | None = None,
) -> StatusResponse:
    everything = sorted(images, key=lambda r: r.reference)
    records = [r for r in everything if r.model_format is None]
    models = [model_status(r, models_root) for r in everything if r.model_format is not None]
    known = {r.reference for r in records} | {str(r.manifest_digest) for r in records}
    # Unpacked in containerd but not in the store's records (pulled before the agent ran, or
    # its blobs evicted): still the fastest place to start a replica.
    only_hot = sorted(
        {
            ref: digest for ref, digest in hot_images if ref not in known and digest not in known
        }.items()
    )
    return StatusResponse(
        node_id=node_id,
        url=advertise_url,
        # usage: every stored blob; shared: those containerd links too (one copy on disk), which
        # the budget does not count.
        store=StoreStatus(
            root=store_root,
            usage=usage,
            shared=shared,
            model_extracted=model_extracted,
            budget=budget,
        ),
        images=[
            ImageStatus(
                reference=r.reference,
                digest=str(r.manifest_digest),
                size=r.size,
                tier=image_tier(r, hot),
                pinned=r.pinned,
                platform=r.platform,
                last_used=r.last_used,
            )
            for r in records
        ]
        + [
            ImageStatus(
                reference=ref,
                digest=digest,
                size=0,  # nothing of it in the agent's store
                tier=Tier.HOT,
                pinned=False,
                platform=None,
                last_used=0.0,
            )
            for ref, digest in only_hot
        ],
        models=models,
        peers=list(peers),
        upstreams=sorted(upstreams),
        default_upstream=default_upstream,
        peer_source=peer_source or PeerDiscovery(),
        node_setup=node_setup,
    )
