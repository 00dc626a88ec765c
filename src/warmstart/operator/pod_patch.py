"""The one merge patch the operator sends an annotated workload (pure): the scheduling hint
(:mod:`warmstart.operator.labels`) and the model volume (:mod:`warmstart.operator.model_mount`)
together, so that a change of both is one rollout, not two.

The patch carries the ``resourceVersion`` the changes were computed from: a merge patch
replaces lists whole (``containers``, ``volumes``, the preferred terms), so if someone changed
the workload meanwhile the API server refuses it (409) rather than letting it undo that change;
the operator computes it again on its next pass.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from warmstart.operator.labels import affinity_changes, at_pod_spec, pod_spec_of
from warmstart.operator.model_mount import mount_changes


def workload_patch(
    workload: Mapping[str, Any],
    kind: str,
    *,
    digests: Iterable[str] = (),
    model: str | None = None,
    model_host_path: str | None = None,
    model_containers: Collection[str] | None = None,
) -> dict[str, Any] | None:
    """The merge patch for the workload (None: nothing to change). ``digests``: its images'
    (hint terms); ``model``: the reference it mounts (hint terms) and ``model_host_path`` the
    node path to mount (None: our volume and mounts are removed). ValueError (one line) for a
    ``warmstart.dev/model-containers`` naming no container."""
    pod_spec = pod_spec_of(workload, kind)
    changes: dict[str, Any] = {}
    changes.update(affinity_changes(pod_spec, digests, [model] if model else []) or {})
    changes.update(mount_changes(pod_spec, model_host_path, model_containers, kind) or {})
    if not changes:
        return None
    patch = at_pod_spec(kind, changes)
    version = (workload.get("metadata") or {}).get("resourceVersion")
    if version:
        patch["metadata"] = {"resourceVersion": version}
    return patch


__all__ = ["workload_patch"]
