"""Demo steps 1-5: ``warmstart pull`` into a store, then a two-node cluster of agents and
containerd (with the agents read over HTTP)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from warmstart.agent.client import AgentClient, AgentError
from warmstart.units import format_size
from warmstart_harness.demo_report import (
    GETS,
    AgentCounters,
    Claims,
    DemoFailed,
    add_row,
    agent_tier,
    by_source,
    fixed,
    heading,
    one_line,
    parse_agent_metrics,
    prewarm_lines,
    show,
    table,
)
from warmstart_harness.testbed.cluster import LocalCluster
from warmstart_harness.testbed.containerd import ContainerdProcess
from warmstart_harness.testbed.layout import LayerSpec, LayoutImage, push_layout, write_image
from warmstart_harness.testbed.registry import RegistryProcess

WEIGHTS_BYTES = 256 << 20
# Shared by both example images, so the second one reuses it.
BASE_LAYER = LayerSpec(tuple((f"usr/lib/base/file{i}.so", 64 << 10) for i in range(64)), seed=1)


# -- agents, over HTTP (small helpers: one place to swap for an agent client) -----------------

_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def agent_get(url: str, path: str, timeout: float = 10) -> bytes:
    with _LOCAL.open(url.rstrip("/") + path, timeout=timeout) as resp:
        body: bytes = resp.read()
        return body


def agent_metrics(url: str) -> AgentCounters:
    return parse_agent_metrics(agent_get(url, "/metrics").decode())


def agent_status(url: str) -> dict[str, Any]:
    """``GET /status`` through the agent's client (its answer checked against the schema)."""

    async def read() -> dict[str, Any]:
        async with AgentClient(url, timeout=10) as agent:
            return (await agent.status()).to_json()

    try:
        return asyncio.run(read())
    except AgentError as e:
        raise DemoFailed(f"{url}/status: {e}") from None


def prewarm_hot(agent_url: str, reference: str) -> dict[str, Any]:
    """``warmstart prewarm REF --agent URL --hot --json``: the agent's answer."""
    out = _check(
        _warmstart("prewarm", reference, "--agent", agent_url, "--hot", "--json", "--quiet"),
        "warmstart prewarm --hot",
    )
    try:
        [doc] = json.loads(out)
        result = doc["result"]
    except (ValueError, KeyError, TypeError) as e:
        raise DemoFailed(f"warmstart prewarm --json printed no result: {e}") from None
    if not isinstance(result, dict):
        raise DemoFailed("warmstart prewarm --json printed no result object")
    return result


# -- commands ------------------------------------------------------------------------------------


def _warmstart(*args: str, show_stderr: bool = False) -> subprocess.CompletedProcess[str]:
    """``warmstart ARGS`` in a child process; stderr is shown live with ``show_stderr``."""
    return subprocess.run(
        [sys.executable, "-m", "warmstart.cli.main", *args],
        text=True,
        stdout=subprocess.PIPE,
        stderr=None if show_stderr else subprocess.PIPE,
    )


def _check(proc: subprocess.CompletedProcess[str], what: str) -> str:
    if proc.returncode != 0:
        detail = one_line(proc.stderr or proc.stdout or "") or f"exit status {proc.returncode}"
        raise DemoFailed(f"{what}: {detail}")
    return proc.stdout or ""


def _ctr_pull(ctd: ContainerdProcess, hosts: Path, ref: str) -> None:
    result = ctd.ctr("images", "pull", "--hosts-dir", str(hosts), ref, check=False)
    if result.returncode != 0:
        raise DemoFailed(f"ctr images pull {ref}: {one_line(result.stderr)}")


def _blobs(image: LayoutImage) -> set[str]:
    return {str(image.config_digest), *(str(d) for d in image.layer_digests)}


# -- steps 1-4: warmstart pull into a store ------------------------------------------------------


