"""What the agent's HTTP layer calls but does not implement (structural protocols).

``warmstart.agent.prewarm.ContainerdPrewarmer`` is the real :class:`Prewarmer` (pull into the
store, and with ``hot`` import into containerd); :class:`HotImages` tells ``/status`` which
images are already unpacked in containerd. Tests plug in small fakes.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol, runtime_checkable

from warmstart.agent.api import PrewarmResponse
from warmstart.fetch.interfaces import ClientIdentity
from warmstart.oci import Platform, Reference


@runtime_checkable
class Prewarmer(Protocol):
    async def prewarm(
        self,
        ref: Reference,
        platform: Platform | None,
        hot: bool,
        *,
        client: ClientIdentity | None = None,
        model: bool = False,
    ) -> PrewarmResponse:
        """Bring ``ref`` into this node (and into containerd when ``hot``); the answer's body.
        ``model``: ``ref`` is a model (a modelcar image too); ``hot`` then materialises it.

        ``client`` is who asked (their ``Authorization`` is checked for private repositories
        exactly as on a pull).

        Raise a ``warmstart.errors.WarmstartError`` (answered with its status and code), or
        ``ValueError`` (400) for bad input.
        """
        ...


@runtime_checkable
class HotImages(Protocol):
    """Which images containerd has unpacked (``warmstart.containerd.images.ContainerdImages``)."""

    async def hot_images(self) -> Collection[tuple[str, str]]:
        """(reference, manifest digest) of every image unpacked in containerd now; ``/status``
        marks the stored images among them hot, and lists the others (pulled before the agent,
        or whose blobs were evicted) so that placement still sees them as hot."""
        ...
