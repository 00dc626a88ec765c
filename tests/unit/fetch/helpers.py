"""An in-process cluster of TieredFetchers over one in-memory upstream (no HTTP)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warmstart.fetch import FetcherConfig, PeerList, TieredFetcher, UpstreamSettings
from warmstart.fetch.interfaces import ClientIdentity
from warmstart.fetch.memory import FetcherPeer, MemorySource
from warmstart.fetch.rendezvous import home
from warmstart.fetch.source import OpenedBlob, SourceManifest, SourceUnreachable
from warmstart.oci import Digest
from warmstart.store import ContentStore

REG = "reg.example"
ANON = ClientIdentity()


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


class DeadPeer:
    """A peer that never answers."""

    kind = "peer"

    def __init__(self, url: str) -> None:
        self.name = url
        self.calls = 0

    def _fail(self) -> SourceUnreachable:
        self.calls += 1
        return SourceUnreachable(f"peer {self.name} does not answer")

    async def stat_blob(self, registry: str, repository: str, digest: Digest) -> int:
        raise self._fail()

    async def open_blob(self, *args: Any, **kwargs: Any) -> OpenedBlob:
        raise self._fail()

    async def get_manifest(self, *args: Any, **kwargs: Any) -> SourceManifest:
        raise self._fail()


@dataclass
class Node:
    url: str
    store: ContentStore
    fetcher: TieredFetcher
    peers: PeerList
    links: dict[str, Any] = field(default_factory=dict)  # url -> FetcherPeer/DeadPeer used


class Cluster:
    """Nodes that reach each other through :class:`FetcherPeer`; URLs without a node are dead."""

    def __init__(
        self,
        root: Path,
        upstream: MemorySource,
        urls: Sequence[str],
        *,
        alive: Sequence[str] | None = None,
        clock: FakeClock | None = None,
        shared: bool = True,
        peer_token: str | None = None,
        **config: Any,
    ) -> None:
        self.upstream = upstream
        self.urls = list(urls)
        self.nodes: dict[str, Node] = {}
        for url in alive if alive is not None else urls:
            store = ContentStore(root / url.split("//")[1].replace(":", "_"), poll_interval=0.005)
            peers = PeerList(url, urls)
            cfg = FetcherConfig(
                node_id=url,
                self_url=url,
                upstreams={REG: UpstreamSettings(shared=shared)},
                peer_token=peer_token,
                **config,
            )
            node = Node(url, store, None, peers)  # type: ignore[arg-type]
            node.fetcher = TieredFetcher(
                store,
                cfg,
                upstream,
                peers=peers,
                peer_source=lambda u, n=node: self._link(n, u),
                clock=clock or FakeClock(),
            )
            self.nodes[url] = node

    def _link(self, node: Node, url: str) -> Any:
        link = node.links.get(url)
        if link is None:
            other = self.nodes.get(url)
            if other is None:
                link = DeadPeer(url)
            else:
                link = FetcherPeer(
                    url, other.fetcher, node_id=node.url, token=node.fetcher.config.peer_token
                )
            node.links[url] = link
        return link

    def __getitem__(self, url: str) -> Node:
        return self.nodes[url]

    async def aclose(self) -> None:
        for node in self.nodes.values():
            await node.fetcher.aclose()
            await node.store.aclose()


def homed_blob(urls: Sequence[str], at: str, size: int = 200_000) -> bytes:
    """Random bytes whose digest's home (over ``urls``) is ``at``."""
    while True:
        data = os.urandom(size)
        if home(str(Digest.of(data)), urls) == at:
            return data


async def read_result(result: Any, start: int = 0) -> bytes:
    if result.path is not None:
        return (await asyncio.to_thread(Path(result.path).read_bytes))[start:]
    return b"".join([c async for c in result.open_stream(start)])
