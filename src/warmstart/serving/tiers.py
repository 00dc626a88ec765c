"""Where an endpoint's image and model are on each node, read from the node agents'
``GET /status``.

A node whose agent reports the image ``hot`` (unpacked in containerd) or ``warm`` (all blobs in
its store) has that tier; a node without it is ``peer`` when another node holds it warm or hot
(it would fetch over the LAN), else ``cold``. A model is judged the same way from the
``models`` of ``/status``: ``hot`` is materialised (its read-only directory is ready to
mount), ``warm`` every blob stored. An agent that does not answer counts as cold for both: a
slow or dead agent must not stop the endpoint from scaling. How the two tiers combine in
placement: :func:`warmstart.serving.placement.start_rank`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import aiohttp

from warmstart.agent.api import ImageStatus, ModelStatus, StatusResponse
from warmstart.agent.client import AgentClient, AgentError
from warmstart.oci import OCIError, parse_reference
from warmstart.oci.tiers import Tier
from warmstart.serving.placement import NodeTiers

STATUS_TIMEOUT = 2.0


class HasAgent(Protocol):
    name: str
    agent_url: str | None


def _canonical(reference: str) -> str | None:
    try:
        return str(parse_reference(reference))
    except OCIError:
        return None


def local_tier(entries: Iterable[ImageStatus | ModelStatus], reference: str) -> Tier | None:
    """The tier of ``reference`` among one agent's ``/status`` images (or models): None when
    it is not there, or only partly."""
    wanted = _canonical(reference)
    best: Tier | None = None
    for entry in entries:
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
    """A :class:`warmstart.serving.replicas.TierSource` backed by the node agents' ``/status``
    (through :class:`~warmstart.agent.client.AgentClient`, with the cluster's peer token)."""

    def __init__(
        self, session: aiohttp.ClientSession | None = None, *, token: str | None = None
    ) -> None:
        self._session = session
        self._token = token

    async def tiers(
        self, image: str, nodes: Sequence[HasAgent], model: str | None = None
    ) -> dict[str, NodeTiers]:
        owned = self._session is None
        session = self._session or aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=STATUS_TIMEOUT)
        )
        try:
            answers = await asyncio.gather(*(self._status(session, n) for n in nodes))
        finally:
            if owned:
                await session.close()
        bodies = dict(zip((n.name for n in nodes), answers, strict=True))
        images = cluster_tiers(
            {name: local_tier(b.images, image) if b else None for name, b in bodies.items()}
        )
        if model is None:
            return {name: NodeTiers(tier) for name, tier in images.items()}
        models = cluster_tiers(
            {name: local_tier(b.models, model) if b else None for name, b in bodies.items()}
        )
        return {name: NodeTiers(images[name], models[name]) for name in bodies}

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
