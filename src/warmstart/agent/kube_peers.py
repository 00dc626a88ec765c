"""``peers_from_kubernetes``: keep the agent's :class:`PeerSet` equal to the ready endpoints of
the agents' headless Service, from its EndpointSlices (``warmstart.kube``).

An :class:`~warmstart.kube.informer.Informer` lists and watches the slices labelled
``kubernetes.io/service-name=<service>`` in the agent's namespace, in the agent's event loop;
on every change :func:`~warmstart.kube.endpointslices.peers_from_endpointslices` turns them
into URLs and the PeerSet is replaced when they differ. An API server that cannot be reached
stops nothing: the informer logs it, keeps the last list and retries with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from warmstart.agent.api import PeerDiscovery
from warmstart.agent.config import AgentConfig
from warmstart.agent.peer_set import PeerSet
from warmstart.kube.client import JsonObj, KubeClient, resource_path
from warmstart.kube.config import KubeConfig, KubeConfigError, load_kube_config
from warmstart.kube.endpointslices import peers_from_endpointslices, service_selector
from warmstart.kube.informer import Informer, ObjectKey

log = logging.getLogger(__name__)

DEFAULT_RESYNC = 300.0


class KubePeers:
    """Follows the EndpointSlices of ``service`` in ``kube.config.namespace`` into ``peers``."""

    def __init__(
        self,
        peers: PeerSet,
        kube: KubeClient,
        *,
        service: str,
        port_name: str = "http",
        resync: float = DEFAULT_RESYNC,
        backoff: tuple[float, float] = (1.0, 30.0),
    ) -> None:
        self.peers = peers
        self.kube = kube
        self.service = service
        self.namespace = kube.config.namespace
        self.port_name = port_name
        self.informer = Informer(
            kube,
            resource_path("discovery.k8s.io/v1", "endpointslices", self.namespace),
            self._on_change,
            label_selector=service_selector(service),
            resync=resync,
            backoff=backoff,
        )

    def _on_change(self, objects: Mapping[ObjectKey, JsonObj]) -> None:
        urls = peers_from_endpointslices(list(objects.values()), self.port_name)
        if tuple(urls) == self.peers.urls:
            return
        try:
            self.peers.replace(urls)
        except ValueError as e:  # more than MAX_PEERS: keep the last list
            log.warning("peers from Service %s/%s not used: %s", self.namespace, self.service, e)
            return
        others = self.peers.others()
        log.info(
            "peers from Service %s/%s: %s",
            self.namespace,
            self.service,
            ", ".join(others) or "none besides this agent",
        )

    async def run(self) -> None:
        await self.informer.run()

    def status(self, changed_at: float | None) -> PeerDiscovery:
        return PeerDiscovery(
            kind="kubernetes",
            service=self.service,
            namespace=self.namespace,
            synced=self.informer.synced.is_set(),
            errors=self.informer.errors,
            changed_at=changed_at,
        )


def kube_config_for(config: AgentConfig) -> KubeConfig:
    """Where the API is: ``kube_api`` (or ``$WARMSTART_KUBE_API``), else in-cluster; the
    namespace from ``$POD_NAMESPACE`` or the service account. Raise KubeConfigError."""
    return load_kube_config(config.kube_api, config.kube_token_file)


class KubePeersTask:
    """The running follower: its client session and task; :meth:`stop` ends both."""

    def __init__(self, follower: KubePeers, task: asyncio.Task[None]) -> None:
        self.follower = follower
        self.task = task

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.follower.kube.close()


async def start_kube_peers(config: AgentConfig, peers: PeerSet) -> KubePeersTask:
    """Start following the Service's EndpointSlices (KubeConfigError if there is no API)."""
    kube_config = kube_config_for(config)
    kube = KubeClient(kube_config)
    await kube.__aenter__()
    follower = KubePeers(
        peers, kube, service=config.peers_service, port_name=config.peers_port_name
    )
    if config.peers:
        log.warning(
            "peers_from_kubernetes: the %d static peer(s) configured are replaced by the ready "
            "endpoints of Service %s/%s",
            len(config.peers),
            follower.namespace,
            follower.service,
        )
    log.info(
        "following the EndpointSlices of Service %s/%s at %s (this agent: %s)",
        follower.namespace,
        follower.service,
        kube_config.server,
        peers.self_url,
    )
    task = asyncio.create_task(follower.run(), name="warmstart-kube-peers")
    return KubePeersTask(follower, task)


__all__ = ["KubeConfigError", "KubePeers", "KubePeersTask", "kube_config_for", "start_kube_peers"]
