"""The body of ``GET /status`` from the store's records and containerd's hot images (pure)."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from warmstart.agent.api import ImageStatus, NodeSetup, PeerSource, StatusResponse, StoreStatus
from warmstart.oci.tiers import StoredTier, Tier
from warmstart.store import ImageRecord


def image_tier(record: ImageRecord, hot: Collection[str]) -> StoredTier:
    """``hot`` (unpacked in containerd), ``warm`` (every blob stored) or ``partial``."""
    if record.reference in hot or str(record.manifest_digest) in hot:
        return Tier.HOT
    return Tier.WARM if record.complete else Tier.PARTIAL


def status_body(
    *,
    node_id: str,
    advertise_url: str,
    store_root: str,
    usage: int,
    budget: int | None,
    shared: int = 0,
    images: Iterable[ImageRecord],
    hot: Collection[str] = (),
    hot_images: Iterable[tuple[str, str]] = (),
    peers: Iterable[str] = (),
    upstreams: Iterable[str] = (),
    default_upstream: str | None = None,
    peer_source: PeerSource | None = None,
    node_setup: NodeSetup | None = None,
) -> StatusResponse:
    records = sorted(images, key=lambda r: r.reference)
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
        store=StoreStatus(root=store_root, usage=usage, shared=shared, budget=budget),
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
        peers=list(peers),
        upstreams=sorted(upstreams),
        default_upstream=default_upstream,
        peer_source=peer_source or PeerSource(),
        node_setup=node_setup,
    )
