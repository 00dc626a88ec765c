"""The kopf side: handlers registered on a registry of their own, and running the operator.

ImageCache: on create/update/resume and on a timer every ``interval`` seconds its status is
reconciled and written through kopf's ``patch`` (kopf sends it to the ``/status`` subresource
when the CRD has one); on delete (kopf's finalizer) its pins are released. Deployments and
InferenceServices annotated ``warmstart.dev/prewarm`` or ``warmstart.dev/model`` are handled by
the operator's own pass (:meth:`Operator.tick`); their events, and Node events, start that pass
at once, so a node that joins is pre-warmed without waiting for the interval. What the operator
reads of the cluster is in kopf's indexes (:mod:`warmstart.operator.indexes`, on the same
watches). kopf logs in with the same :class:`~warmstart.kube.config.KubeConfig` as the
operator's own client, runs standalone (no peering: one replica) and keeps its bookkeeping in
annotations (the CRD's status schema has no room for kopf's own fields). With ``--namespace``,
kopf watches that namespace and the agents' (its pods); handlers and indexes of workloads and
ImageCaches take only the first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from warmstart.kube.client import KubeApiError, KubeClient
from warmstart.kube.config import KubeConfig
from warmstart.operator.cluster_cache import ClusterCache
from warmstart.operator.indexes import (
    DEPLOYMENT_RESOURCE,
    IMAGE_CACHE_RESOURCE,
    KSERVE_RESOURCE,
    NODE_RESOURCE,
    InScope,
    register_indexes,
)
from warmstart.operator.reconciler import Operator, OperatorOptions
from warmstart.operator.spec import GROUP
from warmstart.operator.workloads import MANAGED_ANNOTATIONS

log = logging.getLogger(__name__)


def _status_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level status fields that differ (an unchanged status is no patch)."""
    old = old or {}
    return {k: v for k, v in new.items() if old.get(k) != v}


def login_handler(config: KubeConfig) -> Callable[..., kopf.ConnectionInfo]:
    def login(**_: Any) -> kopf.ConnectionInfo:
        token = config.token()
        return kopf.ConnectionInfo(
            server=config.server,
            token=token,
            scheme="Bearer" if token else None,
            ca_path=str(config.ca_file) if config.ca_file else None,
            default_namespace=config.namespace,
        )

    return login


def build_registry(op: Operator) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    cache = IMAGE_CACHE_RESOURCE
    interval = op.options.interval
    in_scope = InScope(op.options.namespace)
    kopf.on.login(registry=registry)(login_handler(op.options.kube))
    register_indexes(registry, op.cache, in_scope)
    # kopf runs the handlers below only once every index is filled: the passes may start
    populated = op.cache.populated.set

    async def reconcile(
        *,
        namespace: str | None,
        name: str,
        spec: kopf.Spec,
        status: kopf.Status,
        meta: kopf.Meta,
        patch: kopf.Patch,
        **_: Any,
    ) -> None:
        populated()
        if meta.get("deletionTimestamp"):
            return
        async with op.lock(f"ImageCache/{namespace}/{name}"):
            try:
                new = await op.reconcile_cache(
                    str(namespace), name, dict(spec), dict(status), meta.get("generation")
                )
            except KubeApiError as e:
                raise kopf.TemporaryError(str(e), delay=interval) from e
        changes = _status_changes(status, new)
        if changes:
            patch.status.update(changes)

    for on in (kopf.on.create, kopf.on.update, kopf.on.resume):
        on(*cache, registry=registry, id="reconcile", when=in_scope)(reconcile)
    kopf.timer(*cache, registry=registry, interval=interval, initial_delay=interval,
               id="refresh", when=in_scope)(reconcile)  # fmt: skip

    @kopf.on.delete(*cache, registry=registry, id="unpin", when=in_scope)
    async def unpin(
        *, namespace: str | None, name: str, spec: kopf.Spec, logger: kopf.Logger, **_: Any
    ) -> None:
        populated()
        async with op.lock(f"ImageCache/{namespace}/{name}"):
            try:
                errors = await op.delete_cache(str(namespace), name, dict(spec))
            except KubeApiError as e:
                raise kopf.TemporaryError(str(e), delay=interval) from e
        for error in errors:  # an agent that is gone holds no pins: not worth blocking on
            logger.warning(error)

    def workload_event(*, body: kopf.Body, **_: Any) -> None:
        # No timers here: kopf puts a finalizer on what it runs timers for. The operator's
        # pass finds the annotated workloads in kopf's index; an event only makes it come sooner.
        populated()
        meta = body.get("metadata") or {}
        key = f"/{meta.get('namespace')}/{meta.get('name')}"
        annotations = meta.get("annotations") or {}
        if any(a in annotations for a in MANAGED_ANNOTATIONS) or any(
            k.endswith((key, f"{key}#model")) for k in op.owners
        ):
            op.kick()

    for workloads in (DEPLOYMENT_RESOURCE, KSERVE_RESOURCE):
        kopf.on.event(*workloads, registry=registry, id="workload", when=in_scope)(workload_event)

    @kopf.on.event(*NODE_RESOURCE, registry=registry, id="node")
    def node_event(**_: Any) -> None:
        populated()
        op.kick()

    return registry


def build_settings(*, scanning: bool = True) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.persistence.finalizer = f"{GROUP}/operator"
    settings.posting.level = logging.WARNING
    settings.scanning.disabled = not scanning
    settings.watching.server_timeout = 300
    return settings


def _watched_namespaces(options: OperatorOptions) -> list[str]:
    """Every one (``[]``), or the operator's ``--namespace`` and its agents' namespace."""
    if options.namespace is None:
        return []
    return sorted({options.namespace, options.agent_namespace})


async def run_operator(
    options: OperatorOptions,
    *,
    liveness: str | None = None,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
    scanning: bool = True,
    started: asyncio.Future[Operator] | None = None,
) -> None:
    """Run until ``stop_flag`` is set (or SIGINT/SIGTERM when run by the CLI)."""
    async with KubeClient(options.kube) as kube:
        op = Operator(options, kube, ClusterCache(options.agent_namespace, options.agent_selector))
        if started is not None:
            started.set_result(op)
        passes = asyncio.create_task(op.run(), name="warmstart operator passes")
        try:
            await kopf.operator(
                registry=build_registry(op),
                settings=build_settings(scanning=scanning),
                standalone=True,
                clusterwide=options.namespace is None,
                namespaces=_watched_namespaces(options),
                liveness_endpoint=liveness,
                stop_flag=stop_flag,
                ready_flag=ready_flag,
            )
        finally:
            passes.cancel()
            await asyncio.gather(passes, return_exceptions=True)
            await op.close()
