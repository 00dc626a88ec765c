"""Does containerd's CRI plugin (the kubelet's pulls) read ``hosts.toml`` from our directory?

containerd reads ``DIR/<registry>/hosts.toml`` only for the directories named by the CRI
plugin's ``registry.config_path`` (a list split like ``$PATH``). Where that key lives depends on
the config file's ``version``:

- 1 (no ``version`` key; containerd 1.4 and older files): ``[plugins.cri.registry]``
- 2 (containerd 1.5-1.7): ``[plugins."io.containerd.grpc.v1.cri".registry]``
- 3 (containerd 2.x): ``[plugins."io.containerd.cri.v1.images".registry]``

The transfer service's ``config_path`` (``[plugins."io.containerd.transfer.v1.local"]``, 2.x) is
what ``ctr`` uses, not the kubelet, so it does not count. containerd 1.6 refuses a CRI config with
both ``config_path`` and ``registry.mirrors``. Pure: :func:`check_config_path` reads TOML text.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_CONTAINERD_CONFIG = "/etc/containerd/config.toml"
CRI_SECTIONS = {
    1: ("cri",),
    2: ("io.containerd.grpc.v1.cri",),
    3: ("io.containerd.cri.v1.images",),
}
TRANSFER_PLUGIN = "io.containerd.transfer.v1.local"


@dataclass(frozen=True)
class ConfigPathCheck:
    """``ok``: the CRI plugin reads hosts.toml from the directory; ``message``: one line (the
    fix when not ok, empty when ok and nothing to note)."""

    ok: bool
    config_path: str | None  # the CRI plugin's value; None when unset or unreadable
    message: str


def _table(doc: Mapping[str, Any], *keys: str) -> Mapping[str, Any]:
    node: Any = doc
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def config_version(doc: Mapping[str, Any]) -> int:
    version = doc.get("version", 1)
    return version if isinstance(version, int) and version in CRI_SECTIONS else 2


def cri_section(version: int) -> str:
    """The TOML header of the CRI registry table for a config ``version``."""
    plugin = CRI_SECTIONS.get(version, CRI_SECTIONS[2])[0]
    name = plugin if version == 1 else f'"{plugin}"'
    return f"[plugins.{name}.registry]"


def _same_dir(a: str, b: str) -> bool:
    return os.path.normpath(a) == os.path.normpath(b)


def fix_lines(certs_dir: str, version: int = 2) -> str:
    """The TOML to add, on one line (``\\n`` shown as two spaces)."""
    return f'{cri_section(version)}  config_path = "{certs_dir}"'


def check_config_path(
    text: str | None, certs_dir: str, source: str = DEFAULT_CONTAINERD_CONFIG
) -> ConfigPathCheck:
    """Check containerd's config file text (None: the file does not exist) against
    ``certs_dir``, the directory the agent writes hosts.toml files into."""
    restart = "and restart containerd; until then the kubelet's pulls bypass the agent"
    if text is None:
        return ConfigPathCheck(
            False,
            None,
            f"containerd config {source} does not exist (its defaults leave config_path unset): "
            f"write 'version = 2' and {fix_lines(certs_dir)!r} to it {restart}",
        )
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return ConfigPathCheck(
            False, None, f"cannot check containerd's config_path: {source} is not valid TOML ({e})"
        )
    version = config_version(doc)
    plugin = CRI_SECTIONS[version][0]
    registry = _table(doc, "plugins", plugin, "registry")
    value = registry.get("config_path")
    value = value if isinstance(value, str) and value.strip() else None
    notes = []
    disabled = doc.get("disabled_plugins")
    if isinstance(disabled, list) and any(p in (plugin, "cri") for p in disabled):
        notes.append(f"note: {source} disables the CRI plugin")
    if value is not None and any(_same_dir(p, certs_dir) for p in value.split(os.pathsep) if p):
        return ConfigPathCheck(True, value, "; ".join(notes))
    fix = f"{fix_lines(certs_dir, version)!r}"
    if registry.get("mirrors"):
        fix += " (and remove its registry.mirrors tables: containerd refuses both)"
    if value is None:
        transfer = _table(doc, "plugins", TRANSFER_PLUGIN).get("config_path")
        where = (
            "is set only for the transfer service (ctr), not for the CRI plugin"
            if isinstance(transfer, str) and transfer.strip()
            else "is unset"
        )
        problem = f"CRI config_path {where} in {source}"
    else:
        problem = f"CRI config_path in {source} is {value!r}, not {certs_dir!r}"
    message = (
        f"containerd does not read the agent's hosts.toml files in {certs_dir} ({problem}): "
        f"add {fix} to {source} {restart}"
    )
    return ConfigPathCheck(False, value, "; ".join([message, *notes]))


__all__ = [
    "DEFAULT_CONTAINERD_CONFIG",
    "ConfigPathCheck",
    "check_config_path",
    "config_version",
    "cri_section",
    "fix_lines",
]
