"""What a running containerd says about its content store (``ctr plugins ls --detailed``).

The content plugin exports its root directory and the metadata plugin its content sharing
policy; both are read here (pure parsing) so the agent links into the directory containerd
really uses instead of guessing from a default::

    Type:          io.containerd.content.v1
    ID:            content
    Exports:
                   root      /var/lib/containerd/io.containerd.content.v1.content

    Type:          io.containerd.metadata.v1
    ID:            bolt
    Exports:
                   path        /var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db
                   policy      shared
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from warmstart.containerd.ctr import Ctr, CtrError, last_error_line

CONTENT_PLUGIN = "io.containerd.content.v1"
METADATA_PLUGIN = "io.containerd.metadata.v1"
CONTENT_DIR = "io.containerd.content.v1.content"


@dataclass(frozen=True)
class ContentInfo:
    """containerd's content directory and sharing policy (None where it said nothing)."""

    content_root: Path | None
    sharing_policy: str | None


def _blocks(text: str) -> list[dict[str, str]]:
    """Each plugin's ``Key: value`` lines and its exports, as one flat mapping per plugin."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    in_exports = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("Type:"):
            if current:
                blocks.append(current)
            current = {"Type": line.partition(":")[2].strip()}
            in_exports = False
            continue
        if not current or not line.strip():
            continue
        if not raw[:1].isspace():
            key, _, value = line.partition(":")
            current[key.strip()] = value.strip()
            in_exports = key.strip() == "Exports"
            continue
        if in_exports:
            parts = line.split(None, 1)
            if len(parts) == 2:
                current[f"export.{parts[0]}"] = parts[1].strip()
    if current:
        blocks.append(current)
    return blocks


def parse_plugins(text: str) -> ContentInfo:
    """The content root and sharing policy from ``ctr plugins ls --detailed`` output."""
    root: Path | None = None
    policy: str | None = None
    for block in _blocks(text):
        if block.get("Type") == CONTENT_PLUGIN and block.get("ID") == "content":
            value = block.get("export.root")
            root = Path(value) if value else None
        elif block.get("Type") == METADATA_PLUGIN and block.get("ID") == "bolt":
            policy = block.get("export.policy") or None
    return ContentInfo(root, policy)


def content_dir(containerd_root: Path) -> Path:
    """The content store under a containerd ``root`` (``<root>/io.containerd.content.v1.content``)."""
    return containerd_root / CONTENT_DIR


async def detect_content(ctr: Ctr) -> ContentInfo:
    """Ask the running containerd (``ctr plugins ls --detailed``); raise CtrError."""
    result = await ctr.run("plugins", "ls", "--detailed")
    if result.returncode != 0:
        reason = last_error_line(result.stderr) or f"exit status {result.returncode}"
        raise CtrError(f"ctr plugins ls failed: {reason}")
    return parse_plugins(result.stdout)
