"""At agent start: find containerd's content store and decide how blobs get into it.

The content directory is, in order: ``<containerd_root>/io.containerd.content.v1.content`` when
``containerd_root`` is set (it must be containerd's: a clear error otherwise); what the running
containerd reports (``ctr plugins ls --detailed``) when ``containerd_socket`` is set; else the
default root ``/var/lib/containerd``, used only if containerd's content store is there. Linking is
off, with a line saying why, when containerd's sharing policy is not ``shared`` (a pull would not
adopt the file) or the directory is on another filesystem than the store (unless
``containerd_link = "copy"``).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from warmstart.agent.config import DEFAULT_CONTAINERD_ROOT, AgentConfig
from warmstart.containerd.content_link import (
    ContentDirError,
    LinkMode,
    LinkSetup,
    check_link_setup,
    looks_like_content_dir,
)
from warmstart.containerd.ctr import Ctr, CtrError
from warmstart.containerd.plugins import ContentInfo, content_dir, detect_content

log = logging.getLogger(__name__)


async def _reported(config: AgentConfig) -> ContentInfo | None:
    if config.containerd_socket is None:
        return None
    ctr = Ctr(config.containerd_socket, config.containerd_namespace, config.ctr_binary)
    try:
        return await detect_content(ctr)
    except (CtrError, TimeoutError) as e:
        log.warning("cannot ask containerd where its content store is: %s", e)
        return None


def mounted_under_prefix(here: Path, reported: Path) -> bool:
    """``/host/var/lib/containerd/…`` is containerd's ``/var/lib/containerd/…`` mounted in a pod."""
    return reported.is_absolute() and here.parts[-len(reported.parts) + 1 :] == reported.parts[1:]


async def decide_link_setup(config: AgentConfig, store_dir: Path) -> LinkSetup:
    """Raise :class:`ContentDirError` for a ``containerd_root`` that is not containerd's."""
    if config.containerd_link is LinkMode.OFF:
        return LinkSetup(None, LinkMode.OFF, "containerd_link is off: blobs are not linked")
    reported = await _reported(config)
    if reported is not None and reported.sharing_policy not in (None, "shared"):
        return LinkSetup(
            None,
            LinkMode.OFF,
            f"containerd's content sharing policy is {reported.sharing_policy!r}, not 'shared': "
            "a pull would not adopt linked blobs, so none are linked",
        )
    if config.containerd_root is not None:
        wanted = content_dir(config.containerd_root)
        seen = reported.content_root if reported is not None else None
        if seen is not None and seen != wanted and mounted_under_prefix(wanted, seen):
            log.info("containerd's content store %s is mounted here at %s", seen, wanted)
        elif seen is not None and seen != wanted:
            log.warning(
                "containerd_root says %s, but containerd reports its content store at %s",
                wanted,
                seen,
            )
        return await asyncio.to_thread(check_link_setup, wanted, store_dir, config.containerd_link)
    if reported is not None and reported.content_root is not None:
        return await asyncio.to_thread(
            check_link_setup, reported.content_root, store_dir, config.containerd_link
        )
    default = content_dir(DEFAULT_CONTAINERD_ROOT)
    if not looks_like_content_dir(default):
        return LinkSetup(
            None,
            LinkMode.OFF,
            f"no containerd content store at {default}: blobs are not linked (set "
            "containerd_socket or containerd_root on a containerd node)",
        )
    try:
        return await asyncio.to_thread(check_link_setup, default, store_dir, config.containerd_link)
    except ContentDirError as e:
        return LinkSetup(None, LinkMode.OFF, f"{e}; blobs are not linked")
