"""Which images a containerd has, and which are unpacked (hot), read with ``ctr images check``.

containerd 1.6 has no Python client that works with current protobuf, and ``ctr images check``
already computes both facts per image (content complete for the host platform, snapshot
unpacked for the snapshotter). Its table is parsed here (pure), and :class:`ContainerdImages`
runs it through a :class:`~warmstart.containerd.ctr.Ctr` (the only I/O) to answer the agent's
``/status`` (``hot_references``).

``ctr images check`` prints, per image (tab-aligned)::

    REF        TYPE                                       DIGEST     STATUS         SIZE    UNPACKED
    r.io/a:v1  application/vnd.oci.image.manifest.v1+json sha256:... complete (3/3) 3.8 MiB/3.8 MiB true

STATUS is ``complete (P/R)``, ``incomplete (P/R)``, ``unavailable (P/?)`` or ``error``
(containerd 1.6.20 ``cmd/ctr/commands/images/images.go``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from warmstart.containerd.ctr import Ctr, CtrError, last_error_line
from warmstart.oci.tiers import StoredTier, Tier

_CHECK_LINE = re.compile(
    r"^(?P<ref>\S+)\s+(?P<type>\S+)\s+(?P<digest>[a-z0-9]+:[a-f0-9]+)\s+"
    r"(?P<status>complete|incomplete|unavailable|error)"
    r"(?: \((?P<present>\d+)/(?P<required>\d+|\?)\))?"
    r"\s+(?P<size>.*?)\s+(?P<unpacked>true|false)\s*$"
)


@dataclass(frozen=True)
class ContainerdImage:
    reference: str  # the image name in containerd
    media_type: str
    digest: str  # the image's target (an index or a manifest)
    status: str  # complete | incomplete | unavailable | error
    present: int = 0
    required: int | None = None
    unpacked: bool = False

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def tier(self) -> StoredTier:
        """``hot`` (content complete and unpacked), ``warm`` (content complete) or ``partial``."""
        if self.complete and self.unpacked:
            return Tier.HOT
        return Tier.WARM if self.complete else Tier.PARTIAL


def parse_images_check(text: str) -> list[ContainerdImage]:
    """The rows of ``ctr images check`` output; the header and unknown lines are skipped."""
    out = []
    for line in text.splitlines():
        m = _CHECK_LINE.match(line.strip())
        if m is None:
            continue
        required = m.group("required")
        out.append(
            ContainerdImage(
                reference=m.group("ref"),
                media_type=m.group("type"),
                digest=m.group("digest"),
                status=m.group("status"),
                present=int(m.group("present") or 0),
                required=int(required) if required and required != "?" else None,
                unpacked=m.group("unpacked") == "true",
            )
        )
    return out


def hot_names(images: Sequence[ContainerdImage]) -> frozenset[str]:
    """References and target digests of the hot images (what ``/status`` matches against)."""
    names: set[str] = set()
    for image in images:
        if image.tier == Tier.HOT:
            names.add(image.reference)
            names.add(image.digest)
    return frozenset(names)


def tiers(images: Sequence[ContainerdImage]) -> dict[str, list[str]]:
    """``{"hot": [...], "warm": [...], "partial": [...]}`` of image references, sorted."""
    out: dict[str, list[str]] = {Tier.HOT: [], Tier.WARM: [], Tier.PARTIAL: []}
    for image in images:
        out[image.tier].append(image.reference)
    return {k: sorted(v) for k, v in out.items()}


@dataclass
class ContainerdImages:
    """The images of one containerd namespace; implements the agent's ``HotImages``."""

    ctr: Ctr
    snapshotter: str | None = None

    async def images(self) -> list[ContainerdImage]:
        args = ["images", "check"]
        if self.snapshotter:
            args += ["--snapshotter", self.snapshotter]
        result = await self.ctr.run(*args)
        images = parse_images_check(result.stdout)
        # ctr exits 1 when one image could not be checked, but still prints every row.
        if result.returncode != 0 and not images:
            reason = last_error_line(result.stderr) or f"exit status {result.returncode}"
            raise CtrError(f"ctr images check failed: {reason}")
        return images

    async def image(self, reference: str) -> ContainerdImage | None:
        for image in await self.images():
            if image.reference == reference:
                return image
        return None

    async def hot_images(self) -> list[tuple[str, str]]:
        """(reference, target digest) of every image unpacked in this namespace."""
        return [(i.reference, i.digest) for i in await self.images() if i.tier == Tier.HOT]

    async def hot_references(self) -> frozenset[str]:
        return hot_names(await self.images())

    async def tiers(self) -> dict[str, list[str]]:
        return tiers(await self.images())
