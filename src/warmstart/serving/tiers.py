"""Where an image's bytes are on each node, read from the node agents' ``GET /status``.

A node whose agent reports the image ``hot`` (unpacked in containerd) or ``warm`` (all blobs in
its store) has that tier; a node without it is ``peer`` when another node holds it warm or hot
(it would fetch over the LAN), else ``cold``. An agent that does not answer counts as cold: a
slow or dead agent must not stop the endpoint from scaling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import aiohttp

from warmstart.agent.api import ImageStatus, StatusResponse
from warmstart.agent.client import AgentClient, AgentError
from warmstart.oci import OCIError, parse_reference
from warmstart.oci.tiers import Tier

STATUS_TIMEOUT = 2.0


class HasAgent(Protocol):
    name: str
    agent_url: str | None


def _canonical(reference: str) -> str | None:
    try:
        return str(parse_reference(reference))
    except OCIError:
        return None


def local_tier(images: Iterable[ImageStatus], image: str) -> Tier | None:
    """The image's tier among one agent's ``/status`` images (None: not there, or partial)."""
    wanted = _canonical(image)
    best: Tier | None = None
    for entry in images:
        if _canonical(entry.reference) != wanted:
            continue
        tier = entry.tier
        if tier in (Tier.HOT, Tier.WARM) and (best is None or tier.rank < best.rank):
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
    """A :class:`warmstart.serving.controller.TierSource` backed by the node agents' ``/status``
    (through :class:`~warmstart.agent.client.AgentClient`, with the cluster's peer token)."""

    def __init__(
        self, session: aiohttp.ClientSession | None = None, *, token: str | None = None
    ) -> None:
        self._session = session
        self._token = token

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
            n.name: (local_tier(body.images, image) if body is not None else None)
            for n, body in zip(nodes, answers, strict=True)
        }
        return cluster_tiers(local)

    async def _status(
        self, session: aiohttp.ClientSession, node: HasAgent
    ) -> StatusResponse | None:
        if not node.agent_url:
            return None
        client = AgentClient(node.agent_url, token=self._token, session=session, timeout=None)
        try:
            return await client.status()
        except AgentError:
            return None
