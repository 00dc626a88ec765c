"""``make demo``: the whole stack on one machine; every figure it prints is measured, and what it
claims is checked.

Witnesses: a local ``docker-registry`` stands in for the remote registry and its access log counts
the blob GETs that reach it; each node agent's ``GET /metrics`` is read before and after a step
(bytes served and fetched by source, blob GETs that reached the agent, blobs linked into
containerd) and its ``GET /status`` gives the image's tier there.

1. a cold ``warmstart pull`` into an empty store: one upstream GET per blob;
2. the same pull again: from the store, no upstream blob GET;
3. four ``warmstart pull`` processes at once into a second empty store: one upstream GET per blob;
4. ``warmstart store ls`` and ``warmstart store verify``;
5. a two-node cluster, each node a containerd and a ``warmstart agent`` (peers of each other),
   containerd pointed at its agent with ``warmstart containerd-config``:

   a. node-a ``ctr images pull`` v1, cold: each blob GET from the upstream once;
   b. node-b ``ctr images pull`` v1, which node-a pulled: no upstream blob GET;
   c. node-a's containerd drops v1 (``ctr images rm --sync``); the agent keeps it (tier warm);
      ``ctr images pull`` again: no blob GET at the agent, every blob linked into containerd;
   d. ``warmstart prewarm --hot`` v2 (v1's base layer plus new weights) on node-b: only v2's new
      blobs from the upstream; the agent's link / pull / unpack split;
   e. node-b ``ctr images pull`` v2, already hot: no blob GET upstream or at the agent;
6. an autoscaled endpoint (``warmstart serve``) of the example model image on a fresh two-node
   cluster (the image is built once; debootstrap and wheels are cached in
   ``$WARMSTART_IMAGE_CACHE``, default ``warmstart.image.build.DEFAULT_IMAGE_CACHE``). The
   replicas run the model server's bench mode (a simulated 8B model: at most 2 requests at once,
   service time from token counts, time-compressed 10x) so two CPU cores can stand for two GPUs.
   The first replica (and the pre-warm of the other node) GET each blob upstream once; a burst
   of twice what one replica serves scales it out; the new replica starts from the cluster's
   cache (no upstream blob GET); every request is answered.

At the end the claims are printed as a table (claim, measured, held). If one did not hold, or a
step could not run, the last line is ``demo failed: ...`` and the exit status is 1.

Everything printed is data first: it goes through a console that reads no rich markup or emoji
codes (a ``hosts.toml``'s ``[host."http://..."]`` line and ``http://[fe80::1]`` stay intact);
only headings are styled, as ``Text`` objects.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from warmstart.agent.client import AgentClient, AgentError
from warmstart.image.build import DEFAULT_IMAGE_CACHE, BuildOptions, build_example
from warmstart.oci import OCIError, Reference
from warmstart.serving.controller import PHASES
from warmstart.testbed.cluster import LocalCluster
from warmstart.testbed.containerd import ContainerdProcess
from warmstart.testbed.layout import LayerSpec, LayoutImage, push_layout, write_image
from warmstart.testbed.registry import RegistryProcess
from warmstart.testbed.serve_process import ServeError, ServeProcess
from warmstart.units import format_size

WEIGHTS_BYTES = 256 << 20
GETS = "upstream blob GETs"
# Shared by both example images, so the second one reuses it.
BASE_LAYER = LayerSpec(tuple((f"usr/lib/base/file{i}.so", 64 << 10) for i in range(64)), seed=1)

BURST_REQUESTS = 100
BURST_SECONDS = 16.0
SPEC = """
name = "embed"
image = "{image}"
min_replicas = 1
max_replicas = 2
target_concurrency = 2
stable_window = 10
panic_window = 2
scale_down_delay = 300
replica_start_timeout = 180

