"""Platforms (os/architecture/variant) and the choice of a manifest from an index."""

from __future__ import annotations

import platform as _host
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from warmstart.oci.errors import NoMatchingPlatform, OCIError

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "i386": "386",
    "i686": "386",
}
# Variants a machine of the key can run, best first (as containerd's platform matcher does).
_COMPATIBLE_VARIANTS = {
    ("arm", "v8"): ("v8", "v7", "v6", "v5"),
    ("arm", "v7"): ("v7", "v6", "v5"),
    ("arm", "v6"): ("v6", "v5"),
    ("arm", "v5"): ("v5",),
    ("arm64", "v8"): ("v8", ""),
    ("amd64", ""): ("", "v1"),
}
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}

T = TypeVar("T")


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/amd64``, ``linux/arm64/v8``, ``linux/arm/v7``."""
        parts = text.strip().split("/") if isinstance(text, str) else []
        if len(parts) not in (2, 3) or not all(p and p.replace("_", "").isalnum() for p in parts):
            raise OCIError(
                f"invalid platform {text!r}: expected os/arch[/variant], e.g. linux/amd64"
            )
        return cls(parts[0].lower(), parts[1].lower(), parts[2].lower() if len(parts) == 3 else "")

    @classmethod
    def from_descriptor(cls, data: object) -> Platform | None:
        if not isinstance(data, dict):
            return None
        os_, arch = data.get("os"), data.get("architecture")
        if not isinstance(os_, str) or not isinstance(arch, str):
            return None
        variant = data.get("variant") or ""
        return cls(os_, arch, variant if isinstance(variant, str) else "")

    @classmethod
    def host(cls) -> Platform:
        return cls("linux", _host.machine().lower()).normalized()

    def normalized(self) -> Platform:
        arch = _ARCH_ALIASES.get(self.architecture.lower(), self.architecture.lower())
        variant = self.variant.lower()
        if not variant:
            variant = _DEFAULT_VARIANT.get(arch, "")
        if arch == "amd64" and variant == "v1":
            variant = ""
        return Platform(self.os.lower(), arch, variant)

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


def platform_rank(wanted: Platform, offered: Platform) -> int | None:
    """How well ``offered`` fits ``wanted``: 0 is best, None means it cannot run."""
    w, o = wanted.normalized(), offered.normalized()
    if w.os != o.os or w.architecture != o.architecture:
        return None
    if w.variant == o.variant:
        return 0
    compatible = _COMPATIBLE_VARIANTS.get((w.architecture, w.variant), (w.variant,))
    if o.variant in compatible:
        return compatible.index(o.variant)
    return None


def choose_platform(candidates: Iterable[tuple[Platform | None, T]], wanted: Platform) -> T:
    """The best entry of an index for ``wanted``; ties keep index order, as containerd does."""
    best: tuple[int, int, T] | None = None
    offered: list[str] = []
    for position, (plat, item) in enumerate(candidates):
        if plat is None:
            continue
        offered.append(str(plat))
        rank = platform_rank(wanted, plat)
        if rank is not None and (best is None or (rank, position) < best[:2]):
            best = (rank, position, item)
    if best is None:
        have = ", ".join(sorted(set(offered))) or "none"
        raise NoMatchingPlatform(f"no manifest for platform {wanted} in the index (it has: {have})")
    return best[2]
