"""``warmstart serve`` for real: two nodes (containerd + runc + a warmstart agent each, the agents
peers of each other), the example model image from a docker-registry upstream, a burst of
requests through the router.

The burst makes the endpoint scale out to the second node, whose replica starts from the
cluster's cache (zero blob GETs at the upstream); every request gets a 200; the queue drains;
a replica killed with SIGKILL is replaced. An image that does not exist is an event, not a
crash, and a bad spec is a one-line error.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.tools import require_tool
from warmstart_harness.example_image.build import BuildResult
from warmstart_harness.testbed.cluster import LocalCluster
from warmstart_harness.testbed.layout import push_layout
from warmstart_harness.testbed.net import free_port
from warmstart_harness.testbed.registry import RegistryProcess
from warmstart_harness.testbed.serve_process import ServeProcess, http_json

pytestmark = [pytest.mark.package_registries, pytest.mark.timeout(420)]

# One request: (1000 * 0.25 ms + 100 * 28 ms) * 0.1 = 0.305 s; two at once per replica.
BODY = {"input_tokens": 1000, "output_tokens": 100}
SPEC = """
name = "embed"
image = "{image}"
min_replicas = 1
max_replicas = 2
target_concurrency = 2
stable_window = 10
panic_window = 2
scale_down_delay = 300
replica_start_timeout = 120