[env]
WARMSTART_BENCH_MODE = "1"
MAX_CONCURRENCY = "2"
WARMSTART_BENCH_TIME_SCALE = "0.1"
"""
MAX_REPLICAS = 2
# One request: (800 * 0.25 ms + 200 * 28 ms) * 0.1 = 0.58 s of a replica slot, so one replica
# (2 slots) serves about 3.4 requests a second and the burst's 6 a second need two.
BODY = {"input_tokens": 800, "output_tokens": 200}


class DemoFailed(Exception):
    """A step could not run; the demo stops (the message is one line)."""


# -- printing: data is printed literally; only headings are styled ------------------------------


def demo_console(file: IO[str] | None = None, width: int | None = None) -> Console:
    """A console that reads no markup, no emoji codes, highlights nothing, wraps no line.

    Into a file or pipe (no terminal, no $COLUMNS) it prints 120 columns wide, not rich's 80.
    """
    console = Console(
        file=file, width=width, markup=False, emoji=False, highlight=False, soft_wrap=True
    )
    if width is None and not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120
    return console


def show(console: Console, data: str) -> None:
    """Print data (a file, command output, a URL) exactly as it is."""
    console.print(Text(data))


def heading(console: Console, text: str) -> None:
    console.print()
    console.print(Text(text, style="bold"))


def table(title: str, *columns: str | Column) -> Table:
    """A table whose title and headers are text, not markup (a ``str`` column wraps)."""
    cols = [Column(header=Text(c)) if isinstance(c, str) else c for c in columns]
    return Table(*cols, title=Text(title), box=box.SIMPLE_HEAD)


def fixed(header: str) -> Column:
    """A column of short cells (numbers, sizes, tiers): the step column wraps before these do."""
    return Column(header=Text(header), min_width=max(len(w) for w in header.split()))


def add_row(t: Table, *cells: object, end_section: bool = False) -> None:
    """Cells are text, not markup; missing trailing cells are empty."""
    t.add_row(*(Text(str(c)) for c in cells), end_section=end_section)


# -- claims --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    claim: str
    measured: str
    held: bool


@dataclass
class Claims:
    """What the demo claims, with what was measured; checked as the demo goes."""

    items: list[Claim] = field(default_factory=list)

    def check(self, claim: str, measured: object, held: bool) -> bool:
        self.items.append(Claim(claim, str(measured), bool(held)))
        return bool(held)

    def equal(self, claim: str, value: int, expected: int, unit: str) -> bool:
        """``value`` (shown as ``"<value> <unit>"``) must be ``expected``."""
        return self.check(claim, f"{value} {unit}", value == expected)

    def table(self) -> Table:
        t = table("claims", "claim", "measured", "held")
        for c in self.items:
            t.add_row(Text(c.claim), Text(c.measured), Text("yes" if c.held else "NO"))
        return t

    def failure_line(self) -> str | None:
        """``demo failed: ...`` naming the first claim that did not hold; None if all held."""
        failed = [c for c in self.items if not c.held]
        if not failed:
            return None
        first = failed[0]
        more = f"; {len(failed) - 1} more claim(s) did not hold" if len(failed) > 1 else ""
        return f"demo failed: did not hold: {first.claim} (measured: {first.measured}){more}"


def one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


# -- reading the agents (pure) -------------------------------------------------------------------


def _add(counts: dict[str, int], key: str, value: int) -> None:
    counts[key] = counts.get(key, 0) + value


def _diff(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    keys = sorted(set(after) | set(before))
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys}


@dataclass(frozen=True)
class AgentCounters:
    """What the demo reads from one agent's ``GET /metrics`` (or the difference of two reads)."""

    served: Mapping[str, int] = field(default_factory=dict)  # bytes to clients, by source
    fetched: Mapping[str, int] = field(default_factory=dict)  # bytes fetched, by source
    blob_gets: int = 0  # GET requests on the blob route, any status
    linked_blobs: int = 0  # blobs placed in containerd's content store (linked or copied)
    linked_bytes: int = 0

    def minus(self, before: AgentCounters) -> AgentCounters:
        return AgentCounters(
            served=_diff(self.served, before.served),
            fetched=_diff(self.fetched, before.fetched),
            blob_gets=self.blob_gets - before.blob_gets,
            linked_blobs=self.linked_blobs - before.linked_blobs,
            linked_bytes=self.linked_bytes - before.linked_bytes,
        )


