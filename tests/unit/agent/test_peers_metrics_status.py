from __future__ import annotations

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from warmstart.agent.metrics import AgentMetrics
from warmstart.agent.peer_set import PeerSet
from warmstart.agent.status import image_tier, status_body
from warmstart.oci import Digest
from warmstart.store import ImageRecord

# -- PeerSet -------------------------------------------------------------------------------


def test_peer_set_replace_and_others() -> None:
    peers = PeerSet(["http://a:1/", "http://B:2"], self_url="http://a:1")
    assert peers.urls == ("http://a:1", "http://b:2")
    assert peers.others() == ("http://b:2",)
    assert "http://a:1/" in peers and len(peers) == 2
    seen: list[tuple[str, ...]] = []
    unsubscribe = peers.subscribe(seen.append)
    assert peers.replace(["http://c:3"]) == ("http://c:3",)
    assert peers.version == 1 and seen == [("http://c:3",)]
    unsubscribe()
    peers.replace([])
    assert seen == [("http://c:3",)] and list(peers) == []


def test_peer_set_rejects_bad_lists_and_keeps_the_old_one() -> None:
    peers = PeerSet(["http://a:1"])
    for bad in (["ftp://x"], ["http://x/path"], "http://x", [1], ["http://"]):
        with pytest.raises(ValueError):
            peers.replace(bad)  # type: ignore[arg-type]
    assert peers.urls == ("http://a:1",) and peers.version == 0


# -- metrics -------------------------------------------------------------------------------


def samples(metrics: AgentMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render()[0].decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_are_per_instance_and_not_global() -> None:
    a, b = AgentMetrics(), AgentMetrics()  # would raise "Duplicated timeseries" if global
    a.served("local", 10)
    assert samples(a)[("warmstart_agent_served_bytes_total", (("source", "local"),))] == 10
    assert samples(b)[("warmstart_agent_served_bytes_total", (("source", "local"),))] == 0
    assert prometheus_client.REGISTRY.get_sample_value("warmstart_agent_served_bytes_total") is None


def test_hit_ratio_and_fetcher_side_counters() -> None:
    m = AgentMetrics()
    assert samples(m)[("warmstart_agent_cache_hit_ratio", ())] == 0
    m.lookup("blob", "local")
    m.lookup("manifest", "cache")
    m.lookup("blob", "peer")
    m.lookup("blob", "upstream")
    s = samples(m)
    assert s[("warmstart_agent_cache_hit_ratio", ())] == 0.5
    assert s[("warmstart_agent_cache_hits_total", (("kind", "blob"),))] == 1
    assert s[("warmstart_agent_cache_misses_total", (("kind", "blob"),))] == 2
    m.upstream_error("reg:5000", "5xx")
    m.peer_error("timeout")
    m.fetched("upstream", 100)
    with m.transfer("upstream"):
        inside = samples(m)[("warmstart_agent_transfers_in_flight", (("source", "upstream"),))]
    s = samples(m)
    assert inside == 1
    assert s[("warmstart_agent_transfers_in_flight", (("source", "upstream"),))] == 0
    assert (
        s[("warmstart_agent_upstream_errors_total", (("kind", "5xx"), ("registry", "reg:5000")))]
        == 1
    )
    assert s[("warmstart_agent_peer_errors_total", (("kind", "timeout"),))] == 1
    assert s[("warmstart_agent_fetched_bytes_total", (("source", "upstream"),))] == 100
    m.set_store(123, None)
    s = samples(m)
    assert s[("warmstart_agent_store_usage_bytes", ())] == 123
    assert s[("warmstart_agent_store_budget_bytes", ())] == 0


# -- status --------------------------------------------------------------------------------


def record(ref: str, complete: bool, seed: str) -> ImageRecord:
    return ImageRecord(ref, Digest.of(seed.encode()), 10, 1.0, False, complete, "linux/amd64")


def test_tiers() -> None:
    warm, partial, hot = (
        record("r/a:1", True, "a"),
        record("r/b:1", False, "b"),
        record("r/c:1", True, "c"),
    )
    assert image_tier(warm, ()) == "warm"
    assert image_tier(partial, ()) == "partial"
    assert image_tier(hot, {"r/c:1"}) == "hot"
    assert image_tier(hot, {str(hot.manifest_digest)}) == "hot"
    body = status_body(
        node_id="n",
        advertise_url="http://n:1",
        store_root="/s",
        usage=5,
        budget=None,
        images=[partial, warm],
        peers=["http://p:1"],
        upstreams=["r"],
    )
    assert [i.reference for i in body.images] == ["r/a:1", "r/b:1"]
    assert body.to_json()["store"] == {
        "root": "/s",
        "usage": 5,
        "shared": 0,
        "model_extracted": 0,
        "budget": None,
    }


def test_hot_images_the_store_does_not_record_are_listed_hot() -> None:
    warm = record("r/a:1", True, "a")
    body = status_body(
        node_id="n",
        advertise_url="http://n:1",
        store_root="/s",
        usage=0,
        budget=None,
        images=[warm],
        hot={"r/a:1", "r/z:9", "sha256:" + "9" * 64},
        hot_images=[("r/a:1", str(warm.manifest_digest)), ("r/z:9", "sha256:" + "9" * 64)],
    )
    tiers = {i.reference: (i.tier, i.size) for i in body.images}
    assert tiers == {"r/a:1": ("hot", warm.size), "r/z:9": ("hot", 0)}