def store_steps(
    console: Console, base: Path, registry: RegistryProcess, claims: Claims
) -> tuple[str, LayoutImage]:
    """Build and push v1, then pull it into stores; returns v1's reference and image."""
    started = time.perf_counter()
    image = write_image(
        base / "layout",
        "v1",
        [
            BASE_LAYER,
            LayerSpec((("app/server.py", 32 << 10), ("app/requirements.lock", 4 << 10)), seed=2),
            LayerSpec((("opt/ml/model/weights.safetensors", WEIGHTS_BYTES),), seed=3),
        ],
        entrypoint=("serve",),
    )
    ref = f"{registry.host}/demo/embedder:v1"
    push_layout(image.layout, "v1", ref)
    blobs = len(_blobs(image))
    show(
        console,
        f"built and pushed {ref}: {len(image.layer_digests)} layers + config = {blobs} blobs, "
        f"{format_size(image.total_size)} ({time.perf_counter() - started:.1f} s)",
    )
    pulls = table(
        "pulls into a store (upstream: the registry's access log)",
        "step",
        "wall",
        "upstream blob GETs",
    )
    common = ("--store", str(base / "store"), "--insecure-registry", registry.host)

    def step(label: str, action: Callable[[], None]) -> int:
        mark = registry.mark()
        started = time.perf_counter()
        action()
        seconds = time.perf_counter() - started
        gets = registry.blob_gets(since=mark)
        add_row(pulls, label, f"{seconds:.2f} s", gets)
        return gets

    def pull() -> None:
        show(console, _check(_warmstart("pull", ref, *common, show_stderr=True), "pull").strip())

    heading(console, "1. cold pull into an empty store")
    gets = step("1. cold pull", pull)
    claims.equal(
        f"1. the cold pull GETs each of the {blobs} blobs upstream once", gets, blobs, GETS
    )

    heading(console, "2. the same pull again")
    gets = step("2. the same pull again", pull)
    claims.equal("2. the same pull again GETs no blob upstream", gets, 0, GETS)

    heading(console, "3. four pull processes at once into a new store")
    args = ("pull", ref, "--store", str(base / "store2"), "--insecure-registry", registry.host)

    def four_at_once() -> None:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "warmstart.cli.main", *args, "--quiet"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        failures = []
        for p in procs:
            _out, err = p.communicate()
            if p.returncode != 0:
                failures.append(one_line(err))
        if failures:
            raise DemoFailed(f"concurrent pulls: {failures[0]}")

    gets = step("3. four concurrent pulls", four_at_once)
    show(console, f"4 processes done; upstream blob GETs: {gets} for {blobs} blobs")
    claims.equal(
        f"3. four concurrent pulls GET each of the {blobs} blobs upstream once", gets, blobs, GETS
    )

    heading(console, "4. the store")
    show(console, _check(_warmstart("store", "ls", "--store", str(base / "store")), "store ls"))
    verify = _warmstart("store", "verify", "--store", str(base / "store"))
    show(console, (verify.stdout or "").strip())
    claims.check(
        "4. warmstart store verify finds every blob intact",
        f"exit status {verify.returncode}",
        verify.returncode == 0,
    )
    console.print(pulls)
    return ref, image


# -- step 5: a two-node cluster ------------------------------------------------------------------


@dataclass(frozen=True)
class NodeReading:
    """One agent's part in one step."""

    node: str
    delta: AgentCounters
    tier_before: str
    tier_after: str


@dataclass(frozen=True)
class StepResult:
    label: str
    seconds: float
    upstream_blob_gets: int
    nodes: tuple[NodeReading, ...]

    def node(self, name: str) -> NodeReading:
        return next(n for n in self.nodes if n.node == name)


class Witness:
    """Reads the upstream's access log and every agent's metrics and status around a step."""

    def __init__(
        self, console: Console, registry: RegistryProcess, agents: Mapping[str, str]
    ) -> None:
        self.console = console
        self.registry = registry
        self.agents = dict(agents)
        self.steps: list[StepResult] = []

    def tiers(self, reference: str) -> dict[str, str]:
        return {n: agent_tier(agent_status(u), reference) for n, u in self.agents.items()}

    def step(self, label: str, reference: str, action: Callable[[], None]) -> StepResult:
        tiers_before = self.tiers(reference)
        before = {n: agent_metrics(u) for n, u in self.agents.items()}
        show(self.console, f"{label} ...")
        mark = self.registry.mark()
        started = time.perf_counter()
        action()
        seconds = time.perf_counter() - started
        gets = self.registry.blob_gets(since=mark)
        after = {n: agent_metrics(u) for n, u in self.agents.items()}
        tiers_after = self.tiers(reference)
        nodes = tuple(
            NodeReading(n, after[n].minus(before[n]), tiers_before[n], tiers_after[n])
            for n in self.agents
        )
        result = StepResult(label, seconds, gets, nodes)
        self.steps.append(result)
        return result


def steps_table(title: str, steps: Sequence[StepResult]) -> Table:
    """A row per step (wall time, upstream blob GETs), then a row per agent (its deltas)."""
    t = table(title, "step, wall time / agent", fixed("upstream\nblob GETs"),
              fixed("blob GETs\nat agent"), fixed("fetched"), fixed("served"),
              fixed("linked into\ncontainerd"), fixed("tier\n(/status)"))  # fmt: skip
    for step in steps:
        add_row(t, f"{step.label}, {step.seconds:.2f} s", step.upstream_blob_gets)
        for i, n in enumerate(step.nodes):
            add_row(
                t,
                f"  {n.node}",
                "",
                n.delta.blob_gets,
                by_source(n.delta.fetched),
                by_source(n.delta.served),
                f"{n.delta.linked_blobs} ({format_size(n.delta.linked_bytes)})",
                f"{n.tier_before} -> {n.tier_after}",
                end_section=i == len(step.nodes) - 1,
            )
    return t


