"""The read-only model volume of a workload annotated ``warmstart.dev/model`` (pure).

The agents materialise a model once per node into a read-only directory and keep a stable
link to it per reference: ``<store>/models/by-ref/<reference>`` (the reference text as a
relative path; :func:`warmstart.store.model_dirs.reference_path`). The DaemonSet's store is
``/host/var/lib/warmstart/store`` inside the agent's pod, that is ``/var/lib/warmstart/store`` on
the node (:data:`DEFAULT_STORE_PATH`, ``warmstart operator --agent-store-path``).

The workload's pod spec gets a volume ``warmstart-model``: ``hostPath`` of that link, type
``Directory`` (the kubelet follows the link; with the type the mount fails, and is retried by
the kubelet, while the directory is not there, rather than having the runtime create an empty
directory where the agent's link belongs), mounted at ``/opt/ml/model`` with ``readOnly: true``
in every container (or those named by ``warmstart.dev/model-containers``). A container that
already mounts another volume at ``/opt/ml/model`` is left alone (the user's choice wins); the
user's volumes and mounts are kept in their order. Without a model, our volume and mounts are
removed. The changes are a JSON merge patch: the ``volumes`` and ``containers`` lists are sent
whole (a merge patch replaces lists), only when they change, so computing them again on the
patched object gives None (no rollout loop).
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from warmstart.operator.workloads import MODEL_CONTAINERS_ANNOTATION
from warmstart.store.model_dirs import reference_path

MODEL_VOLUME = "warmstart-model"
MODEL_MOUNT_PATH = "/opt/ml/model"
DEFAULT_STORE_PATH = "/var/lib/warmstart/store"  # the agents' store on the nodes (host path)


def model_host_path(store_path: str, reference: str) -> str:
    """``<store>/models/by-ref/<reference>`` on the node."""
    return posixpath.join(store_path, "models", "by-ref", reference_path(reference))


def model_volume(host_path: str) -> dict[str, Any]:
    return {"name": MODEL_VOLUME, "hostPath": {"path": host_path, "type": "Directory"}}


MODEL_MOUNT: Mapping[str, Any] = {
    "name": MODEL_VOLUME,
    "mountPath": MODEL_MOUNT_PATH,
    "readOnly": True,
}


def _with_ours(items: Sequence[Any], ours: Mapping[str, Any] | None) -> list[Any]:
    """``items`` with the entry named ``warmstart-model`` replaced in place by ``ours`` (or
    appended), or removed when ``ours`` is None."""
    out: list[Any] = []
    placed = False
    for item in items:
        if isinstance(item, Mapping) and item.get("name") == MODEL_VOLUME:
            if ours is not None and not placed:
                out.append(dict(ours))
                placed = True
            continue
        out.append(item)
    if ours is not None and not placed:
        out.append(dict(ours))
    return out


def _mounts_elsewhere(container: Mapping[str, Any]) -> bool:
    """The container mounts some other volume at /opt/ml/model (or its subPath there)."""
    return any(
        isinstance(m, Mapping)
        and m.get("name") != MODEL_VOLUME
        and posixpath.normpath(str(m.get("mountPath", ""))) == MODEL_MOUNT_PATH
        for m in container.get("volumeMounts") or ()
    )


def _container_with(container: Mapping[str, Any], mount: bool) -> dict[str, Any]:
    out = dict(container)
    mounts = _with_ours(list(container.get("volumeMounts") or ()), MODEL_MOUNT if mount else None)
    if mounts:
        out["volumeMounts"] = mounts
    else:
        out.pop("volumeMounts", None)
    return out


def container_field(pod_spec: Mapping[str, Any], kind: str) -> str:
    """Where the containers are: ``containers``; a KServe predictor without custom containers
    keeps its one container in ``model`` (a predictor using a serving runtime)."""
    if kind == "InferenceService" and not pod_spec.get("containers") and pod_spec.get("model"):
        return "model"
    return "containers"


def mount_changes(
    pod_spec: Mapping[str, Any],
    host_path: str | None,
    containers: Collection[str] | None = None,
    kind: str = "Deployment",
) -> dict[str, Any] | None:
    """The pod spec's part of a merge patch that mounts ``host_path`` read-only at
    /opt/ml/model (None: remove our volume and mounts), or None when nothing changes.
    ``containers``: the names to mount it in (None: every container). ValueError (one line)
    when a named container does not exist."""
    where = container_field(pod_spec, kind)
    raw = pod_spec.get(where)
    single = isinstance(raw, Mapping)
    current: list[Mapping[str, Any]]
    if isinstance(raw, Mapping):
        current = [raw]
    else:
        current = [c for c in raw or () if isinstance(c, Mapping)]
    names = [str(c.get("name", "")) for c in current]
    if host_path is not None and containers is not None:
        missing = [n for n in containers if n not in names]
        if missing:
            raise ValueError(
                f"{MODEL_CONTAINERS_ANNOTATION} names {', '.join(missing)}: not a container here"
                f" (containers: {', '.join(names) or 'none'})"
            )
    updated = [
        _container_with(
            c,
            host_path is not None
            and (containers is None or str(c.get("name", "")) in containers)
            and not _mounts_elsewhere(c),
        )
        for c in current
    ]
    mounted = any(
        any(m.get("name") == MODEL_VOLUME for m in c.get("volumeMounts") or ()) for c in updated
    )
    volumes = list(pod_spec.get("volumes") or ())
    new_volumes = _with_ours(volumes, model_volume(host_path) if host_path and mounted else None)
    changes: dict[str, Any] = {}
    if new_volumes != volumes:
        changes["volumes"] = new_volumes or None
    if updated != [dict(c) for c in current]:
        if single:
            changes[where] = {"volumeMounts": updated[0].get("volumeMounts")}
        else:
            changes[where] = updated
    return changes or None


def has_model_volume(pod_spec: Mapping[str, Any]) -> bool:
    """Whether the pod spec carries our volume (to be removed when the annotation goes)."""
    return any(
        isinstance(v, Mapping) and v.get("name") == MODEL_VOLUME
        for v in pod_spec.get("volumes") or ()
    )


__all__ = [
    "DEFAULT_STORE_PATH",
    "MODEL_MOUNT",
    "MODEL_MOUNT_PATH",
    "MODEL_VOLUME",
    "container_field",
    "has_model_volume",
    "model_host_path",
    "model_volume",
    "mount_changes",
]
