"""The two policies over tiny fleets whose answers are computable by hand, and the properties
that must hold over bigger ones."""

from __future__ import annotations

import pytest

from warmstart_harness.bench.fleet_hardware import FleetParams, MiB
from warmstart_harness.bench.fleet_policies import ONE_HOME, PIECES, PieceParams, simulate

# 1000 B at 100 B/s: 10 s. No latencies, hashing and disks that never limit.
FAST = {
    "hash_rate": 1e15,
    "disk_rate": None,
    "request_latency": 0.0,
    "tracker_latency": 0.0,
    "upstream_latency": 0.0,
}
SMALL_PIECES = PieceParams(threshold=1, piece_size=100, verify_blob_digest=False)


def fleet(nodes: int, **kw: object) -> FleetParams:
    return FleetParams(**({"nodes": nodes, "blob_sizes": (1000,), "nic_rate": 100.0} | FAST | kw))


@pytest.mark.parametrize(
    ("nodes", "policy", "pieces", "home_s", "others_s"),
    [
        # 1 home + 1 node: the node follows the home's stream, both done at size / rate
        (2, ONE_HOME, None, 10.0, 10.0),
        # the old policy: the home's uplink carries N-1 copies, (N-1) x size / rate
        (4, ONE_HOME, None, 10.0, 30.0),
        (11, ONE_HOME, None, 10.0, 100.0),
        # pieces, 1 + 1: piece k is at the home at k+1 s and at the node 1 s later: 11 s
        (2, PIECES, SMALL_PIECES, 10.0, 11.0),
        # the same, checking the blob's digest in order at 1000 B/s: + 0.1 s for the last piece
        (2, PIECES, PieceParams(threshold=1, piece_size=100), 10.0, 11.1),
    ],
)
def test_tiny_fleets_by_hand(nodes, policy, pieces, home_s, others_s) -> None:
    params = fleet(nodes, hash_rate=1000.0) if pieces and pieces.verify_blob_digest else None
    result = simulate(params or fleet(nodes), policy, pieces)
    [home] = result.homes
    assert result.completions_s[home] == pytest.approx(home_s)
    others = [t for i, t in enumerate(result.completions_s) if i != home]
    assert others == pytest.approx([others_s] * (nodes - 1))
    assert result.upstream_bytes == 1000  # once per cluster, in both policies
    assert sum(result.uploads) == 1000 * (nodes - 1)  # every other node got every byte once


def test_old_policy_uploads_everything_from_the_home() -> None:
    result = simulate(fleet(6), ONE_HOME)
    assert result.largest_upload == result.uploads[result.homes[0]] == 5 * 1000
    assert result.requests == 5


def test_latencies_add_up_once_on_the_old_path() -> None:
    result = simulate(fleet(2, upstream_latency=0.5, request_latency=0.01), ONE_HOME)
    assert max(result.completions_s) == pytest.approx(10.5)


def test_shared_cpu_of_the_test_bed_bounds_both_transfers() -> None:
    # One core; every byte received costs 1/200 core-second: home and follower at 100 B/s each.
    bed = fleet(2, nic_rate=None, wan_rate=1000.0, shared_cpus=1.0, cpu_recv_per_byte=1 / 200)
    assert simulate(bed, ONE_HOME).completions_s == pytest.approx((10.0, 10.0))


def realistic(nodes: int, **kw: object) -> FleetParams:
    """A 1 GB blob, 100 MB/s NICs, the defaults' costs."""
    return FleetParams(**({"nodes": nodes, "blob_sizes": (10**9,), "nic_rate": 100e6} | kw))


def test_pieces_spread_the_upload_and_stay_near_the_floor() -> None:
    params = realistic(16)
    old = simulate(params, ONE_HOME)
    new = simulate(params, PIECES)
    assert max(old.completions_s) == pytest.approx(15 * 10.0, rel=0.01)
    assert params.floor_s == pytest.approx(10.0)
    assert max(new.completions_s) < 1.3 * params.floor_s
    assert min(new.completions_s) >= params.floor_s
    assert new.upstream_bytes == old.upstream_bytes == 10**9
    assert new.largest_upload < 2 * 10**9 < old.largest_upload
    assert sum(new.uploads) == 15 * 10**9
    assert new.pieces == 120 and new.piece_sizes == (8 * MiB,)  # 1e9 / 8 MiB = 119.2
    assert new.requests == 15 * 120


def test_same_seed_same_run_and_the_seed_moves_the_home() -> None:
    params = realistic(24, blob_sizes=(3 * 10**8, 2 * 10**8))
    assert simulate(params, PIECES) == simulate(params, PIECES)
    homes = {simulate(realistic(24, seed=s), ONE_HOME).homes for s in range(6)}
    assert len(homes) > 1


def test_the_home_seeding_once_keeps_its_uplink_for_new_pieces() -> None:
    params = realistic(8)
    once = simulate(params, PIECES, PieceParams(home_seeds_once=True))
    again = simulate(params, PIECES, PieceParams(home_seeds_once=False))
    home = once.homes[0]
    assert once.uploads[home] < again.uploads[home]
    assert max(once.completions_s) < max(again.completions_s)


def test_a_slow_tracker_queues_the_requests() -> None:
    params = realistic(8)
    free = simulate(params, PIECES)
    slow = simulate(params, PIECES, PieceParams(tracker_rps=20.0))
    assert slow.extra["tracker_wait_s"] > 0 == free.extra["tracker_wait_s"]
    assert max(slow.completions_s) > max(free.completions_s)


def test_small_blobs_travel_whole_under_the_piece_policy() -> None:
    params = realistic(4, blob_sizes=(10 * MiB, 200 * MiB))
    result = simulate(params, PIECES)
    assert result.piece_sizes == (None, 8 * MiB)
    assert result.pieces == 25
    assert result.upstream_bytes == 210 * MiB


@pytest.mark.parametrize(
    ("size", "pieces", "expected"),
    [
        (10 * MiB, PieceParams(), None),  # under the threshold: whole
        (3 * 10**9, PieceParams(), 22 * MiB),  # 3 GB / 128, whole MiB
        (17_700_000_000, PieceParams(), 64 * MiB),  # clamped at the top
        (512 * MiB, PieceParams(), 8 * MiB),  # ... and at the bottom
        (1 << 30, PieceParams(), 8 * MiB),
        (1 << 30, PieceParams(piece_size=16 * MiB), 16 * MiB),
        (1 << 30, PieceParams(target_pieces=32), 32 * MiB),
    ],
)
def test_piece_size(size: int, pieces: PieceParams, expected: int | None) -> None:
    assert pieces.size_for(size) == expected


def test_unknown_policy_and_bad_piece_params() -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        simulate(fleet(2), "torrent")
    with pytest.raises(ValueError, match="at least 1"):
        PieceParams(requests=0)
    with pytest.raises(ValueError, match="piece bounds"):
        PieceParams(min_piece=64 * MiB, max_piece=8 * MiB)
