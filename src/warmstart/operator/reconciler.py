"""The operator's work against the Kubernetes API and the agents (I/O; the decisions are the
pure modules').

:class:`Operator` keeps what it manages (ImageCaches' and annotated workloads' wants) and
offers the steps the kopf handlers call: reconcile an ImageCache (returns its new status),
release its pins when it is deleted, reconcile a workload (pre-warm its spare nodes; its model
hot and pinned on its replicas' nodes and the spare ones; one patch of its pod spec with the
scheduling hint and the model volume), and a periodic pass (``tick``) that pre-warms every
managed image and model on nodes that need it (a node that joins is served on the next pass,
which a Node event starts at once) and keeps the nodes' labels in step with the agents'
``/status``. Annotated workloads are found by that pass (in kopf's index, not handled by kopf:
a kopf timer on a Deployment would put a finalizer on it); their events only start a pass
sooner. A workload's model pins live in this process's memory: they are released when the
workload, its annotation or a node's replica goes, while the operator runs.

The cluster (nodes, agent pods, workloads, their HPAs and pods, ImageCaches) is read from
kopf's indexes (:class:`~warmstart.operator.cluster_cache.ClusterCache`), never listed here;
the API client only writes (patches of workloads and nodes) and reads the pull secrets an
ImageCache names.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from warmstart.agent.config import DEFAULT_LISTEN, split_listen
from warmstart.kube.client import KubeApiError, KubeClient, resource_path
from warmstart.kube.config import KubeConfig
from warmstart.operator.cache_status import NO_AGENT, cache_status, invalid_status
from warmstart.operator.cluster_cache import ClusterCache
from warmstart.operator.executor import AgentExecutor
from warmstart.operator.labels import label_patch, pod_spec_of, wanted_labels
from warmstart.operator.model_mount import DEFAULT_STORE_PATH, has_model_volume, model_host_path
from warmstart.operator.nodes import (
    DEFAULT_AGENT_SELECTOR,
    NodeInfo,
    agent_urls,
)
from warmstart.operator.plan import NodeImages, Plan, Want, plan_image_cache
from warmstart.operator.pod_patch import workload_patch
from warmstart.operator.pull_secrets import authorization_for, secret_credentials
from warmstart.operator.spec import ImageCacheSpec, validate_spec
from warmstart.operator.workloads import (
    Workload,
    deployment_workload,
    inference_service_workload,
    is_managed,
    replica_nodes,
)
from warmstart.registry.credentials import CredentialStore

log = logging.getLogger(__name__)

DEFAULT_AGENT_PORT = split_listen(DEFAULT_LISTEN)[1]  # the agent's own default port
SNAPSHOT_TTL = 1.0
DEBOUNCE = 0.5
# the annotated kinds: (group/version, plural)
WORKLOAD_RESOURCES = {
    "Deployment": ("apps/v1", "deployments"),
    "InferenceService": ("serving.kserve.io/v1beta1", "inferenceservices"),
}


@dataclass(frozen=True)
class OperatorOptions:
    kube: KubeConfig
    agent_namespace: str = "warmstart"
    agent_selector: str = DEFAULT_AGENT_SELECTOR
    agent_port: int = DEFAULT_AGENT_PORT
    agent_urls: Mapping[str, str] = field(default_factory=dict)
    peer_token: str | None = None
    interval: float = 30.0
    namespace: str | None = None  # None: every namespace
    agent_store_path: str = DEFAULT_STORE_PATH  # the agents' store on the nodes (host path)


@dataclass(frozen=True)
class Cluster:
    """One look at the cluster: nodes, their agents, what each agent holds."""

    nodes: tuple[NodeInfo, ...]
    node_labels: Mapping[str, Mapping[str, str]]
    agents: Mapping[str, str]  # node -> agent URL
    held: Mapping[str, NodeImages]  # node -> images (agents that answered)
    errors: Mapping[str, str]  # node -> why its agent did not answer
    at: float


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Owner:
    want: Want
    authorization: Mapping[str, str | None] = field(default_factory=dict)
    selected: tuple[str, ...] = ()


class Operator:
    def __init__(self, options: OperatorOptions, kube: KubeClient, cache: ClusterCache) -> None:
        self.options = options
        self.kube = kube
        self.cache = cache
        self.kicked = asyncio.Event()
        self.executor = AgentExecutor(peer_token=options.peer_token, on_done=self.kick)
        # "ImageCache/ns/name", "Deployment/ns/name" (its images), "Deployment/ns/name#model"
        self.owners: dict[str, _Owner] = {}
        self.ticks = 0
        self.hint_patches = 0  # patches of workloads (hint and model volume), all of them
        self.workload_patches: dict[str, int] = {}  # by workload key
        self.started = time.monotonic()
        self._snapshot: Cluster | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    def kick(self) -> None:
        """Something changed (a node, a finished pre-warm): look again soon."""
        self._snapshot = None
        self.kicked.set()

    def lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def close(self) -> None:
        await self.executor.close()

    # -- the cluster ----------------------------------------------------------------------------

    async def cluster(self) -> Cluster:
        snap = self._snapshot
        if snap is not None and time.monotonic() - snap.at < SNAPSHOT_TTL:
            return snap
        pods = self.cache.agent_pods()
        agents = agent_urls(pods, self.options.agent_port, self.options.agent_urls)
        infos = self.cache.nodes()
        names = {n.name for n in infos}
        agents = {n: u for n, u in agents.items() if n in names}
        held, errors = await self.executor.statuses(agents)
        labels = {n.name: n.labels for n in infos}
        self._snapshot = Cluster(infos, labels, agents, held, errors, time.monotonic())
        return self._snapshot

    def _errors(self, cluster: Cluster, plan: Plan, refs: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for node in plan.selected:
            if node not in cluster.agents:
                out[node] = NO_AGENT
            elif node in cluster.errors:
                out[node] = cluster.errors[node]
            elif (err := self.executor.failures.error(node, list(refs))) is not None:
                out[node] = err
        return out

    def _run(self, cluster: Cluster, owner: _Owner) -> Plan:
        want = owner.want
        plan = plan_image_cache(
            want, cluster.nodes, cluster.agents, cluster.held, self.executor.linked
        )
        owner.selected = plan.selected
        todo = {n: refs for n, refs in plan.prewarm.items() if n in cluster.held}
        self.executor.start(
            cluster.agents, todo, hot=want.hot, pin=want.pin, authorization=owner.authorization
        )
        models = {n: refs for n, refs in plan.prewarm_models.items() if n in cluster.held}
        self.executor.start(
            cluster.agents,
            models,
            hot=True,
            pin=want.pin,
            authorization=owner.authorization,
            model=True,
        )
        return plan

    # -- ImageCache -----------------------------------------------------------------------------

    async def _authorizations(
        self, namespace: str, spec: ImageCacheSpec
    ) -> tuple[dict[str, str | None], list[str]]:
        stores: list[CredentialStore] = []
        problems: list[str] = []
        for name in spec.pull_secrets:
            try:
                secret = await self.kube.get(resource_path("v1", "secrets", namespace, name))
                stores.append(secret_credentials(secret))
            except KubeApiError as e:
                problems.append(f"imagePullSecret {name}: {e.message or e}")
            except ValueError as e:
                problems.append(str(e))
        return {ref: authorization_for(ref, stores) for ref in spec.references}, problems

    async def reconcile_cache(
        self,
        namespace: str,
        name: str,
        spec: Any,
        status: Mapping[str, Any] | None,
        generation: int | None,
    ) -> dict[str, Any]:
        """Pre-warm what is missing; the ImageCache's new status."""
        key = f"ImageCache/{namespace}/{name}"
        valid = validate_spec(spec)
        if isinstance(valid, list):
            self.owners.pop(key, None)
            return invalid_status(valid, status, generation, _now())
        auth, problems = await self._authorizations(namespace, valid)
        previous = frozenset(
            str(n.get("node")) for n in (status or {}).get("nodes") or () if isinstance(n, dict)
        )
        want = Want(
            images=valid.images,
            hot=valid.hot,
            pin=True,
            node_selector=valid.node_selector,
            count=valid.nodes,
            previous=previous,
            models=valid.models,
        )
        owner = _Owner(want, auth)
        self.owners[key] = owner
        cluster = await self.cluster()
        plan = self._run(cluster, owner)
        dropped = previous - set(plan.selected)
        if dropped:
            await self._unpin(cluster, {n: cluster.agents[n] for n in dropped
                                        if n in cluster.agents}, valid.references, key)  # fmt: skip
        return cache_status(
            images=valid.images,
            hot=valid.hot,
            plan=plan,
            statuses=cluster.held,
            errors=self._errors(cluster, plan, valid.references),
            previous=status,
            generation=generation,
            now=_now(),
            problems=problems,
            models=valid.models,
        )

    async def _unpin(
        self, cluster: Cluster, agents: Mapping[str, str], images: Sequence[str], key: str
    ) -> list[str]:
        """Unpin ``images`` (and models) on ``agents`` but those another owner (an ImageCache, a
        workload's model) still pins there."""
        others = self._pinned_elsewhere(key)
        errors: list[str] = []
        for node, url in agents.items():
            refs = [r for r in images if (node, r) not in others]
            errors += await self.executor.unpin({node: url}, refs)
        return errors

    def _pinned_elsewhere(self, key: str) -> set[tuple[str, str]]:
        """(node, reference) pairs other live ImageCaches keep, from kopf's index (not only
        memory), and those the other pinning owners in memory (workloads' models) keep."""
        out: set[tuple[str, str]] = set()
        for item in self.cache.image_caches():
            meta = item.get("metadata") or {}
            if f"ImageCache/{meta.get('namespace')}/{meta.get('name')}" == key:
                continue
            if meta.get("deletionTimestamp"):
                continue
            valid = validate_spec(item.get("spec"))
            if isinstance(valid, list):
                continue
            for entry in (item.get("status") or {}).get("nodes") or ():
                out.update((str(entry.get("node")), r) for r in valid.references)
        for other, owner in self.owners.items():
            if other != key and owner.want.pin:
                out.update((n, r) for n in owner.selected for r in owner.want.references)
        return out

    async def delete_cache(self, namespace: str, name: str, spec: Any) -> list[str]:
        """The ImageCache is going: release its pins on every agent; the errors."""
        key = f"ImageCache/{namespace}/{name}"
        self.owners.pop(key, None)
        valid = validate_spec(spec)
        if isinstance(valid, list):
            return []
        self._snapshot = None
        cluster = await self.cluster()
        errors = await self._unpin(cluster, cluster.agents, valid.references, key)
        self.kick()
        return errors

    # -- workloads ------------------------------------------------------------------------------

    async def reconcile_workload(
        self, kind: str, body: Mapping[str, Any], cluster: Cluster
    ) -> Workload:
        """Pre-warm the workload's images hot on its spare nodes, its model hot and pinned on
        its replicas' nodes and its spare nodes, and patch its pod spec (only when it changes)
        with the scheduling hint and the model volume. ValueError (one line) for a malformed
        annotation."""
        meta = body.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        if kind == "Deployment":
            work = deployment_workload(body, self.cache.hpas(namespace))
        else:
            work = inference_service_workload(body)
        running = frozenset(replica_nodes(self.cache.pods(namespace), work.pod_selector))
        if work.images:
            owner = self.owners.get(work.key)
            want = Want(
                images=work.images,
                hot=True,
                node_selector=work.node_selector,
                count=work.spare,
                tolerations=work.tolerations,
                exclude=running,
                previous=frozenset(owner.selected) if owner else frozenset(),
            )
            owner = _Owner(want, {}, owner.selected if owner else ())
            self.owners[work.key] = owner
            self._run(cluster, owner)
        else:
            self.owners.pop(work.key, None)
        await self._model(work, running, cluster)
        await self._patch(body, work, cluster)
        return work

    async def _model(self, work: Workload, running: frozenset[str], cluster: Cluster) -> None:
        """The workload's model: hot and pinned on its replicas' nodes (a replica there mounts
        it; one that landed where it is not yet waits for the kubelet's next mount attempt)
        and on its spare nodes; unpinned on the nodes that left that set."""
        key = work.model_key
        old = self.owners.get(key)
        if work.model is None or (old is not None and old.want.models != (work.model,)):
            await self.release(key)
            old = None
        if work.model is None:
            return
        want = Want(
            images=(),
            models=(work.model,),
            pin=True,
            node_selector=work.node_selector,
            count=work.spare,
            tolerations=work.tolerations,
            required=running,
            previous=frozenset(old.selected) if old else frozenset(),
        )
        owner = _Owner(want, {}, old.selected if old else ())
        self.owners[key] = owner
        plan = self._run(cluster, owner)
        dropped = set(old.selected if old else ()) - set(plan.selected)
        if dropped:
            agents = {n: cluster.agents[n] for n in dropped if n in cluster.agents}
            for error in await self._unpin(cluster, agents, want.models, key):
                log.warning("%s", error)

    async def release(self, key: str) -> None:
        """Forget a workload's owner; a pinning one (its model) is unpinned where it was."""
        owner = self.owners.pop(key, None)
        if owner is None or not owner.want.pin or not owner.selected:
            return
        cluster = await self.cluster()
        agents = {n: cluster.agents[n] for n in owner.selected if n in cluster.agents}
        for error in await self._unpin(cluster, agents, owner.want.references, key):
            log.warning("%s", error)

    def _digests(self, refs: Sequence[str], cluster: Cluster) -> set[str]:
        digests = set()
        for ref in refs:
            for held in cluster.held.values():
                if ref in held:
                    digests.add(held[ref].digest)
                    break
        return digests

    async def _patch(self, body: Mapping[str, Any], work: Workload, cluster: Cluster) -> None:
        """The scheduling hint and the model volume, one merge patch when either changes."""
        model_path = (
            model_host_path(self.options.agent_store_path, work.model) if work.model else None
        )
        patch = workload_patch(
            body,
            work.kind,
            digests=self._digests(work.images, cluster),
            model=work.model,
            model_host_path=model_path,
            model_containers=work.model_containers,
        )
        await self._send(work.kind, work.namespace, work.name, patch)

    async def _send(self, kind: str, namespace: str, name: str, patch: Any) -> None:
        if patch is None:
            return
        group_version, plural = WORKLOAD_RESOURCES[kind]
        key = f"{kind}/{namespace}/{name}"
        try:
            await self.kube.patch(resource_path(group_version, plural, namespace, name), patch)
        except KubeApiError as e:
            if e.status != 409:
                raise
            log.info("%s changed while it was being patched: again on the next pass", key)
            self.kick()
            return
        self.hint_patches += 1
        self.workload_patches[key] = self.workload_patches.get(key, 0) + 1
        log.info("patched the pod spec of %s (scheduling hint, model volume)", key)

    async def _unmount(self, kind: str, body: Mapping[str, Any]) -> None:
        """A workload that lost its annotations but still has our model volume: remove the
        volume, its mounts and our terms (the model is no longer pinned for it)."""
        meta = body.get("metadata") or {}
        patch = workload_patch(body, kind)
        await self._send(
            kind, str(meta.get("namespace") or "default"), str(meta.get("name")), patch
        )

    # -- the periodic pass ----------------------------------------------------------------------

    async def tick(self) -> None:
        """Pre-warm every managed image where it is missing; keep the node labels in step."""
        self._snapshot = None
        cluster = await self.cluster()
        seen: set[str] = set()
        for kind, body in self.cache.workloads():
            meta = body.get("metadata") or {}
            if not is_managed(body):
                if not meta.get("deletionTimestamp") and has_model_volume(pod_spec_of(body, kind)):
                    await self._unmount(kind, body)
                continue
            try:
                work = await self.reconcile_workload(kind, body, cluster)
            except ValueError as e:  # a malformed annotation: say so, leave it (and its pins)
                log.warning("%s %s/%s: %s", kind, meta.get("namespace"), meta.get("name"), e)
                key = f"{kind}/{meta.get('namespace') or 'default'}/{meta.get('name')}"
                seen.update((key, f"{key}#model"))
                continue
            seen.update((work.key, work.model_key))
        for key in [k for k in self.owners if not k.startswith("ImageCache/") and k not in seen]:
            await self.release(key)  # no longer annotated, or gone
        for key, owner in list(self.owners.items()):
            if key.startswith("ImageCache/"):
                self._run(cluster, owner)
        self.ticks += 1
        if time.monotonic() - self.started < self.options.interval:
            return  # just started: let kopf resume every owner before removing any label
        managed = {r for o in self.owners.values() for r in o.want.references}
        for node in cluster.nodes:
            held = cluster.held.get(node.name)
            if held is None:
                continue  # no agent, or it did not answer: leave its labels as they are
            patch = label_patch(node.labels, wanted_labels(held, managed))
            if patch is not None:
                await self.kube.patch(resource_path("v1", "nodes", name=node.name), patch)

    async def run(self) -> None:
        """``tick`` every ``interval`` seconds, or at once when kicked; the first once kopf's
        indexes are filled."""
        await self.cache.populated.wait()
        while True:
            self.kicked.clear()
            try:
                await self.tick()
            except (KubeApiError, OSError) as e:
                log.warning("operator pass failed: %s", e)
            try:
                await asyncio.wait_for(self.kicked.wait(), self.options.interval)
            except TimeoutError:
                pass
            await asyncio.sleep(min(DEBOUNCE, self.options.interval))  # a burst of events: one pass