def parse_agent_metrics(text: str) -> AgentCounters:
    """The demo's counters from an agent's Prometheus text exposition."""
    served: dict[str, int] = {}
    fetched: dict[str, int] = {}
    blob_gets = linked_blobs = linked_bytes = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            value = round(sample.value)
            labels = sample.labels
            if sample.name == "warmstart_agent_served_bytes_total":
                _add(served, labels.get("source", ""), value)
            elif sample.name == "warmstart_agent_fetched_bytes_total":
                _add(fetched, labels.get("source", ""), value)
            elif sample.name == "warmstart_agent_requests_total":
                if labels.get("route") == "blob" and labels.get("method") == "GET":
                    blob_gets += value
            elif sample.name == "warmstart_agent_linked_blobs_total":
                linked_blobs += value
            elif sample.name == "warmstart_agent_linked_bytes_total":
                linked_bytes += value
    return AgentCounters(served, fetched, blob_gets, linked_blobs, linked_bytes)


def _canonical(reference: str) -> str:
    try:
        return str(Reference.parse(reference))
    except OCIError:
        return reference


def agent_tier(status: Mapping[str, Any], reference: str) -> str:
    """The image's tier in an agent's ``/status`` body (hot, warm, partial), or ``none``."""
    wanted = _canonical(reference)
    for entry in status.get("images") or []:
        if isinstance(entry, Mapping) and _canonical(str(entry.get("reference"))) == wanted:
            return str(entry.get("tier"))
    return "none"


def by_source(counts: Mapping[str, int]) -> str:
    """Non-zero byte counts by source, one a line (``upstream 1.0 MiB``); ``0`` if none."""
    return "\n".join(f"{k} {format_size(v)}" for k, v in sorted(counts.items()) if v) or "0"


def prewarm_lines(result: Mapping[str, Any]) -> list[str]:
    """What one agent's ``/prewarm`` answer says, including the link / pull / unpack split."""
    sources = ", ".join(
        f"{k} {format_size(int(v))}" for k, v in sorted((result.get("sources") or {}).items())
    )
    lines = [
        f"{result.get('blobs')} blobs, {format_size(int(result.get('bytes') or 0))} "
        f"({sources or 'no bytes'}) in the agent's store in "
        f"{float(result.get('warm_seconds') or 0):.2f} s"
    ]
    ctd = result.get("containerd")
    if isinstance(ctd, Mapping):
        link = ctd.get("link")
        if isinstance(link, Mapping):
            lines.append(
                f"containerd.link: {link.get('linked')} blobs linked "
                f"({format_size(int(link.get('linked_bytes') or 0))}), "
                f"{link.get('present')} already there, {link.get('missing')} missing, "
                f"{float(link.get('seconds') or 0):.2f} s"
            )
        else:
            lines.append("containerd.link: none (the agent did not link)")
        lines.append(
            f"containerd.pull_seconds: {float(ctd.get('pull_seconds') or 0):.2f} s "
            f"(ctr images pull), of which containerd.unpack_seconds: "
            f"{float(ctd.get('unpack_seconds') or 0):.2f} s"
        )
    return lines


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


# -- step 6: an autoscaled endpoint --------------------------------------------------------------


def image_cache() -> Path:
    """Where the example image's build cache lives ($WARMSTART_IMAGE_CACHE, read now)."""
    return Path(os.environ.get("WARMSTART_IMAGE_CACHE") or DEFAULT_IMAGE_CACHE)


