"""The kopf side: handlers registered on a registry of their own, and running the operator.

ImageCache: on create/update/resume and on a timer every ``interval`` seconds its status is
reconciled and written through kopf's ``patch`` (kopf sends it to the ``/status`` subresource
when the CRD has one); on delete (kopf's finalizer) its pins are released. Deployments and
InferenceServices annotated ``warmstart.dev/prewarm`` or ``warmstart.dev/model`` are handled by
the operator's own pass
(:meth:`Operator.tick`); their events, and Node events, start that pass at once, so a node that
joins is pre-warmed without waiting for the interval. kopf logs in with the same
:class:`~warmstart.kube.config.KubeConfig` as the operator's own client, runs standalone (no
peering: one replica) and keeps its bookkeeping in annotations (the CRD's status schema has no
room for kopf's own fields).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from warmstart.kube.client import KubeApiError, KubeClient
from warmstart.kube.config import KubeConfig
from warmstart.operator.reconciler import Operator, OperatorOptions
from warmstart.operator.spec import GROUP, PLURAL, VERSION
from warmstart.operator.workloads import MANAGED_ANNOTATIONS

log = logging.getLogger(__name__)

KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")
DEPLOYMENTS = ("apps", "v1", "deployments")


def _status_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level status fields that differ (an unchanged status is no patch)."""
    old = old or {}
    return {k: v for k, v in new.items() if old.get(k) != v}


def login_handler(config: KubeConfig) -> Any:
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
    cache = (GROUP, VERSION, PLURAL)
    interval = op.options.interval
    kopf.on.login(registry=registry)(login_handler(op.options.kube))

    async def reconcile(
        namespace: str, name: str, spec: Any, status: Any, meta: Any, patch: Any, **_: Any
    ) -> None:
        if meta.get("deletionTimestamp"):
            return
        async with op.lock(f"ImageCache/{namespace}/{name}"):
            try:
                new = await op.reconcile_cache(
                    namespace, name, dict(spec), dict(status or {}), meta.get("generation")
                )
            except KubeApiError as e:
                raise kopf.TemporaryError(str(e), delay=interval) from e
        changes = _status_changes(status, new)
        if changes:
            patch.status.update(changes)

    for on in (kopf.on.create, kopf.on.update, kopf.on.resume):
        on(*cache, registry=registry, id="reconcile")(reconcile)
    kopf.timer(*cache, registry=registry, interval=interval, initial_delay=interval,
               id="refresh")(reconcile)  # fmt: skip

    @kopf.on.delete(*cache, registry=registry, id="unpin")
    async def unpin(namespace: str, name: str, spec: Any, logger: Any, **_: Any) -> None:
        async with op.lock(f"ImageCache/{namespace}/{name}"):
            try:
                errors = await op.delete_cache(namespace, name, dict(spec))
            except KubeApiError as e:
                raise kopf.TemporaryError(str(e), delay=interval) from e
        for error in errors:  # an agent that is gone holds no pins: not worth blocking on
            logger.warning(error)

    def workload_event(body: Any, **_: Any) -> None:
        # No timers here: kopf puts a finalizer on what it runs timers for. The operator's
        # pass lists the annotated workloads; an event only makes it come sooner.
        meta = body.get("metadata") or {}
        key = f"/{meta.get('namespace')}/{meta.get('name')}"
        annotations = meta.get("annotations") or {}
        if any(a in annotations for a in MANAGED_ANNOTATIONS) or any(
            k.endswith((key, f"{key}#model")) for k in op.owners
        ):
            op.kick()

    kopf.on.event(*DEPLOYMENTS, registry=registry, id="workload")(workload_event)
    kopf.on.event(*KSERVE, registry=registry, id="workload")(workload_event)

    @kopf.on.event("", "v1", "nodes", registry=registry, id="node")
    def node_event(**_: Any) -> None:
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
        op = Operator(options, kube)
        if started is not None:
            started.set_result(op)
        passes = asyncio.create_task(op.run(), name="warmstart operator passes")
        try:
            await kopf.operator(
                registry=build_registry(op),
                settings=build_settings(scanning=scanning),
                standalone=True,
                clusterwide=options.namespace is None,
                namespaces=[options.namespace] if options.namespace else (),
                liveness_endpoint=liveness,
                stop_flag=stop_flag,
                ready_flag=ready_flag,
            )
        finally:
            passes.cancel()
            await asyncio.gather(passes, return_exceptions=True)
            await op.close()
