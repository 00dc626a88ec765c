"""Where the tiered fetcher looks for something it does not hold: a pure plan.

:func:`plan_sources` turns what is asked (a blob, a manifest by digest, a blob's size), who
asks (a client or a peer) and what the peer ring says (the digest's home, the other live
peers) into an ordered list of steps. The fetcher runs the steps in order until one answers
(``warmstart.fetch.tiered``). No I/O, no clock: the ring and the peers' health are read by the
caller.

* A client asks a node that is not the digest's home: the home peer (which fetches upstream
  once for the whole cluster), then — for blobs — up to ``max_probes`` other live peers asked
  in parallel whether they hold it (the first yes wins), then the upstream.
* A client asks the home: for blobs the probed peers (a node that just joined is home to
  digests the previous home still holds), then the upstream.
* A peer asks the home: the upstream only. A peer asks a node that is not the home: nothing,
  the answer is "not here" (a peer request is never forwarded to another peer: no loops).

Sources in ``excluded`` (those that sent corrupt bytes) are left out; the upstream only if
``upstream`` is true.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

What = Literal["blob", "manifest", "stat"]


@dataclass(frozen=True)
class HomePeer:
    """Ask the digest's home peer."""

    url: str


@dataclass(frozen=True)
class ProbePeers:
    """Ask these peers in parallel whether they hold the blob; read from the first that does."""

    urls: tuple[str, ...]


@dataclass(frozen=True)
class Upstream:
    """Ask the upstream registry."""


@dataclass(frozen=True)
class NotHere:
    """Stop: a peer asked a node that is not the digest's home; the answer is not found."""


Step = HomePeer | ProbePeers | Upstream | NotHere


def plan_sources(
    what: What,
    *,
    from_peer: bool,
    home: str | None,
    peers: Iterable[str] = (),
    max_probes: int = 0,
    excluded: Iterable[str] = (),
    upstream: bool = True,
) -> tuple[Step, ...]:
    """The steps to take, best first.

    ``home`` is the digest's home peer, None if this node is the home (or stands in for a home
    that is down); ``peers`` the other live peers, best-ranked first (``home`` among them or
    not); ``max_probes`` how many of them a blob's probe asks (taken in rank order before the
    excluded ones are left out); ``excluded`` the names of sources not to ask again;
    ``upstream`` whether the upstream may be asked."""
    skip = set(excluded)
    steps: list[Step] = []
    if from_peer:
        if home is not None:
            return (NotHere(),)
    else:
        if home is not None and home not in skip:
            steps.append(HomePeer(home))
        if what == "blob":
            ranked = [p for p in peers if p != home][: max(max_probes, 0)]
            probes = tuple(p for p in ranked if p not in skip)
            if probes:
                steps.append(ProbePeers(probes))
    if upstream:
        steps.append(Upstream())
    return tuple(steps)


__all__ = ["HomePeer", "NotHere", "ProbePeers", "Step", "Upstream", "What", "plan_sources"]
