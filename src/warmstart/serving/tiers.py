"""Where an image's bytes are on each node, read from the node agents' ``GET /status``.

A node whose agent reports the image ``hot`` (unpacked in containerd) or ``warm`` (all blobs in
its store) has that tier; a node without it is ``peer`` when another node holds it warm or hot
(it would fetch over the LAN), else ``cold``. An agent that does not answer counts as cold: a
slow or dead agent must not stop the endpoint from scaling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import aiohttp

from warmstart.oci import OCIError, parse_reference
from warmstart.serving.placement import Tier

STATUS_TIMEOUT = 2.0
_AGENT_TIERS = {"hot": Tier.HOT, "warm": Tier.WARM}


class HasAgent(Protocol):
    name: str
    agent_url: str | None


def _canonical(reference: str) -> str | None:
    try:
        return str(parse_reference(reference))
    except OCIError:
        return None


def local_tier(status: Mapping[str, Any], image: str) -> Tier | None:
    """The image's tier in one agent's ``/status`` body (None: not there, or partial)."""
    wanted = _canonical(image)
    best: Tier | None = None
    for entry in status.get("images", []) if isinstance(status, Mapping) else []:
        if not isinstance(entry, Mapping) or _canonical(str(entry.get("reference", ""))) != wanted:
            continue
        tier = _AGENT_TIERS.get(str(entry.get("tier")))
        if tier is not None and (best is None or tier.rank < best.rank):
            best = tier
    return best


def cluster_tiers(local: Mapping[str, Tier | None]) -> dict[str, Tier]:
    """Per node: its own tier, else ``peer`` if any other node holds the image, else ``cold``."""
    holders = {name for name, tier in local.items() if tier is not None}
    return {
        name: tier if tier is not None else (Tier.PEER if holders - {name} else Tier.COLD)
        for name, tier in local.items()
    }


class AgentTiers:
    """A :class:`warmstart.serving.controller.TierSource` backed by the node agents."""

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session

    async def tiers(self, image: str, nodes: Sequence[HasAgent]) -> dict[str, Tier]:
        owned = self._session is None
        session = self._session or aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=STATUS_TIMEOUT)
        )
        try:
            answers = await asyncio.gather(*(self._status(session, n) for n in nodes))
        finally:
            if owned:
                await session.close()
        local = {
            n.name: (local_tier(body, image) if body is not None else None)
            for n, body in zip(nodes, answers, strict=True)
        }
        return cluster_tiers(local)

    @staticmethod
    async def _status(session: aiohttp.ClientSession, node: HasAgent) -> Mapping[str, Any] | None:
        if not node.agent_url:
            return None
        try:
            async with session.get(node.agent_url.rstrip("/") + "/status") as resp:
                if resp.status != 200:
                    return None
                body = await resp.json(content_type=None)
                return body if isinstance(body, Mapping) else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
