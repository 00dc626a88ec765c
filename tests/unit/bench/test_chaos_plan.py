from __future__ import annotations

import pytest

from warmstart.fetch import rendezvous
from warmstart_harness.bench.chaos_plan import (
    AGENT_CRASH,
    AGENT_ONLY,
    DISK_CORRUPT,
    DISK_FULL,
    FANOUT_CRASH,
    FANOUT_LAYER,
    FAULT_CLASSES,
    FRACTION_RANGE,
    HOME_CRASH,
    HOT,
    LINKED,
    MIB,
    STORE_BUDGET,
    STREAMED,
    UNCACHED,
    UPSTREAM_OUTAGE,
    WARM,
    WRONG_PEER,
    ChaosConfig,
    corrupt_offset,
    fake_peer_port,
    plan_chaos,
    storm_budget,
    tmpfs_bytes,
)


def test_same_seed_same_plan_other_seed_other_plan() -> None:
    a = plan_chaos(ChaosConfig(seed=7))
    assert a == plan_chaos(ChaosConfig(seed=7))
    b = plan_chaos(ChaosConfig(seed=8))
    assert a.injections != b.injections or a.images != b.images


def test_every_class_is_planned_with_its_count() -> None:
    config = ChaosConfig(seed=3, crash_injections=3, home_injections=3, peer_injections=2)
    plan = plan_chaos(config)
    counts = {f: len(plan.of(f)) for f in FAULT_CLASSES}
    assert counts == {
        AGENT_CRASH: 3,
        HOME_CRASH: 3,
        FANOUT_CRASH: 2,
        WRONG_PEER: 2,
        DISK_CORRUPT: 2,
        UPSTREAM_OUTAGE: 1,
        STORE_BUDGET: 1,
        DISK_FULL: 1,
    }
    # the order the classes run in
    assert [i.fault for i in plan.injections] == sorted(
        (i.fault for i in plan.injections), key=FAULT_CLASSES.index
    )


@pytest.mark.parametrize("seed", range(20))
def test_choices_stay_in_range(seed: int) -> None:
    config = ChaosConfig.quick_config(seed=seed, nodes=4)
    plan = plan_chaos(config)
    tags = {s.tag for s in plan.images}
    assert len(tags) == len(plan.images)  # every image is its own
    low, high = config.layer_mib
    fanout = {i.image for i in plan.of(FANOUT_CRASH)}
    for spec in plan.images:
        if spec.tag in fanout:  # above the agents' piece threshold, whatever the range
            assert spec.big_bytes == FANOUT_LAYER
        else:
            assert low * MIB <= spec.big_bytes <= high * MIB
    for inj in plan.injections:
        assert inj.node == -1 or 0 <= inj.node < config.nodes
        assert inj.image is None or inj.image in tags
        if inj.fault in (AGENT_CRASH, HOME_CRASH, FANOUT_CRASH):
            assert FRACTION_RANGE[0] <= inj.fraction <= FRACTION_RANGE[1]
        else:
            assert 0 <= inj.fraction <= 1
    assert {i.variant for i in plan.of(AGENT_CRASH)} == {LINKED, STREAMED}  # quick: 2 crashes
    crash = plan.of(AGENT_CRASH)[0]
    assert crash.twin is not None
    assert plan.image(crash.twin).big_bytes == plan.image(crash.image).big_bytes  # type: ignore[arg-type]
    assert {i.variant for i in plan.of(DISK_CORRUPT)} == {AGENT_ONLY, LINKED}
    for storm in (*plan.of(STORE_BUDGET), *plan.of(DISK_FULL)):
        assert len(storm.images) == config.storm == len(set(storm.images))
        assert not set(storm.images) & set(plan.outage_images.values())
    assert plan.of(STORE_BUDGET)[0].node != plan.of(DISK_FULL)[0].node
    assert set(plan.outage_images) == {HOT, WARM, UNCACHED}
    assert len(set(plan.outage_images.values())) == 3
    assert set(plan.outage_holders) == {HOT, WARM}
    assert len(plan.soak_images) == config.soak_images


def test_quick_config_overrides_and_validation() -> None:
    quick = ChaosConfig.quick_config(seed=5, soak_seconds=None)
    assert quick.quick and quick.seed == 5 and quick.soak_seconds == 30.0
    assert ChaosConfig.quick_config(soak_seconds=12.0).soak_seconds == 12.0
    with pytest.raises(ValueError, match="3 nodes"):
        ChaosConfig(nodes=2)
    with pytest.raises(ValueError, match="layer sizes"):
        ChaosConfig(layer_mib=(10, 5))
    with pytest.raises(ValueError, match="soak_seconds"):
        ChaosConfig(soak_seconds=0)


@pytest.mark.parametrize("layers", [(32, 96), (8, 12), (24, 32)])
def test_storm_sizes_force_the_fault(layers: tuple[int, int]) -> None:
    plan = plan_chaos(ChaosConfig(seed=1, layer_mib=layers, storm=2))
    storm = plan.of(STORE_BUDGET)[0].images
    sizes = sorted((plan.image(t).big_bytes for t in storm), reverse=True)
    budget = storm_budget(plan, storm)
    assert sizes[0] < budget < sizes[0] + sizes[-1]  # one big layer fits, no two do
    assert sizes[0] < tmpfs_bytes(plan, storm) < sizes[0] + sizes[-1]


def test_corrupt_offset_is_inside_the_blob() -> None:
    assert corrupt_offset(100, 0.0) == 0
    assert corrupt_offset(100, 0.5) == 50
    assert corrupt_offset(100, 1.0) == 99
    with pytest.raises(ValueError):
        corrupt_offset(0, 0.5)


def test_fake_peer_port_makes_it_the_home() -> None:
    nodes = ["http://10.9.3.10:5050", "http://10.9.3.11:5050", "HTTP://10.9.3.12:5050/"]
    digest = "sha256:" + "ab" * 32
    port = fake_peer_port(digest, nodes, "127.0.0.1")
    fake = f"http://127.0.0.1:{port}"
    keys = [rendezvous.node_key(n) for n in nodes]
    assert rendezvous.home(digest, [*keys, fake]) == fake
    assert fake_peer_port(digest, nodes, "127.0.0.1") == port  # deterministic
    with pytest.raises(ValueError):
        fake_peer_port(digest, nodes, "127.0.0.1", first=1, tries=0)


def test_the_fan_out_is_drawn_last_and_leaves_the_other_choices_alone() -> None:
    with_fanout = plan_chaos(ChaosConfig(seed=5, fanout_injections=2))
    fewer = plan_chaos(ChaosConfig(seed=5, fanout_injections=1))
    assert [i for i in with_fanout.injections if i.fault != FANOUT_CRASH] == [
        i for i in fewer.injections if i.fault != FANOUT_CRASH
    ]
    assert len(with_fanout.of(FANOUT_CRASH)) == 2
    assert FANOUT_LAYER >= 64 * MIB  # the agents' default piece threshold
