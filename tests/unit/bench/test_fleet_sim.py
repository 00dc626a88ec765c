"""The flow simulator: max-min fairness by hand, events, followers, milestones, and the
incremental recomputation against the exact one."""

from __future__ import annotations

import random

import pytest

from warmstart_harness.bench.fleet_flows import INF, Flow, Link, max_min_rates
from warmstart_harness.bench.fleet_hardware import Fleet, FleetParams
from warmstart_harness.bench.fleet_sim import FlowSim


@pytest.mark.parametrize(
    ("paths", "capacities", "caps", "weights", "expected"),
    [
        # one link, two flows: halves
        ([["a"], ["a"]], {"a": 10}, None, None, [5, 5]),
        # the textbook case: b (4) is the bottleneck of flows 1 and 2; flow 0 takes what is left
        ([["a"], ["a", "b"], ["b"]], {"a": 10, "b": 4}, None, None, [8, 2, 2]),
        # a capped flow leaves the rest to the other
        ([["a"], ["a"]], {"a": 10}, [3, INF], None, [3, 7]),
        # three levels: c holds flow 2 at 3, the other two share what a has left
        ([["a"], ["a"], ["a", "c"]], {"a": 12, "c": 3}, None, None, [4.5, 4.5, 3]),
        # a weighted link (a shared CPU): 2r + r = 9
        ([["cpu"], ["cpu"]], {"cpu": 9}, None, [[2.0], [1.0]], [3, 3]),
        # a flow on no full link is held only by its cap
        ([["a"], ["b"]], {"a": 10, "b": 10}, [INF, 1], None, [10, 1]),
    ],
)
def test_max_min_rates_by_hand(paths, capacities, caps, weights, expected) -> None:
    assert max_min_rates(paths, capacities, caps, weights) == pytest.approx(expected)


def run_flows(specs: list[tuple[float, tuple[str, ...], float]], caps: dict[str, float], **kw):
    """Start ``(start time, links, size)`` flows; return each one's completion time."""
    sim = FlowSim(**kw)
    links = {name: Link(name, c) for name, c in caps.items()}
    done: dict[int, float] = {}

    def start(i: int, path: tuple[str, ...], size: float) -> None:
        sim.start_flow(
            [links[p] for p in path], size, on_done=lambda f: done.__setitem__(i, sim.now)
        )

    for i, (t, path, size) in enumerate(specs):
        sim.at(t, start, i, path, size)
    sim.run()
    return [done[i] for i in range(len(specs))]


def test_one_flow_takes_size_over_rate() -> None:
    assert run_flows([(0.0, ("a",), 300.0)], {"a": 100.0}) == pytest.approx([3.0])


def test_a_flow_that_ends_gives_its_share_back() -> None:
    # Both at 50/s until the small one ends at t=2 (100 B); the big one has 200 B left at 100/s.
    assert run_flows([(0, ("a",), 100.0), (0, ("a",), 300.0)], {"a": 100.0}) == pytest.approx(
        [2.0, 4.0]
    )


def test_a_late_flow_slows_the_first() -> None:
    # 0..1 s alone at 100/s (100 B), then 50/s each: 100 B left -> t=3; the second then alone.
    assert run_flows([(0, ("a",), 200.0), (1, ("a",), 300.0)], {"a": 100.0}) == pytest.approx(
        [3.0, 5.0]
    )


def test_a_follower_never_passes_its_leader() -> None:
    sim = FlowSim()
    slow, fast = Link("slow", 10.0), Link("fast", 1000.0)
    ends: dict[str, float] = {}
    lead = sim.start_flow([slow], 100.0, on_done=lambda f: ends.setdefault("lead", sim.now))

    def follow() -> None:
        sim.start_flow(
            [fast], 100.0, leader=lead, on_done=lambda f: ends.setdefault("follow", sim.now)
        )

    sim.at(2.0, follow)  # starts 20 B behind, catches up at 2.02 s, then goes at 10/s
    sim.run()
    assert ends["lead"] == pytest.approx(10.0)
    assert ends["follow"] == pytest.approx(10.0)


def test_a_follower_held_by_its_own_link_ends_after_its_leader() -> None:
    sim = FlowSim()
    a, b = Link("a", 10.0), Link("b", 5.0)
    ends: dict[str, float] = {}
    lead = sim.start_flow([a], 100.0, on_done=lambda f: ends.setdefault("lead", sim.now))
    sim.start_flow([b], 100.0, leader=lead, on_done=lambda f: ends.setdefault("f", sim.now))
    sim.run()
    assert (ends["lead"], ends["f"]) == pytest.approx((10.0, 20.0))