async def burst(url: str, count: int, seconds: float) -> list[tuple[int, float, str]]:
    """``count`` requests evenly over ``seconds`` (open loop); (status, latency, replica)."""
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(i: int) -> tuple[int, float, str]:
            await asyncio.sleep(i * seconds / count)
            started = time.perf_counter()
            try:
                async with session.post(url + "/invocations", json=BODY) as resp:
                    await resp.read()
                    replica = resp.headers.get("X-Warmstart-Replica", "-")
                    return resp.status, time.perf_counter() - started, replica
            except (aiohttp.ClientError, TimeoutError) as e:
                return 0, time.perf_counter() - started, type(e).__name__

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def replicas_table(replicas: Sequence[Mapping[str, Any]]) -> Table:
    t = table(
        "replicas (tier: where the image's bytes were when the replica started; wait: for a "
        "pre-warm of its node in flight)",
        "replica",
        "node",
        "state",
        "tier at start",
        *(f"{k} s" for k in PHASES),
        "ready s",
    )
    for r in replicas:
        p = r.get("phases") or {}
        add_row(
            t,
            r.get("id"),
            r.get("node"),
            r.get("state"),
            r.get("tier"),
            *(f"{float(p.get(k, 0)):.2f}" for k in PHASES),
            f"{float(r.get('ready_seconds') or 0):.2f}",
        )
    return t


def burst_table(results: Sequence[tuple[int, float, str]], upstream_gets: int) -> Table:
    ok = [lat for code, lat, _ in results if code == 200]
    by_replica: dict[str, int] = {}
    for _, _, replica in results:
        by_replica[replica] = by_replica.get(replica, 0) + 1
    t = table("the burst", "measure", "value")
    add_row(t, "requests answered 200", f"{len(ok)} of {len(results)}")
    if ok:
        add_row(t, "latency P50 / max", f"{statistics.median(ok):.2f} s / {max(ok):.2f} s")
    add_row(t, "answered by", ", ".join(f"{k}: {v}" for k, v in sorted(by_replica.items())))
    add_row(t, "upstream blob GETs during the burst", upstream_gets)
    return t


