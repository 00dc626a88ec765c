"""``warmstart bench agent``: the node agent side by side with what a user would run instead.

Three scenarios, each measured in one run with the contenders in rotated order per round:

- ``blob``: one cached 1 GiB blob, GET by ``curl`` (no hashing on the client): the agent
  serving it from its store vs docker-registry serving it from its own storage. MB/s.
- ``fanout``: 8 clients pull one uncached 1 GiB image (4 layers) at once through a mirror: the
  agent vs docker-registry in proxy mode (``proxy.remoteurl``). Upstream bytes (sum of the
  upstream access log's blob GET sizes; 1x the image is the ideal) and wall time. Each round
  starts with an empty mirror.
- ``shaped``: containerd (``ctr images pull``, fetch + unpack) on a node whose link to the
  upstream is shaped to 100 MB/s (a network namespace + veth, ``tbf rate 800mbit``): a cold
  pull straight from the upstream vs a warm pull through the node's agent (the image already in
  its store). Also the hot case: the same pull again once the image is unpacked.

Everything runs on this machine: daemons on 127.0.0.1, or on a veth pair between the root
namespace and one namespace this benchmark creates (and deletes on exit, also on failure).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from warmstart.oci import mediatypes as mt
from warmstart.oci.tiers import Tier
from warmstart_harness.bench.plots import bar_chart
from warmstart_harness.bench.stats import median, rate_mb_s, rotated
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.containerd import ContainerdProcess
from warmstart_harness.testbed.layout import LayerSpec, LayoutImage, write_image
from warmstart_harness.testbed.registry import RegistryProcess, Request

SCENARIOS = ("blob", "fanout", "shaped")
# extra per-contender series -> (chart title, y label)
EXTRA_CHARTS = {
    "upstream_x_image": ("Bytes fetched from the upstream", "x the image (1 is ideal)"),
}
Log = Callable[[str], None]


# -- results (pure) -----------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    name: str
    title: str
    unit: str  # what the samples are: "MB/s", "s", ...
    better: str  # "higher" or "lower"
    samples: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    baseline: str | None = None  # what the others are compared with in the table

    def medians(self) -> dict[str, float]:
        return {name: median(s) for name, s in self.samples.items() if s}

    def ratio(self, ours: str, theirs: str) -> float | None:
        """How much better ``ours`` is than ``theirs`` (>1 is better, either direction)."""
        m = self.medians()
        if ours not in m or theirs not in m or m[ours] == 0 or m[theirs] == 0:
            return None
        return m[ours] / m[theirs] if self.better == "higher" else m[theirs] / m[ours]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "medians": self.medians()}


def upstream_blob_bytes(requests: Iterable[Request]) -> int:
    """Body bytes the upstream sent for blob GETs (what a mirror cost the WAN link)."""
    return sum(r.size for r in requests if r.method == "GET" and r.blob_digest and r.status < 400)


def markdown_table(results: Sequence[ScenarioResult]) -> str:
    lines = [
        "| scenario | contender | median | samples | vs baseline |",
        "|---|---|---:|---|---|",
    ]
    for r in results:
        medians = r.medians()
        for name, samples in r.samples.items():
            note = ""
            if r.baseline is not None and name != r.baseline:
                ratio = r.ratio(name, r.baseline)
                note = f"{ratio:.2f}x {r.baseline}" if ratio is not None else ""
            shown = ", ".join(f"{s:.2f}" for s in samples)
            lines.append(
                f"| {r.name} | {name} | {medians.get(name, float('nan')):.2f} {r.unit} "
                f"| {shown} | {note} |"
            )
        for key, value in r.extra.items():
            if isinstance(value, int | float | str):
                lines.append(f"| {r.name} | {key} | {value} | | |")
            elif key.endswith("_by_contender") and isinstance(value, dict):
                for name, series in value.items():
                    if series:
                        shown = ", ".join(f"{s:g}" for s in series)
                        lines.append(
                            f"| {r.name} | {key.removesuffix('_by_contender')} ({name}) "
                            f"| {median(series):g} | {shown} | |"
                        )
    return "\n".join(lines) + "\n"


def write_report(
    results: Sequence[ScenarioResult], json_path: Path | None, out_dir: Path | None
) -> list[Path]:
    written: list[Path] = []
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps([r.to_json() for r in results], indent=2))
        written.append(json_path)
    if out_dir is not None:
        for r in results:
            written.append(
                bar_chart(
                    out_dir / f"agent-{r.name}.png",
                    r.title,
                    f"{r.unit} ({r.better} is better)",
                    r.medians(),
                    r.samples,
                )
            )
            for key, value in r.extra.items():
                if key.endswith("_by_contender") and isinstance(value, dict):
                    values = {k: median(v) for k, v in value.items() if v}
                    short = key.removesuffix("_by_contender")
                    title, ylabel = EXTRA_CHARTS.get(short, (short.replace("_", " "), short))
                    written.append(
                        bar_chart(
                            out_dir / f"agent-{r.name}-{short}.png",
                            title,
                            ylabel,
                            values,
                            value,
                        )
                    )
        table = out_dir / "agent.md"
        table.write_text(markdown_table(results))
        written.append(table)
    return written


# -- shared set-up ------------------------------------------------------------------------------


def _push(layout: LayoutImage, ref: str) -> None:
    # --preserve-digests: push the uncompressed layers as they are (skopeo would gzip 1 GiB of
    # random bytes otherwise, ~20 s, and change the digests).
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
            f"oci:{layout.layout}:{layout.tag}",
            f"docker://{ref}",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )


@dataclass
class Images:
    """OCI layouts built once per run (random bytes take ~15 s a GiB) and pushed on demand."""

    base: Path
    built: dict[tuple[int, int], LayoutImage] = field(default_factory=dict)

    def layout(self, size: int, layers: int) -> LayoutImage:
        key = (size, layers)
        if key not in self.built:
            per = max(1, size // layers)
            specs = [LayerSpec(((f"part{i}.bin", per),), seed=100 + i) for i in range(layers)]
            self.built[key] = write_image(self.base / f"layout-{size}-{layers}", "v1", specs)
        return self.built[key]

    def push(self, registry_host: str, repo: str, size: int, layers: int) -> LayoutImage:
        image = self.layout(size, layers)
        _push(image, f"{registry_host}/{repo}:v1")
        return image


def _curl_get(url: str, *headers: str) -> tuple[float, int]:
    """Seconds and bytes for one GET, body to /dev/null (no hashing)."""
    cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}"]
    for h in headers:
        cmd += ["-H", h]
    proc = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"curl {url} failed: {proc.stderr.strip()[-300:]}")
    code, size, seconds = proc.stdout.split()
    if code != "200":
        raise RuntimeError(f"GET {url} answered {code}")
    return float(seconds), int(size)


def _prewarm(agent: AgentProcess, ref: str) -> None:
    status, body = agent.prewarm(ref)
    if status != 200:
        raise RuntimeError(f"prewarm {ref} on the agent failed ({status}): {body}")


# -- (i) one cached blob ------------------------------------------------------------------------


def run_blob_bench(size: int, rounds: int, base: Path, images: Images, log: Log) -> ScenarioResult:
    registry = RegistryProcess(base / "blob-registry")
    agent: AgentProcess | None = None
    try:
        log(f"blob: pushing a {size / 2**30:.2f} GiB single-layer image ...")
        image = images.push(registry.host, "bench/blob", size, 1)
        layer, nbytes = image.layer_digests[0], image.layer_sizes[0]
        agent = AgentProcess(base / "blob-agent", upstreams={registry.host: registry.url})
        _prewarm(agent, f"{registry.host}/bench/blob:v1")
        urls = {
            "agent": f"{agent.url}/v2/bench/blob/blobs/{layer}?ns={registry.host}",
            "docker-registry": f"{registry.url}/v2/bench/blob/blobs/{layer}",
        }
        result = ScenarioResult(
            "blob",
            f"GET of a cached {nbytes / 2**30:.2f} GiB blob (median of {rounds})",
            "MB/s",
            "higher",
            {name: [] for name in urls},
            {"blob_bytes": nbytes},
            baseline="docker-registry",
        )
        for name in urls:  # one untimed GET each: page cache warm for both
            _curl_get(urls[name])
        for i in range(rounds):
            for name in rotated(list(urls), i):
                seconds, got = _curl_get(urls[name])
                if got != nbytes:
                    raise RuntimeError(f"{name} sent {got} of {nbytes} bytes")
                result.samples[name].append(rate_mb_s(nbytes, seconds))
                log(f"blob: round {i + 1} {name}: {rate_mb_s(nbytes, seconds):.0f} MB/s")
        return result
    finally:
        if agent is not None:
            agent.cleanup()
        registry.stop()


# -- (ii) eight clients, one uncached image -----------------------------------------------------


async def _client_pull(base_url: str, repo: str, query: str) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{base_url}/v2/{repo}/manifests/v1{query}",
            headers={"Accept": f"{mt.OCI_MANIFEST}, {mt.DOCKER_MANIFEST_V2}"},
        ) as resp:
            if resp.status != 200:
                raise RuntimeError(f"manifest GET at {base_url} answered {resp.status}")
            manifest = json.loads(await resp.read())
    digests = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
    cmd = ["curl", "-sS", "--fail", "--parallel", "--parallel-max", "3"]
    for d in digests:
        cmd += ["-o", "/dev/null", f"{base_url}/v2/{repo}/blobs/{d}{query}"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"client pull from {base_url} failed: {err.decode()[-300:]}")


def _settled_upstream_bytes(
    upstream: RegistryProcess, mark: int, quiet: float = 3.0, limit: float = 60.0
) -> int:
    """Upstream blob bytes since ``mark`` once the total has not changed for ``quiet`` s."""
    deadline = time.monotonic() + limit
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = upstream_blob_bytes(upstream.requests(since=mark))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.2)
    return last


async def _fan_out(base_url: str, repo: str, query: str, clients: int) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(_client_pull(base_url, repo, query) for _ in range(clients)))
    return time.perf_counter() - started


def run_fanout_bench(
    size: int, rounds: int, clients: int, base: Path, images: Images, log: Log
) -> ScenarioResult:
    upstream = RegistryProcess(base / "fan-upstream")
    try:
        log(f"fanout: pushing a {size / 2**30:.2f} GiB 4-layer image ...")
        image = images.push(upstream.host, "bench/fan", size, 4)
        blob_bytes = sum(image.layer_sizes) + image.config_size
        names = ["agent", "registry-proxy"]
        result = ScenarioResult(
            "fanout",
            f"{clients} clients, one uncached {size / 2**30:.2f} GiB image (median of {rounds})",
            "s",
            "lower",
            {n: [] for n in names},
            {
                "image_blob_bytes": blob_bytes,
                "clients": clients,
                "upstream_x_image_by_contender": {n: [] for n in names},
            },
            baseline="registry-proxy",
        )
        for i in range(rounds):
            for name in rotated(names, i):
                workdir = base / f"fan-{name}-{i}"
                mark = upstream.mark()
                if name == "agent":
                    mirror: AgentProcess | RegistryProcess = AgentProcess(
                        workdir, upstreams={upstream.host: upstream.url}
                    )
                    url, query = mirror.url, f"?ns={upstream.host}"
                else:
                    mirror = RegistryProcess(workdir, proxy_remoteurl=upstream.url)
                    url, query = mirror.url, ""
                try:
                    seconds = asyncio.run(_fan_out(url, "bench/fan", query, clients))
                    # a mirror may keep fetching after it answered (the proxy fills its cache)
                    sent = _settled_upstream_bytes(upstream, mark)
                finally:
                    mirror.stop()
                    shutil.rmtree(workdir, ignore_errors=True)
                factor = sent / blob_bytes
                result.samples[name].append(seconds)
                result.extra["upstream_x_image_by_contender"][name].append(round(factor, 3))
                log(
                    f"fanout: round {i + 1} {name}: {seconds:.2f} s, "
                    f"upstream {sent / 2**30:.2f} GiB = {factor:.2f}x the image"
                )
        return result
    finally:
        upstream.stop()


# -- (iii) containerd behind a shaped link ------------------------------------------------------


@dataclass
class ShapedLink:
    """A network namespace joined to the root namespace by a veth pair; traffic from the root
    side into the namespace is shaped with ``tbf``. :meth:`close` deletes all of it."""

    name: str
    host_if: str
    ns_if: str
    host_addr: str
    ns_addr: str
    rate: str = "800mbit"
    created: bool = False

    @classmethod
    def for_pid(cls, pid: int, rate: str = "800mbit") -> ShapedLink:
        k = pid % 200 + 20
        return cls(
            f"wsbench{pid}",
            f"wsbh{pid % 100000}",
            f"wsbn{pid % 100000}",
            f"10.213.{k}.1",
            f"10.213.{k}.2",
            rate,
        )

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.name}"

    def _run(self, *cmd: str, netns: bool = False) -> None:
        full = ["nsenter", f"--net={self.netns_path}", *cmd] if netns else list(cmd)
        proc = subprocess.run(full, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(full)} failed: {proc.stderr.strip()}")

    def open(self) -> ShapedLink:
        self._run("ip", "netns", "add", self.name)
        self.created = True
        self._run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        self._run("ip", "link", "set", self.ns_if, "netns", self.name)
        self._run("ip", "addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
        self._run("ip", "link", "set", self.host_if, "up")
        self._run("ip", "addr", "add", f"{self.ns_addr}/30", "dev", self.ns_if, netns=True)
        self._run("ip", "link", "set", self.ns_if, "up", netns=True)
        self._run("ip", "link", "set", "lo", "up", netns=True)
        self._run(
            "tc", "qdisc", "add", "dev", self.host_if, "root", "tbf",
            "rate", self.rate, "burst", "1mb", "latency", "100ms",
        )  # fmt: skip
        return self

    def close(self) -> None:
        if not self.created:
            return
        # Deleting the namespace deletes its veth end, which deletes the pair and its qdisc.
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=30)
        self.created = False

    def __enter__(self) -> ShapedLink:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _timed_ctr_pull(ctd: ContainerdProcess, ref: str, *args: str) -> float:
    started = time.perf_counter()
    proc = ctd.ctr("images", "pull", *args, ref, check=False, timeout=900)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"ctr images pull {ref} failed: {proc.stderr.strip()[-300:]}")
    return elapsed


def _unpacked(ctd: ContainerdProcess, ref: str) -> bool:
    from warmstart.containerd.images import parse_images_check

    rows = parse_images_check(ctd.ctr("images", "check").stdout)
    return any(r.reference == ref and r.tier is Tier.HOT for r in rows)


def run_shaped_bench(
    size: int, rounds: int, rate: str, base: Path, images: Images, log: Log
) -> ScenarioResult:
    from warmstart.containerd.hosts import mirror_configs, mirror_host, write_hosts_dir

    link = ShapedLink.for_pid(os.getpid(), rate)
    registry: RegistryProcess | None = None
    agent: AgentProcess | None = None
    ctd: ContainerdProcess | None = None
    try:
        link.open()
        registry = RegistryProcess(base / "shaped-registry", bind_host=link.host_addr)
        log(f"shaped: pushing a {size / 2**30:.2f} GiB 4-layer image ...")
        image = images.push(registry.host, "bench/shaped", size, 4)
        ref = f"{registry.host}/bench/shaped:v1"
        ctd_base = Path(tempfile.mkdtemp(prefix="wsbc-", dir="/tmp"))
        ctd = ContainerdProcess(ctd_base, namespace="bench", netns=link.name)
        ctd.start()
        # As on any containerd node: the agent knows the socket, so it links blobs into
        # containerd's content store instead of streaming them through its ingest.
        agent = AgentProcess(
            base / "shaped-agent",
            upstreams={registry.host: registry.url},
            netns=link.name,
            settings={"containerd_socket": str(ctd.socket), "containerd_namespace": "bench"},
        )
        hosts = base / "shaped-hosts"
        write_hosts_dir(
            hosts,
            mirror_configs([registry.host], mirror_host(agent.url), insecure=[registry.host]),
        )
        log("shaped: warming the agent's store (through the shaped link) ...")
        started = time.perf_counter()
        warm_up = subprocess.run(
            [
                "nsenter", f"--net={link.netns_path}", sys.executable, "-m",
                "warmstart.cli.main", "prewarm", ref, "--agent", agent.url, "--quiet",
            ],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if warm_up.returncode != 0:
            raise RuntimeError(f"prewarm failed: {(warm_up.stderr or warm_up.stdout)[-300:]}")
        prewarm_seconds = time.perf_counter() - started
        blob_bytes = sum(image.layer_sizes) + image.config_size
        names = ["cold (upstream, 100 MB/s)", "warm (agent)"]
        result = ScenarioResult(
            "shaped",
            f"ctr pull + unpack, {size / 2**30:.2f} GiB, upstream at {rate} (median of {rounds})",
            "s",
            "lower",
            {n: [] for n in [*names, "hot (already unpacked)"]},
            {
                "image_blob_bytes": blob_bytes,
                "link_rate": rate,
                "prewarm_through_link_s": round(prewarm_seconds, 2),
                "link_MB_per_s_during_prewarm": round(rate_mb_s(blob_bytes, prewarm_seconds)),
            },
            baseline=names[0],
        )
        for i in range(rounds):
            for name in rotated(names, i):
                ctd.wipe()
                ctd.start()
                if name.startswith("cold"):
                    seconds = _timed_ctr_pull(ctd, ref, "--plain-http")
                else:
                    mark = registry.mark()
                    seconds = _timed_ctr_pull(ctd, ref, "--hosts-dir", str(hosts))
                    if registry.blob_gets(since=mark):
                        raise RuntimeError("the warm pull went to the upstream")
                    hot = _timed_ctr_pull(ctd, ref, "--hosts-dir", str(hosts))
                    result.samples["hot (already unpacked)"].append(hot)
                if not _unpacked(ctd, ref):
                    raise RuntimeError(f"{name}: the image is not unpacked after the pull")
                result.samples[name].append(seconds)
                log(f"shaped: round {i + 1} {name}: {seconds:.2f} s")
        return result
    finally:
        if ctd is not None:
            ctd.wipe()
            shutil.rmtree(ctd.base, ignore_errors=True)
        if agent is not None:
            agent.cleanup()
        if registry is not None:
            registry.stop()
        link.close()


# -- all of it ----------------------------------------------------------------------------------


def run_agent_bench(
    scenarios: Sequence[str],
    *,
    size: int,
    rounds: int,
    clients: int = 8,
    rate: str = "800mbit",
    workdir: Path | None = None,
    log: Log = print,
) -> list[ScenarioResult]:
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; choose from {SCENARIOS}")
    own = workdir is None
    base = Path(tempfile.mkdtemp(prefix="ws-bench-agent-")) if workdir is None else workdir
    base.mkdir(parents=True, exist_ok=True)
    results = []
    images = Images(base)
    try:
        for name in scenarios:
            started = time.perf_counter()
            if name == "blob":
                results.append(run_blob_bench(size, rounds, base, images, log))
            elif name == "fanout":
                results.append(run_fanout_bench(size, rounds, clients, base, images, log))
            else:
                results.append(run_shaped_bench(size, rounds, rate, base, images, log))
            log(f"{name}: done in {time.perf_counter() - started:.0f} s")
        return results
    finally:
        if own:
            shutil.rmtree(base, ignore_errors=True)
