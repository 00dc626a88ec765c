"""Where an image's bytes are, as seen from one node: the one tier type every package shares.

The values are what goes over the wire (``GET /status``, ``warmstart serve``'s status):
``hot`` unpacked in the node's containerd; ``warm`` every blob in the node's content store;
``partial`` some of them; ``peer`` on another node of the cluster; ``cold`` only upstream.
A node reports its own images as :data:`StoredTier` (hot, warm or partial); placement ranks
nodes by the full scale.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class Tier(StrEnum):
    """Fastest first (:attr:`rank`)."""

    HOT = "hot"  # unpacked in the node's containerd, weights on local disk
    WARM = "warm"  # every blob in the node's content store
    PARTIAL = "partial"  # some blobs in the node's content store
    PEER = "peer"  # blobs on another node of the cluster
    COLD = "cold"  # only upstream

    @property
    def rank(self) -> int:
        """0 for the fastest tier; larger is slower."""
        return _RANK[self]


_RANK = {tier: i for i, tier in enumerate(Tier)}

# What a node can say of an image it holds itself (its store, its containerd).
StoredTier = Literal[Tier.HOT, Tier.WARM, Tier.PARTIAL]

__all__ = ["StoredTier", "Tier"]
