"""The Debian mirror of this machine, read from its apt sources (never hard-coded)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class MirrorNotFound(RuntimeError):
    pass


def _deb822_stanzas(text: str) -> Iterable[dict[str, str]]:
    stanza: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if stanza:
                yield stanza
            stanza, key = {}, ""
            continue
        if line[0] in " \t" and key:
            stanza[key] += " " + line.strip()
            continue
        if ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            stanza[key] = value.strip()
    if stanza:
        yield stanza


def mirrors_from_deb822(text: str, suite: str) -> list[str]:
    """``URIs`` of ``Types: deb`` stanzas whose ``Suites`` include ``suite`` exactly."""
    found: list[str] = []
    for stanza in _deb822_stanzas(text):
        if stanza.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in stanza.get("types", "").split():
            continue
        if suite not in stanza.get("suites", "").split():
            continue
        found.extend(stanza.get("uris", "").split())
    return found


def mirrors_from_list(text: str, suite: str) -> list[str]:
    """One-line ``deb [options] URI SUITE COMPONENTS...`` entries for ``suite``."""
    found: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = line.split()[1:]
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) >= 2 and words[1] == suite:
            found.append(words[0])
    return found


def find_debian_mirror(suite: str = "bookworm", etc_apt: Path = Path("/etc/apt")) -> str:
    """The first mirror of this machine's apt sources that serves ``suite``."""
    candidates: list[str] = []
    sources_d = etc_apt / "sources.list.d"
    if sources_d.is_dir():
        for path in sorted(sources_d.glob("*.sources")):
            candidates += mirrors_from_deb822(path.read_text(errors="replace"), suite)
        for path in sorted(sources_d.glob("*.list")):
            candidates += mirrors_from_list(path.read_text(errors="replace"), suite)
    main_list = etc_apt / "sources.list"
    if main_list.is_file():
        candidates += mirrors_from_list(main_list.read_text(errors="replace"), suite)
    for uri in candidates:
        if uri.startswith(("http://", "https://", "file:/")):
            return uri.rstrip("/")
    raise MirrorNotFound(
        f"no Debian mirror for {suite} in {etc_apt}/sources.list(.d); add one or pass --mirror"
    )