def write_hosts(out: Path, mirror: str, registry: str) -> Path:
    """``warmstart containerd-config``: containerd on this node pulls through ``mirror``."""
    _check(
        _warmstart(
            "containerd-config",
            "--mirror",
            mirror,
            "--out",
            str(out),
            "--insecure",
            registry,
            registry,
        ),
        "warmstart containerd-config",
    )
    return out


def cluster_steps(
    console: Console,
    base: Path,
    registry: RegistryProcess,
    ref: str,
    v1: LayoutImage,
    claims: Claims,
) -> None:
    heading(console, "5. a two-node cluster: containerd pulls through the node agents")
    v1_blobs = _blobs(v1)
    with LocalCluster({registry.host: registry.url}, namespace="demo", base=base / "c5") as cluster:
        urls = {name: node.agent.url for name, node in cluster.nodes.items()}
        ctd = {name: node.containerd for name, node in cluster.nodes.items()}
        hosts = {n: write_hosts(base / f"{n}-hosts", u, registry.host) for n, u in urls.items()}
        show(console, ", ".join(f"{n}: containerd + agent {u}" for n, u in urls.items()))
        show(console, f"node-a's {hosts['node-a'] / registry.host / 'hosts.toml'}:")
        show(console, (hosts["node-a"] / registry.host / "hosts.toml").read_text().rstrip())
        witness = Witness(console, registry, urls)

        def pull(node: str, reference: str) -> Callable[[], None]:
            return lambda: _ctr_pull(ctd[node], hosts[node], reference)

        a = witness.step("5a node-a: ctr pull v1 (cold)", ref, pull("node-a", ref))
        n = len(v1_blobs)
        claims.equal(
            f"5a. node-a's cold pull GETs each of v1's {n} blobs upstream once",
            a.upstream_blob_gets,
            n,
            GETS,
        )
        b = witness.step("5b node-b: ctr pull v1 (node-a has it)", ref, pull("node-b", ref))
        claims.equal(
            "5b. node-b's pull of what node-a pulled GETs no blob upstream",
            b.upstream_blob_gets,
            0,
            GETS,
        )

        ctd["node-a"].ctr("images", "rm", "--sync", ref)
        show(console, f"node-a: ctr images rm --sync {ref} (containerd drops it and its content)")
        c = witness.step("5c node-a: ctr pull v1 (warm)", ref, pull("node-a", ref))
        na = c.node("node-a")
        show(
            console,
            f"node-a warm pull: blob GETs at the agent: {na.delta.blob_gets}, "
            f"blobs linked: {na.delta.linked_blobs} (of {len(v1_blobs)}), "
            f"upstream blob GETs: {c.upstream_blob_gets}, {c.seconds:.2f} s",
        )
        claims.check(
            "5c. before the pull v1 is warm on node-a (/status)",
            f"tier {na.tier_before}",
            na.tier_before == "warm",
        )
        claims.equal(
            "5c. the warm pull makes no blob GET at node-a's agent",
            na.delta.blob_gets,
            0,
            "blob GETs",
        )
        claims.equal(
            f"5c. the warm pull links all {n} blobs of v1 into containerd",
            na.delta.linked_blobs,
            n,
            "blobs linked",
        )
        claims.equal("5c. the warm pull GETs no blob upstream", c.upstream_blob_gets, 0, GETS)

        ref2 = ref.rsplit(":", 1)[0] + ":v2"
        image2 = write_image(
            base / "layout",
            "v2",
            [
                BASE_LAYER,
                LayerSpec((("opt/ml/model/weights.safetensors", WEIGHTS_BYTES // 2),), seed=4),
            ],
        )
        push_layout(image2.layout, "v2", ref2)
        new_blobs = len(_blobs(image2) - v1_blobs)
        show(
            console,
            f"pushed {ref2}: v1's base layer, new weights and config ({new_blobs} new blobs)",
        )
        answers: list[dict[str, Any]] = []
        d = witness.step(
            "5d node-b: prewarm --hot v2",
            ref2,
            lambda: answers.append(prewarm_hot(urls["node-b"], ref2)),
        )
        show(console, f"warmstart prewarm {ref2} --agent {urls['node-b']} --hot --json:")
        for line in prewarm_lines(answers[0]):
            show(console, f"  {line}")
        claims.equal(
            f"5d. the hot pre-warm GETs only v2's {new_blobs} new blobs upstream",
            d.upstream_blob_gets,
            new_blobs,
            GETS,
        )
        tier = d.node("node-b").tier_after
        claims.check(
            "5d. v2 is hot on node-b after the pre-warm (/status)", f"tier {tier}", tier == "hot"
        )
        e = witness.step("5e node-b: ctr pull v2 (hot)", ref2, pull("node-b", ref2))
        gets = e.node("node-b").delta.blob_gets
        claims.check(
            "5e. pulling the hot v2 on node-b makes no blob GET, upstream or at the agent",
            f"{e.upstream_blob_gets} upstream, {gets} at node-b's agent",
            e.upstream_blob_gets == 0 and gets == 0,
        )
        console.print(steps_table("5. the two-node cluster, step by step", witness.steps))