def endpoint_step(console: Console, base: Path, registry: RegistryProcess, claims: Claims) -> None:
    heading(console, "6. an autoscaled endpoint: a burst scales it out from the cluster's cache")
    started = time.perf_counter()
    build = build_example(
        BuildOptions(cache=image_cache(), tag="demo", layout=base / "example-oci"),
        log=lambda line: show(console, f"  {line}"),
    )
    ref = f"{registry.host}/warmstart/example-minilm:demo"
    push_layout(build.layout, "demo", ref)
    show(
        console,
        f"built and pushed {ref} ({format_size(build.total_size)}, {len(build.layers)} layers) "
        f"in {time.perf_counter() - started:.0f} s",
    )
    blobs = len({build.manifest.config_digest, *(layer.digest for layer in build.manifest.layers)})
    spec = base / "embed.toml"
    spec.write_text(SPEC.format(image=ref))
    results: list[tuple[int, float, str]] = []
    serving: list[ServeProcess] = []
    with LocalCluster({registry.host: registry.url}, slots=1, base=base / "c6") as cluster:
        urls = {n: node.agent.url for n, node in cluster.nodes.items()}
        witness = Witness(console, registry, urls)

        def start_serve() -> None:
            serve = ServeProcess(
                spec,
                cluster.node_options(),
                base / "serve.log",
                extra_args=("--interval", "0.5", "--insecure-registry", registry.host),
            )
            serving.append(serve)
            show(console, f"warmstart serve: router on {serve.url}; waiting for the first replica")
            _serve_wait(
                console,
                serve,
                lambda: len(serve.ready()) >= 1,
                180,
                "the first replica to be ready",
            )

        try:
            a = witness.step("6a warmstart serve starts, the first replica", ref, start_serve)
            serve = serving[0]
            first = {r["id"] for r in serve.ready()}
            show(
                console,
                f"burst: {BURST_REQUESTS} requests over {BURST_SECONDS:.0f} s "
                "(about twice what one replica serves)",
            )

            def burst_and_drain() -> None:
                results.extend(asyncio.run(burst(serve.url, BURST_REQUESTS, BURST_SECONDS)))
                _serve_wait(
                    console,
                    serve,
                    lambda: (s := serve.status())["queue_length"] == 0 and s["in_flight"] == 0,
                    60,
                    "the queue to drain",
                )

            b = witness.step("6b the burst", ref, burst_and_drain)
            status = serve.status()
        finally:
            code = serving[0].stop() if serving else None
    replicas = status["replicas"]
    console.print(replicas_table(replicas))
    console.print(burst_table(results, b.upstream_blob_gets))
    console.print(steps_table("6. the agents of the endpoint's nodes", witness.steps))
    bad_events = [e for e in status["events"] if e["kind"] in {"failed", "crashed"}]
    for e in status["events"]:
        if e["kind"] in {"scale", "ready", "prewarm", "prewarm-failed", "failed", "crashed"}:
            show(console, f"  {e['kind']}: {e['message']}")

    claims.equal(
        f"6a. the first replica and the pre-warm GET each of the image's {blobs} blobs upstream once",
        a.upstream_blob_gets,
        blobs,
        GETS,
    )
    ready = [r for r in replicas if r.get("state") == "ready"]
    claims.equal(
        f"6. the burst scales the endpoint out to {MAX_REPLICAS} replicas",
        len(ready),
        MAX_REPLICAS,
        "ready replicas",
    )
    claims.check(
        "6. every replica the endpoint started is ready (none failed or crashed)",
        f"{len(ready)} of {len(replicas)} ready, {len(bad_events)} failed/crashed events",
        len(ready) == len(replicas) and not bad_events,
    )
    added = [r for r in replicas if r.get("id") not in first]
    claims.check(
        "6. the scale-out replica starts from the cluster's cache (tier not cold)",
        ", ".join(f"{r.get('id')} on {r.get('node')}: {r.get('tier')}" for r in added)
        or "no replica added",
        bool(added) and all(r.get("tier") != "cold" for r in added),
    )
    claims.equal("6. the scale-out GETs no blob upstream", b.upstream_blob_gets, 0, GETS)
    answered = sum(1 for status_code, _, _ in results if status_code == 200)
    claims.check(
        "6. every request of the burst is answered (HTTP 200)",
        f"{answered} of {len(results)}",
        bool(results) and answered == len(results),
    )
    claims.check(
        "6. warmstart serve drains and exits 0 on SIGTERM", f"exit status {code}", code == 0
    )


def _serve_wait(
    console: Console,
    serve: ServeProcess,
    predicate: Callable[[], object],
    timeout: float,
    what: str,
) -> None:
    try:
        serve.wait(predicate, timeout, what)
    except ServeError as e:
        show(console, str(e))  # with the serve log's tail
        raise DemoFailed(one_line(str(e).splitlines()[0] if str(e) else what)) from None


# -- the demo ------------------------------------------------------------------------------------


def run(console: Console, base: Path, claims: Claims) -> None:
    registry = RegistryProcess(base / "registry")
    try:
        console.rule(Text("warmstart demo", style="bold"))
        show(console, f"upstream: docker-registry at {registry.url} (state in {base})")
        ref, v1 = store_steps(console, base, registry, claims)
        cluster_steps(console, base, registry, ref, v1, claims)
        endpoint_step(console, base, registry, claims)
    finally:
        registry.stop()


def main() -> None:
    console = demo_console()
    claims = Claims()
    base = Path(tempfile.mkdtemp(prefix="warmstart-demo-"))
    failure: str | None = None
    try:
        run(console, base, claims)
    except DemoFailed as e:
        failure = f"demo failed: {one_line(str(e))}"
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as e:
        failure = f"demo failed: {type(e).__name__}: {one_line(str(e))}"
    finally:
        if not os.environ.get("WARMSTART_DEMO_KEEP"):
            shutil.rmtree(base, ignore_errors=True)
    if claims.items:
        console.print()
        console.print(claims.table())
    failure = failure or claims.failure_line()
    if failure:
        print(failure, file=sys.stderr, flush=True)
        sys.exit(1)
    show(console, f"demo done: all {len(claims.items)} claims held")


if __name__ == "__main__":
    main()
