"""The body of ``GET /status`` from the store's records (pure)."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from warmstart.agent.api import ImageStatus, StatusResponse, StoreStatus, Tier
from warmstart.store import ImageRecord


def image_tier(record: ImageRecord, hot: Collection[str]) -> Tier:
    """``hot`` (unpacked in containerd), ``warm`` (every blob stored) or ``partial``."""
    if record.reference in hot or str(record.manifest_digest) in hot:
        return "hot"
    return "warm" if record.complete else "partial"


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
    peers: Iterable[str] = (),
    upstreams: Iterable[str] = (),
    default_upstream: str | None = None,
) -> StatusResponse:
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
            for r in sorted(images, key=lambda r: r.reference)
        ],
        peers=list(peers),
        upstreams=sorted(upstreams),
        default_upstream=default_upstream,
    )
