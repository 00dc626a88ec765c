"""Every link to a local file in the project's markdown resolves, anchors included.

README.md, docs/**/*.md and deploy/kubernetes/README.md are parsed for inline links and images
(`[text](target)`, `![alt](target)`) outside code; a target that is not a URL must name a file or
directory that exists, relative to the markdown file, and a `#fragment` must name one of the
target markdown file's headings (GitHub's anchors).
"""

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 300

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


@dataclass(frozen=True)
class Link:
    source: Path
    line: int
    target: str


def markdown_files(root: Path) -> list[Path]:
    files = [root / "README.md", root / "deploy" / "kubernetes" / "README.md"]
    files += sorted((root / "docs").rglob("*.md"))
    return files


def prose_lines(text: str, code: str = "drop") -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, with their numbers; inline code dropped, or with
    code="keep" kept without its backticks (a heading's anchor includes it)."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            continue
        if code == "keep":
            lines.append((number, CODE_SPAN.sub(lambda m: m.group(0).strip("`"), line)))
        else:
            lines.append((number, CODE_SPAN.sub("", line)))
    return lines


def links_in(path: Path) -> list[Link]:
    return [
        Link(path, number, match.group(1))
        for number, line in prose_lines(path.read_text())
        for match in LINK.finditer(line)
    ]


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces
    as hyphens (the emphasis and code markers go with the punctuation)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors: set[str] = set()
    for _, line in prose_lines(path.read_text(), code="keep"):
        match = HEADING.match(line)
        if not match:
            continue
        base = github_anchor(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        anchors.add(base if count == 0 else f"{base}-{count}")
    return anchors


def broken(link: Link) -> str | None:
    """Why the link does not resolve, or None."""
    if URL.match(link.target):
        return None
    path_part, _, fragment = link.target.partition("#")
    target = link.source if not path_part else (link.source.parent / path_part).resolve()
    if not target.exists():
        return f"{path_part} does not exist"
    if fragment and target.suffix == ".md" and fragment not in anchors_of(target):
        return f"{target.name} has no heading #{fragment}"
    return None


def test_the_expected_markdown_files_are_checked() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in markdown_files(ROOT)}
    expected = {
        "README.md",
        "deploy/kubernetes/README.md",
        "docs/architecture.md",
        "docs/benchmarks.md",
        "docs/configuration.md",
        "docs/models.md",
        "docs/testing.md",
    }
    assert expected <= names
    assert all((ROOT / name).is_file() for name in names)


def test_every_local_link_resolves() -> None:
    links = [link for path in markdown_files(ROOT) for link in links_in(path)]
    local = [link for link in links if not URL.match(link.target)]
    assert len(local) >= 20, "the parser found almost no links: it is not reading the files"
    problems = [
        f"{link.source.relative_to(ROOT)}:{link.line}: ({link.target}) {why}"
        for link in local
        if (why := broken(link)) is not None
    ]
    assert problems == []


def test_readme_links_every_moved_doc() -> None:
    targets = {link.target.partition("#")[0] for link in links_in(ROOT / "README.md")}
    for doc in (
        "docs/architecture.md",
        "docs/benchmarks.md",
        "docs/configuration.md",
        "docs/models.md",
        "docs/testing.md",
        "docs/operator.md",
        "deploy/kubernetes/README.md",
    ):
        assert doc in targets, doc


def test_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) < README_MAX_LINES


def test_a_broken_link_or_anchor_is_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## Fleet scale (issue 17)\n\n### `x` — y\n")
    (tmp_path / "README.md").write_text(
        "see [a](docs/a.md), [fleet](docs/a.md#fleet-scale-issue-17), [x](docs/a.md#x--y),\n"
        "[gone](docs/gone.md), [no such heading](docs/a.md#nope), `[code](docs/none.md)`,\n"
        "![img](docs/missing.png) [web](https://example.org/x) [self](#nowhere)\n"
        "```\n[fenced](docs/none.md)\n```\n"
    )
    results = {link.target: broken(link) for link in links_in(tmp_path / "README.md")}
    assert results == {
        "docs/a.md": None,
        "docs/a.md#fleet-scale-issue-17": None,
        "docs/a.md#x--y": None,
        "docs/gone.md": "docs/gone.md does not exist",
        "docs/a.md#nope": "a.md has no heading #nope",
        "docs/missing.png": "docs/missing.png does not exist",
        "https://example.org/x": None,
        "#nowhere": "README.md has no heading #nowhere",
    }


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Fleet scale (issue 17)", "fleet-scale-issue-17"),
        (
            "`warmstart bench pull` — one 1 GiB single-layer image from a local `docker-registry`",
            "warmstart-bench-pull--one-1-gib-single-layer-image-from-a-local-docker-registry",
        ),
        (
            "Keep images and models hot: `ImageCache` and the workload annotations",
            "keep-images-and-models-hot-imagecache-and-the-workload-annotations",
        ),
        (
            "`warmstart bench fleet` — a fleet, **simulated** (issue 17)",
            "warmstart-bench-fleet--a-fleet-simulated-issue-17",
        ),
    ],
)
def test_github_anchor(heading: str, anchor: str) -> None:
    assert github_anchor(heading.replace("`", "")) == anchor
