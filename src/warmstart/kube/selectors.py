"""Label selectors, node selectors and taints, as the API server and scheduler read them (pure).

The client sends label selectors to the API server, which does the selecting; matching here is
for objects already in hand (a cache, a workload's nodes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_KEY = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_KEY_RE = re.compile(rf"^{_KEY}$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_OP_RE = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


class SelectorError(ValueError):
    """A label selector, node selector or label that Kubernetes would refuse."""


@dataclass(frozen=True)
class Requirement:
    """One term of a selector: ``key op values`` (op: in, notin, exists, !exists)."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "in":
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values  # notin: absent keys match


def _split_terms(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(selector):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            terms.append(selector[start:i])
            start = i + 1
    terms.append(selector[start:])
    return [t for t in (t.strip() for t in terms) if t]


def parse_label_selector(selector: str) -> tuple[Requirement, ...]:
    """``app=x,tier!=y,env in (a,b),!legacy`` → requirements; SelectorError if malformed."""
    reqs: list[Requirement] = []
    for term in _split_terms(selector or ""):
        if m := _SET_RE.match(term):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            if not all(_VALUE_RE.match(v) for v in values):
                raise SelectorError(f"bad value in label selector term {term!r}")
            reqs.append(Requirement(m.group(1), m.group(2), values))
        elif m := _OP_RE.match(term):
            op = "notin" if m.group(2) == "!=" else "in"
            reqs.append(Requirement(m.group(1), op, frozenset({m.group(3)})))
        elif m := _EXISTS_RE.match(term):
            reqs.append(Requirement(m.group(2), "!exists" if m.group(1) else "exists"))
        else:
            raise SelectorError(f"bad label selector term {term!r}")
    return tuple(reqs)


def selector_matches(reqs: Iterable[Requirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in reqs)


def check_labels(labels: Any, what: str = "nodeSelector") -> dict[str, str]:
    """A map of label keys to values as Kubernetes accepts it; SelectorError says which is bad."""
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise SelectorError(f"{what} must be a map of label keys to values")
    out: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or len(key) > 316 or not _KEY_RE.match(key):
            raise SelectorError(f"{what}: {key!r} is not a valid label key")
        if not isinstance(value, str) or len(value) > 63 or not _VALUE_RE.match(value):
            raise SelectorError(f"{what}: {value!r} (for {key}) is not a valid label value")
        out[key] = value
    return out


def node_selector_matches(
    node_selector: Mapping[str, str] | None, labels: Mapping[str, str] | None
) -> bool:
    """A pod's ``nodeSelector``: every key present with that exact value."""
    labels = labels or {}
    return all(labels.get(k) == v for k, v in (node_selector or {}).items())


def _tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    effect = toleration.get("effect")
    if effect and effect != taint.get("effect"):
        return False
    op = toleration.get("operator", "Equal")
    key = toleration.get("key")
    if op == "Exists":
        return not key or key == taint.get("key")
    return key == taint.get("key") and (toleration.get("value") or "") == (taint.get("value") or "")


def tolerates_taints(
    tolerations: Iterable[Mapping[str, Any]] | None, taints: Iterable[Mapping[str, Any]] | None
) -> bool:
    """Whether a pod with ``tolerations`` may be scheduled on a node with ``taints``.

    Only the taints that keep new pods off (NoSchedule, NoExecute) count; PreferNoSchedule does
    not forbid a node.
    """
    tols = list(tolerations or ())
    for taint in taints or ():
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(_tolerates(t, taint) for t in tols):
            return False
    return True
