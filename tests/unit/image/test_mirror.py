from __future__ import annotations

from pathlib import Path

import pytest

from warmstart.image.mirror import (
    MirrorNotFound,
    find_debian_mirror,
    mirrors_from_deb822,
    mirrors_from_list,
)

DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
"""


def test_deb822_picks_the_stanza_with_the_exact_suite() -> None:
    assert mirrors_from_deb822(DEB822, "bookworm") == ["http://mirror.example/debian"]
    assert mirrors_from_deb822(DEB822, "bookworm-security") == [
        "http://mirror.example/debian-security"
    ]
    assert mirrors_from_deb822(DEB822, "trixie") == []


def test_deb822_skips_disabled() -> None:
    text = "Types: deb\nURIs: http://a/debian\nSuites: bookworm\nEnabled: no\n"
    assert mirrors_from_deb822(text, "bookworm") == []


def test_one_line_format_with_options() -> None:
    text = (
        "# deb http://old/debian bookworm main\n"
        "deb-src http://src/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://m/debian bookworm main contrib\n"
        "deb http://m/debian-security bookworm-security main\n"
    )
    assert mirrors_from_list(text, "bookworm") == ["http://m/debian"]


def test_find_reads_sources_d_then_sources_list(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://second/debian/ bookworm main\n")
    assert find_debian_mirror("bookworm", tmp_path) == "http://second/debian"
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert find_debian_mirror("bookworm", tmp_path) == "http://mirror.example/debian"


def test_find_without_sources_fails(tmp_path: Path) -> None:
    with pytest.raises(MirrorNotFound):
        find_debian_mirror("bookworm", tmp_path)


def test_this_machine_has_a_mirror() -> None:
    if not Path("/etc/apt").is_dir():
        pytest.skip("not a Debian machine")
    assert find_debian_mirror("bookworm").startswith(("http://", "https://", "file:/"))
