"""What the demo prints and checks: its console and tables, the claims it makes, and the
agents' counters and status read (pure)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from warmstart.oci import OCIError, Reference
from warmstart.units import format_size

GETS = "upstream blob GETs"


class DemoFailed(Exception):
    """A step could not run; the demo stops (the message is one line)."""


# -- printing: data is printed literally; only headings are styled ------------------------------


def demo_console(file: IO[str] | None = None, width: int | None = None) -> Console:
    """A console that reads no markup, no emoji codes, highlights nothing, wraps no line.

    Into a file or pipe (no terminal, no $COLUMNS) it prints 120 columns wide, not rich's 80.
    """
    console = Console(
        file=file, width=width, markup=False, emoji=False, highlight=False, soft_wrap=True
    )
    if width is None and not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120
    return console


def show(console: Console, data: str) -> None:
    """Print data (a file, command output, a URL) exactly as it is."""
    console.print(Text(data))


def heading(console: Console, text: str) -> None:
    console.print()
    console.print(Text(text, style="bold"))


def table(title: str, *columns: str | Column) -> Table:
    """A table whose title and headers are text, not markup (a ``str`` column wraps)."""
    cols = [Column(header=Text(c)) if isinstance(c, str) else c for c in columns]
    return Table(*cols, title=Text(title), box=box.SIMPLE_HEAD)


def fixed(header: str) -> Column:
    """A column of short cells (numbers, sizes, tiers): the step column wraps before these do."""
    return Column(header=Text(header), min_width=max(len(w) for w in header.split()))


def add_row(t: Table, *cells: object, end_section: bool = False) -> None:
    """Cells are text, not markup; missing trailing cells are empty."""
    t.add_row(*(Text(str(c)) for c in cells), end_section=end_section)


# -- claims --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    claim: str
    measured: str
    held: bool


@dataclass
class Claims:
    """What the demo claims, with what was measured; checked as the demo goes."""

    items: list[Claim] = field(default_factory=list)

    def check(self, claim: str, measured: object, held: bool) -> bool:
        self.items.append(Claim(claim, str(measured), bool(held)))
        return bool(held)

    def equal(self, claim: str, value: int, expected: int, unit: str) -> bool:
        """``value`` (shown as ``"<value> <unit>"``) must be ``expected``."""
        return self.check(claim, f"{value} {unit}", value == expected)

    def table(self) -> Table:
        t = table("claims", "claim", "measured", "held")
        for c in self.items:
            t.add_row(Text(c.claim), Text(c.measured), Text("yes" if c.held else "NO"))
        return t

    def failure_line(self) -> str | None:
        """``demo failed: ...`` naming the first claim that did not hold; None if all held."""
        failed = [c for c in self.items if not c.held]
        if not failed:
            return None
        first = failed[0]
        more = f"; {len(failed) - 1} more claim(s) did not hold" if len(failed) > 1 else ""
        return f"demo failed: did not hold: {first.claim} (measured: {first.measured}){more}"


def one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


# -- reading the agents (pure) -------------------------------------------------------------------


def _add(counts: dict[str, int], key: str, value: int) -> None:
    counts[key] = counts.get(key, 0) + value


def _diff(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    keys = sorted(set(after) | set(before))
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys}


@dataclass(frozen=True)
class AgentCounters:
    """What the demo reads from one agent's ``GET /metrics`` (or the difference of two reads)."""

    served: Mapping[str, int] = field(default_factory=dict)  # bytes to clients, by source
    fetched: Mapping[str, int] = field(default_factory=dict)  # bytes fetched, by source
    blob_gets: int = 0  # GET requests on the blob route, any status
    linked_blobs: int = 0  # blobs placed in containerd's content store (linked or copied)
    linked_bytes: int = 0

    def minus(self, before: AgentCounters) -> AgentCounters:
        return AgentCounters(
            served=_diff(self.served, before.served),
            fetched=_diff(self.fetched, before.fetched),
            blob_gets=self.blob_gets - before.blob_gets,
            linked_blobs=self.linked_blobs - before.linked_blobs,
            linked_bytes=self.linked_bytes - before.linked_bytes,
        )


def parse_agent_metrics(text: str) -> AgentCounters:
    """The demo's counters from an agent's Prometheus text exposition."""
    served: dict[str, int] = {}
    fetched: dict[str, int] = {}
    blob_gets = linked_blobs = linked_bytes = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            value = round(sample.value)
            labels = sample.labels
            if sample.name == "warmstart_agent_served_bytes_total":
                _add(served, labels.get("source", ""), value)
            elif sample.name == "warmstart_agent_fetched_bytes_total":
                _add(fetched, labels.get("source", ""), value)
            elif sample.name == "warmstart_agent_requests_total":
                if labels.get("route") == "blob" and labels.get("method") == "GET":
                    blob_gets += value
            elif sample.name == "warmstart_agent_linked_blobs_total":
                linked_blobs += value
            elif sample.name == "warmstart_agent_linked_bytes_total":
                linked_bytes += value
    return AgentCounters(served, fetched, blob_gets, linked_blobs, linked_bytes)


def _canonical(reference: str) -> str:
    try:
        return str(Reference.parse(reference))
    except OCIError:
        return reference


def agent_tier(status: Mapping[str, Any], reference: str) -> str:
    """The image's tier in an agent's ``/status`` body (hot, warm, partial), or ``none``."""
    wanted = _canonical(reference)
    for entry in status.get("images") or []:
        if isinstance(entry, Mapping) and _canonical(str(entry.get("reference"))) == wanted:
            return str(entry.get("tier"))
    return "none"


def by_source(counts: Mapping[str, int]) -> str:
    """Non-zero byte counts by source, one a line (``upstream 1.0 MiB``); ``0`` if none."""
    return "\n".join(f"{k} {format_size(v)}" for k, v in sorted(counts.items()) if v) or "0"


def prewarm_lines(result: Mapping[str, Any]) -> list[str]:
    """What one agent's ``/prewarm`` answer says, including the link / pull / unpack split."""
    sources = ", ".join(
        f"{k} {format_size(int(v))}" for k, v in sorted((result.get("sources") or {}).items())
    )
    lines = [
        f"{result.get('blobs')} blobs, {format_size(int(result.get('bytes') or 0))} "
        f"({sources or 'no bytes'}) in the agent's store in "
        f"{float(result.get('warm_seconds') or 0):.2f} s"
    ]
    ctd = result.get("containerd")
    if isinstance(ctd, Mapping):
        link = ctd.get("link")
        if isinstance(link, Mapping):
            lines.append(
                f"containerd.link: {link.get('linked')} blobs linked "
                f"({format_size(int(link.get('linked_bytes') or 0))}), "
                f"{link.get('present')} already there, {link.get('missing')} missing, "
                f"{float(link.get('seconds') or 0):.2f} s"
            )
        else:
            lines.append("containerd.link: none (the agent did not link)")
        lines.append(
            f"containerd.pull_seconds: {float(ctd.get('pull_seconds') or 0):.2f} s "
            f"(ctr images pull), of which containerd.unpack_seconds: "
            f"{float(ctd.get('unpack_seconds') or 0):.2f} s"
        )
    return lines