[env]
WARMSTART_BENCH_MODE = "1"
MAX_CONCURRENCY = "2"
WARMSTART_BENCH_TIME_SCALE = "0.1"
"""


def _json(url: str, body: Any = None, timeout: float = 60) -> tuple[int, Any, dict[str, str]]:
    return http_json(url, body, timeout)


class Serve(ServeProcess):
    def __init__(self, spec: Path, cluster: LocalCluster, registry: str, log: Path) -> None:
        token = cluster.write_token_file(log.parent / "peer-token")
        args = ("--interval", "0.5", "--insecure-registry", registry,
                "--work-dir", str(log.parent / "serve-work"), "--peer-token-file", str(token))  # fmt: skip
        super().__init__(spec, cluster.node_options(), log, extra_args=args)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def cluster(registry: RegistryProcess) -> Iterator[LocalCluster]:
    for tool in ("containerd", "ctr", "runc"):
        require_tool(tool)
    if os.geteuid() != 0:
        pytest.skip("containerd needs root")
    # The agents need the cluster's peer token for control writes (serve's pre-warms) and send
    # it to each other; serve gets it with --peer-token-file.
    token = secrets.token_hex(16)
    with LocalCluster({registry.host: registry.url}, slots=1, peer_token=token) as c:
        yield c


def _warmstart(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warmstart.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_burst_scales_out_from_cache_and_a_killed_replica_is_replaced(
    registry: RegistryProcess,
    example_layout: BuildResult,
    cluster: LocalCluster,
    workdir: Path,
) -> None:
    ref = f"{registry.host}/warmstart/example-minilm:test"
    push_layout(example_layout.layout, "test", ref)
    spec = workdir / "embed.toml"
    spec.write_text(SPEC.format(image=ref))
    serve = Serve(spec, cluster, registry.host, workdir / "serve.log")
    try:
        serve.wait(lambda: len(serve.ready()) == 1, 120, "the first replica")
        first = serve.ready()[0]
        assert first["tier"] == "cold"
        assert list(first["phases"]) == ["wait", "pull", "unpack", "start", "load"]
        # the phases add up to the time to ready (a wait for a pre-warm in flight included)
        assert sum(first["phases"].values()) == pytest.approx(first["ready_seconds"], abs=0.01)
        mark = registry.mark()  # from here on, no blob may come from the upstream

        # The burst: 12 clients, each sending requests back to back, until the second replica
        # has answered some (bounded by the time and the count).
        results: list[tuple[int, str | None]] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + 150

        def client() -> None:
            while time.monotonic() < stop_at:
                code, _, headers = _json(serve.url + "/invocations", BODY, timeout=90)
                with lock:
                    results.append((code, headers.get("X-Warmstart-Replica")))
                    served = {r for c, r in results if c == 200}
                    if (len(served) >= 2 and len(results) >= 60) or len(results) >= 2000:
                        return

        with ThreadPoolExecutor(12) as pool:
            for f in [pool.submit(client) for _ in range(12)]:
                f.result()

        codes = [c for c, _ in results]
        assert codes and all(c == 200 for c in codes), codes
        served_by = {r for _, r in results}
        status = serve.status()
        assert len(served_by) == 2, f"{served_by}: {status['events']}\n{serve.log_tail()}"
        nodes = {r["node"] for r in status["replicas"] if r["state"] == "ready"}
        assert nodes == {"node-a", "node-b"}
        second = next(r for r in status["replicas"] if r["id"] != first["id"])
        assert second["tier"] in {"peer", "hot", "warm"}, second
        assert sum(second["phases"].values()) == pytest.approx(second["ready_seconds"], abs=0.01)
        assert registry.blob_gets(since=mark) == 0  # started from the cluster's cache
        events = [e["kind"] for e in status["events"]]
        assert "scale" in events
        # Hot by default: node-b was pre-warmed (its replica waited for that if it was still in
        # flight). The agents have a peer token: serve's pre-warms carry it (without it every
        # pre-warm was a prewarm-failed event).
        assert "prewarm" in events and "prewarm-failed" not in events, status["events"]

        # The queue drains.
        serve.wait(
            lambda: (s := serve.status())["queue_length"] == 0 and s["in_flight"] == 0,
            30,
            "the queue to drain",
        )

        # Prometheus metrics of the endpoint.
        with urllib.request.urlopen(serve.url + "/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert 'warmstart_endpoint_replicas{endpoint="embed",state="ready"} 2.0' in metrics
        assert 'warmstart_endpoint_queue_length{endpoint="embed"} 0.0' in metrics
        assert "warmstart_endpoint_replica_in_flight{" in metrics

        # warmstart status shows replicas, nodes and tiers.
        shown = _warmstart("status", "--url", serve.url)
        assert shown.returncode == 0, shown.stderr
        assert "node-a" in shown.stdout and "node-b" in shown.stdout and "ready" in shown.stdout

        # A crash: SIGKILL the first replica; the controller replaces it.
        victim = first["id"]
        cid = next(c for c in cluster.containers(first["node"]) if c.endswith(victim))
        cluster.kill_replica(first["node"], cid)
        serve.wait(
            lambda: any(e["kind"] == "crashed" for e in serve.status()["events"]),
            30,
            "the crash to be seen",
        )
        serve.wait(
            lambda: len(ready := serve.ready()) == 2 and victim not in {r["id"] for r in ready},
            120,
            "a replacement replica",
        )
        code, _, _ = _json(serve.url + "/invocations", BODY)
        assert code == 200
        assert registry.blob_gets(since=mark) == 0
    finally:
        returncode = serve.stop()
    assert returncode == 0, serve.log_tail()
    for name in cluster.nodes:  # serve stopped and deleted its replicas on the way out
        assert cluster.containers(name) == []


def test_an_image_that_does_not_exist_is_an_event_and_the_router_answers(
    registry: RegistryProcess, cluster: LocalCluster, workdir: Path
) -> None:
    spec = workdir / "missing.toml"
    spec.write_text(SPEC.format(image=f"{registry.host}/no/such-image:v1"))
    serve = Serve(spec, cluster, registry.host, workdir / "serve.log")
    try:
        serve.wait(
            lambda: any(e["kind"] == "failed" for e in serve.status()["events"]),
            60,
            "the failed start",
        )
        failed = [e for e in serve.status()["events"] if e["kind"] == "failed"]
        assert "no/such-image" in failed[0]["message"]
        assert "\n" not in failed[0]["message"]
        code, body, _ = _json(serve.url + "/ping")
        assert code == 503 and body["ready_replicas"] == 0
    finally:
        assert serve.stop() == 0, serve.log_tail()


def test_a_bad_spec_is_a_one_line_error(workdir: Path) -> None:
    spec = workdir / "bad.toml"
    spec.write_text('name = "Bad Name"\nimage = "x/y:1"\n')
    result = _warmstart("serve", str(spec), "--node", "a=/nonexistent.sock,-")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "name" in result.stderr
    result = _warmstart("serve", str(workdir / "missing.toml"), "--node", "a=/x.sock,-")
    assert result.returncode == 2 and "does not exist" in result.stderr
    spec.write_text('name = "ok"\nimage = "x/y:1"\n')
    result = _warmstart("serve", str(spec), "--node", "a=relative.sock,-")
    assert result.returncode == 2 and "absolute" in result.stderr
    result = _warmstart("status", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1 and "warmstart serve" in result.stderr
