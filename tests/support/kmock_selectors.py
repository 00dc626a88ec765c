"""kmock's Kubernetes emulator, honouring ``labelSelector`` on lists and watches as the API
server does (kmock itself ignores it; the product leaves selector filtering to the server).

A list returns only the matching items. A watch streams only the events of matching objects;
an object modified into the selection arrives as ADDED, one modified out of it as DELETED (what
a real API server sends a selecting watch).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from kmock import KubernetesEmulator, Request

from warmstart.kube.selectors import Requirement, parse_label_selector, selector_matches


def _requirements(request: Request) -> tuple[Requirement, ...]:
    return parse_label_selector(request.params.get("labelSelector", ""))


def _matches(reqs: tuple[Requirement, ...], obj: Any) -> bool:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return selector_matches(reqs, (meta or {}).get("labels"))


def _object_key(obj: Any) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class SelectingKubernetesEmulator(KubernetesEmulator):
    async def _serve_list(self, request: Request) -> Any:
        doc = await super()._serve_list(request)
        reqs = _requirements(request)
        if reqs:
            doc = {**doc, "items": [i for i in doc["items"] if _matches(reqs, i)]}
        return doc

    async def _serve_watch(self, request: Request) -> AsyncIterator[Any]:
        reqs = _requirements(request)
        inside: set[tuple[str, str]] = set()  # the objects this watcher was told about
        async for payload in super()._serve_watch(request):
            kind = payload.get("type") if isinstance(payload, dict) else None
            obj = payload.get("object") if isinstance(payload, dict) else None
            if not reqs or kind not in ("ADDED", "MODIFIED", "DELETED") or obj is None:
                yield payload
                continue
            key, matches = _object_key(obj), _matches(reqs, obj)
            if kind == "DELETED" or not matches:
                if key in inside:
                    inside.discard(key)
                    yield {"type": "DELETED", "object": obj}
                continue
            yield {"type": "MODIFIED" if key in inside else "ADDED", "object": obj}
            inside.add(key)
