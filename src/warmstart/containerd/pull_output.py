"""What ``ctr images pull`` prints: the unpack's duration (pure parsing).

ctr prints ``unpacking <platform> <digest>...`` and then ``done: <Go duration>`` for the unpack;
the fetch is the rest of the wall time.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_UNPACKING = re.compile(r"^unpacking \S+ (?P<digest>[a-z0-9]+:[a-f0-9]+)\.\.\.\s*$")
_DONE = re.compile(r"^done: (?P<duration>\S+)\s*$")


def parse_go_duration(text: str) -> float:
    """Seconds of a Go ``time.Duration`` string (``638.1ms``, ``1m2.5s``, ``950µs``, ``0s``)."""
    text = text.strip()
    if text in ("0", "0s"):
        return 0.0
    pos, total = 0, 0.0
    for m in _GO_DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"not a Go duration: {text!r}")
    return total


@dataclass(frozen=True)
class PullOutput:
    digest: str | None  # the image's target digest (index or manifest), as ctr unpacked it
    unpack_seconds: float


def parse_pull_output(text: str) -> PullOutput:
    """The unpack line pair of ``ctr images pull``'s output (progress lines are skipped)."""
    digest: str | None = None
    seconds = 0.0
    unpacking = False
    for raw in text.splitlines():
        line = raw.strip()
        m = _UNPACKING.match(line)
        if m is not None:
            digest, unpacking = m.group("digest"), True
            continue
        d = _DONE.match(line)
        if d is not None and unpacking:
            with contextlib.suppress(ValueError):
                seconds += parse_go_duration(d.group("duration"))
            unpacking = False
    return PullOutput(digest, seconds)