def test_milestones_fire_when_their_bytes_are_in() -> None:
    sim = FlowSim()
    seen: list[tuple[int, float]] = []
    sim.start_flow(
        [Link("a", 10.0)],
        100.0,
        milestones=[25.0, 50.0, 100.0],
        on_milestone=lambda f, k: seen.append((k, sim.now)),
    )
    sim.run()
    assert [k for k, _ in seen] == [0, 1, 2]
    assert [t for _, t in seen] == pytest.approx([2.5, 5.0, 10.0])


def test_cap_bounds_a_lone_flow() -> None:
    sim = FlowSim()
    ends: list[float] = []
    sim.start_flow([Link("a", 100.0)], 50.0, cap=10.0, on_done=lambda f: ends.append(sim.now))
    sim.run()
    assert ends == pytest.approx([5.0])


def test_a_flow_needs_a_link() -> None:
    with pytest.raises(ValueError, match="at least one link"):
        FlowSim().start_flow([], 1.0, cap=1.0)


def random_network(seed: int) -> tuple[list[tuple[float, tuple[str, ...], float]], dict]:
    """Up- and downlinks of 12 nodes and 150 transfers between them at random times."""
    rng = random.Random(seed)
    caps = {f"up{i}": rng.choice([50.0, 100.0]) for i in range(12)}
    caps |= {f"down{i}": rng.choice([50.0, 100.0, 200.0]) for i in range(12)}
    specs = []
    for _ in range(150):
        src, dst = rng.sample(range(12), 2)
        specs.append((rng.uniform(0, 20), (f"up{src}", f"down{dst}"), rng.uniform(10, 400)))
    return specs, caps


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_recomputation_matches_the_exact_one(seed: int) -> None:
    specs, caps = random_network(seed)
    exact = run_flows(specs, caps, exact=True)
    incremental = run_flows(specs, caps, tolerance=1e-6)
    assert incremental == pytest.approx(exact, rel=1e-6)


def test_incremental_rates_are_max_min_fair_after_every_change() -> None:
    specs, caps = random_network(7)
    sim = FlowSim(tolerance=1e-6)
    links = {name: Link(name, c) for name, c in caps.items()}
    worst = 0.0
    flows: list[Flow] = []

    def start(path: tuple[str, ...], size: float) -> None:
        flows.append(sim.start_flow([links[p] for p in path], size))

    for t, path, size in specs:
        sim.at(t, start, path, size)
    while sim._heap:  # step batch by batch and compare with the exact rates each time
        sim.run(until=sim._heap[0][0])
        active = [f for f in flows if not f.finished]
        if active:
            ref = max_min_rates(
                [[link.name for link in f.links] for f in active],
                {name: link.capacity for name, link in links.items()},
            )
            worst = max(worst, *(abs(f.rate - r) / r for f, r in zip(active, ref, strict=True)))
    assert worst < 1e-5


def test_fleet_links_and_floor() -> None:
    p = FleetParams(nodes=3, blob_sizes=(3_000,), nic_rate=300.0, hash_rate=1e6, disk_rate=None)
    fleet = Fleet(p)
    links, weights = fleet.between(0, 1)
    assert [link.name for link in links] == ["up0", "rx1"] and weights is None
    assert [link.name for link in fleet.from_upstream(2)[0]] == ["rx2"]  # upstream: unlimited
    assert p.floor_s == pytest.approx(10.0)
    # The test bed: a separate shaped path from the upstream, and one shared CPU.
    bed = FleetParams(
        nodes=2,
        blob_sizes=(1_000,),
        nic_rate=None,
        wan_rate=100.0,
        upstream_rate=150.0,
        shared_cpus=2.0,
        cpu_recv_per_byte=0.01,
        cpu_send_per_byte=0.005,
        hash_rate=1e6,
        disk_rate=None,
    )
    fleet = Fleet(bed)
    links, weights = fleet.from_upstream(1)
    assert [link.name for link in links] == ["upstream", "wan1", "ingest1", "cpu"]
    assert weights == (1.0, 1.0, 1.0, 0.015)
    links, weights = fleet.between(0, 1)
    assert [link.name for link in links] == ["ingest1", "cpu"]  # an unshaped LAN
    assert bed.floor_s == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nodes": 0}, "at least one node"),
        ({"blob_sizes": ()}, "positive size"),
        ({"nic_rate": 0.0}, "nic_rate must be positive"),
        ({"hash_cores": 0}, "hash_cores"),
        ({"request_latency": -1.0}, "negative"),
    ],
)
def test_fleet_params_refuse_nonsense(change: dict, message: str) -> None:
    base = {"nodes": 2, "blob_sizes": (10,), "nic_rate": 1.0}
    with pytest.raises(ValueError, match=message):
        FleetParams(**(base | change))
