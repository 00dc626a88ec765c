"""``warmstart bench ...``: benchmarks that print a table and write JSON and PNG plots."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import typer
from rich.table import Table

from warmstart.cli.common import err_console, fail, out_console, size_option


def require_bench_extra(command: str) -> None:
    """Exit with one line naming the distribution if the harness's dependencies (only the
    harness uses them) are not installed (its source on PYTHONPATH without them)."""
    try:
        import cryptography  # noqa: F401
        import matplotlib  # noqa: F401
    except ImportError as e:
        fail(f"{command} needs {e.name or 'the harness'}: pip install warmstart-harness", code=2)


app = typer.Typer(
    help="Benchmarks, each side by side with the peer a user would otherwise run.",
    no_args_is_help=True,
)


@app.command("pull")
def pull(
    size: str = typer.Option("1GiB", "--size", help="Size of the single layer."),
    rounds: int = typer.Option(5, "--rounds", min=1, max=50),
    contenders: str = typer.Option("warmstart,skopeo,ctr", "--tools", help="Comma-separated."),
    json_path: Path | None = typer.Option(Path("bench-results/pull.json"), "--json"),
    out_dir: Path | None = typer.Option(
        Path("bench-results"), "--out", help="PNG plot + markdown table."
    ),
    workdir: Path | None = typer.Option(
        None, "--workdir", help="Keep state here (default: a temp dir)."
    ),
) -> None:
    """Pull one large single-layer image from a local docker-registry: warmstart vs skopeo vs ctr."""
    require_bench_extra("bench pull")
    from warmstart_harness.bench.pull import (
        CONTENDERS,
        markdown_table,
        run_pull_bench,
        write_report,
    )

    size_bytes = size_option(size)
    assert size_bytes is not None
    names = tuple(n.strip() for n in contenders.split(",") if n.strip())
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown or not names:
        fail(
            f"unknown tool(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(CONTENDERS)}"
        )
    try:
        result = run_pull_bench(size_bytes, rounds, workdir, names, log=err_console.print)
    except (RuntimeError, OSError) as e:
        fail(f"benchmark failed: {e}")
    medians, rates = result.medians(), result.rates()
    table = Table(
        "tool", "median s", "MB/s", "vs skopeo", title=f"pull of {size} ({rounds} rounds)"
    )
    for name in names:
        ratio = f"{medians['skopeo'] / medians[name]:.2f}x" if "skopeo" in medians else "-"
        table.add_row(name, f"{medians[name]:.2f}", f"{rates[name]:.0f}", ratio)
    out_console.print(table)
    for path in write_report(result, json_path, out_dir):
        out_console.print(f"wrote {path}")
    if out_dir is None:
        out_console.print(markdown_table(result))


@app.command("agent")
def agent(
    scenarios: str = typer.Option(
        "blob,fanout,shaped", "--scenarios", help="Comma-separated: blob, fanout, shaped."
    ),
    size: str = typer.Option("1GiB", "--size", help="Image (or blob) size."),
    rounds: int = typer.Option(3, "--rounds", min=1, max=20),
    clients: int = typer.Option(8, "--clients", min=1, max=64, help="fanout: parallel clients."),
    rate: str = typer.Option("800mbit", "--rate", help="shaped: tbf rate of the upstream link."),
    json_path: Path | None = typer.Option(Path("bench-results/agent.json"), "--json"),
    out_dir: Path | None = typer.Option(
        Path("bench-results"), "--out", help="PNG plots + markdown table."
    ),
    workdir: Path | None = typer.Option(None, "--workdir", help="Default: a temp dir."),
) -> None:
    """The agent vs docker-registry: a cached blob, 8 clients on one uncached image (upstream
    bytes), and containerd cold (shaped upstream link) vs warm (through the agent)."""
    require_bench_extra("bench agent")
    from warmstart_harness.bench.agent import (
        SCENARIOS,
        markdown_table,
        run_agent_bench,
        write_report,
    )

    size_bytes = size_option(size)
    assert size_bytes is not None
    names = [s.strip() for s in scenarios.split(",") if s.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        fail(f"unknown scenario(s) {', '.join(unknown) or '(none)'}; choose from {SCENARIOS}")
    try:
        results = run_agent_bench(
            names,
            size=size_bytes,
            rounds=rounds,
            clients=clients,
            rate=rate,
            workdir=workdir,
            log=err_console.print,
        )
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        fail(f"benchmark failed: {e}")
    for r in results:
        medians = r.medians()
        table = Table("contender", f"median {r.unit}", "samples", title=r.title)
        for name, samples in r.samples.items():
            table.add_row(name, f"{medians[name]:.2f}", ", ".join(f"{s:.2f}" for s in samples))
        for key, value in r.extra.items():
            table.add_row(key, str(value), "")
        out_console.print(table)
    for path in write_report(results, json_path, out_dir):
        out_console.print(f"wrote {path}")
    if out_dir is None:
        out_console.print(markdown_table(results))


def _agent_settings(items: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` options as agent.toml settings; a one-line error for a key the agent does
    not have or a value TOML does not parse."""
    import tomllib

    from warmstart.agent.config import AgentConfig

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in AgentConfig.model_fields:
            fail(f"--agent-setting {item!r}: expected KEY=VALUE with an agent.toml key", code=2)
        try:
            out[key] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            fail(f"--agent-setting {item!r}: the value is not TOML (quote strings)", code=2)
    return out


def _names(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        fail(
            f"unknown {what} {', '.join(unknown) or '(none)'}; choose from {', '.join(allowed)}",
            code=2,
        )
    return names


@app.command("scaleout")
def scaleout(
    modes: str = typer.Option(
        "baseline,registry-proxy,warmstart,provisioned",
        "--modes",
        help="Comma-separated. provisioned: the spike only, with one replica per node ready "
        "from the start and no scaling (the latency floor, and the cost the others are "
        "compared with).",
    ),
    scenarios: str | None = typer.Option(
        None,
        "--scenarios",
        help="Comma-separated: startup, fanout, spike (default all; quick: startup, spike).",
    ),
    nodes: int | None = typer.Option(None, "--nodes", min=2, max=16, help="Default 4 (quick 2)."),
    rate: str = typer.Option("800mbit", "--rate", help="Each node's download from the upstream."),
    upstream_rate: str | None = typer.Option(
        None, "--upstream-rate", help="Cap on all nodes' downloads together (default none)."
    ),
    lan_rate: str | None = typer.Option(None, "--lan-rate", help="Node LAN links (default none)."),
    padding: str | None = typer.Option(
        None, "--padding", help="Stand-in weights layer, e.g. 2GiB (quick: 256MiB)."
    ),
    model_size: str | None = typer.Option(
        None,
        "--model-size",
        help="Also a separate model artifact of this size (safetensors shards, random tensors), "
        "e.g. 1GiB: warmstart's replicas get it through the agents at /opt/ml/model, the other "
        "modes' replicas download it from the upstream at start; adds the image-cached start. "
        "The image keeps its --padding (default none).",
    ),
    trace: Path | None = typer.Option(
        None,
        "--trace",
        help="CSV of TIMESTAMP,ContextTokens,GeneratedTokens (default: the Azure trace).",
    ),
    factor: float = typer.Option(4.0, "--factor", min=0.01, help="Time compression of the burst."),
    slots: int = typer.Option(4, "--slots", min=1, max=64, help="K: requests a replica serves."),
    prewarm_spare: int | None = typer.Option(
        None, "--prewarm-spare", min=0, help="warmstart: idle nodes kept hot (default: all)."
    ),
    burst: float | None = typer.Option(None, "--burst", min=1, help="Burst seconds (default 60)."),
    lead: float | None = typer.Option(None, "--lead", min=1, help="Lead-in seconds (default 30)."),
    image_cache: Path | None = typer.Option(
        None, "--cache", help="debootstrap, wheels and built images (default /var/cache/...)."
    ),
    quick: bool = typer.Option(False, "--quick", help="2 nodes, 256 MiB padding, short spike."),
    puller: str = typer.Option(
        "ctr",
        "--puller",
        help="How startup and fanout replicas pull: ctr (ctr images pull) or cri (containerd's "
        "CRI plugin, PullImage, as the kubelet does: fetch and unpack are one pull phase).",
    ),
    json_path: Path | None = typer.Option(Path("bench-results/scaleout.json"), "--json"),
    out_dir: Path | None = typer.Option(
        Path("bench-results"), "--out", help="Markdown table and PNG plots."
    ),
    workdir: Path | None = typer.Option(None, "--workdir", help="Default: a temp dir."),
    agent_setting: list[str] = typer.Option(
        [],
        "--agent-setting",
        help="KEY=VALUE for every agent's agent.toml (TOML value, repeatable), for a comparison "
        "run against the defaults, e.g. pieces=false (the one-home policy before pieces). "
        "Recorded in the report.",
    ),
) -> None:
    """The cluster in a box: baseline vs registry-proxy vs warmstart on startup, fanout, spike
    (and the spike's latency and replica-seconds against provisioned capacity)."""
    require_bench_extra("bench scaleout")
    import os
    import shutil
    import tempfile

    from warmstart.image.layers import DEFAULT_IMAGE_CACHE
    from warmstart_harness.bench.scaleout import run_scaleout, summary_lines, write_outputs
    from warmstart_harness.bench.scaleout_config import SCENARIOS, ScaleoutConfig
    from warmstart_harness.bench.scaleout_spike_cost import spike_cost_table
    from warmstart_harness.bench.scaleout_types import MODES
    from warmstart_harness.bench.trace import TraceError

    if os.geteuid() != 0:
        fail("bench scaleout needs root (network namespaces, containerd)", code=2)
    from warmstart_harness.bench.scaleout_cri import PULLERS

    if puller not in PULLERS:
        fail(f"--puller must be {' or '.join(PULLERS)}, not {puller!r}", code=2)
    mode_names = _names(modes, MODES, "mode(s)")
    agent_settings = _agent_settings(agent_setting)
    scenario_names = _names(scenarios, SCENARIOS, "scenario(s)") if scenarios else None
    padding_bytes = size_option(padding)
    model_bytes = size_option(model_size)
    # an option left out keeps the default of the run (the quick run's, with --quick)
    base = ScaleoutConfig.quick_config() if quick else ScaleoutConfig()
    config = replace(
        base,
        puller=puller,
        modes=mode_names,
        scenarios=base.scenarios if scenario_names is None else scenario_names,
        rate=rate,
        upstream_rate=base.upstream_rate if upstream_rate is None else upstream_rate,
        lan_rate=base.lan_rate if lan_rate is None else lan_rate,
        trace=base.trace if trace is None else trace,
        factor=factor,
        slots=slots,
        prewarm_spare=base.prewarm_spare if prewarm_spare is None else prewarm_spare,
        nodes=base.nodes if nodes is None else nodes,
        padding_bytes=base.padding_bytes if padding_bytes is None else padding_bytes,
        model_bytes=base.model_bytes if model_bytes is None else model_bytes,
        burst_s=base.burst_s if burst is None else burst,
        lead_s=base.lead_s if lead is None else lead,
        image_cache=image_cache
        or Path(os.environ.get("WARMSTART_IMAGE_CACHE") or DEFAULT_IMAGE_CACHE),
        agent_settings=agent_settings,
    )
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="ws-scaleout-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = run_scaleout(config, work, log=lambda line: err_console.print(line, markup=False))
    except (TraceError, FileNotFoundError, ValueError) as e:
        fail(str(e), code=2)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        fail(f"benchmark failed: {e}")
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    for line in summary_lines(results):
        out_console.print(line, markup=False)
    if results.spike:  # the spike's latency and cost against provisioned, as in the report
        out_console.print("\n" + spike_cost_table(results), markup=False)
    for path in write_outputs(results, json_path, out_dir):
        out_console.print(f"wrote {path}")


@app.command("chaos")
def chaos(
    seed: int = typer.Option(0, "--seed", help="Draws every fault's node, image and moment."),
    nodes: int = typer.Option(3, "--nodes", min=3, max=8),
    seconds: float | None = typer.Option(
        None, "--seconds", min=5, help="Soak of one agent under load (default 300, quick 30)."
    ),
    quick: bool = typer.Option(False, "--quick", help="One injection per class: about 2 min."),
    json_path: Path | None = typer.Option(Path("bench-results/chaos.json"), "--json"),
    out_dir: Path | None = typer.Option(Path("bench-results"), "--out", help="Markdown table."),
    workdir: Path | None = typer.Option(None, "--workdir", help="Default: a temp dir."),
) -> None:
    """Faults in the cluster in a box while it pulls: agent and home-peer crashes, a lying
    peer, corrupt disks, an upstream outage, full stores; then a soak of one agent."""
    require_bench_extra("bench chaos")
    import os
    import shutil
    import tempfile

    from warmstart_harness.bench.chaos import run_chaos, write_outputs
    from warmstart_harness.bench.chaos_plan import ChaosConfig
    from warmstart_harness.bench.chaos_report import markdown

    if os.geteuid() != 0:
        fail("bench chaos needs root (network namespaces, containerd, tmpfs mounts)", code=2)
    try:
        if quick:
            config = ChaosConfig.quick_config(seed=seed, nodes=nodes, soak_seconds=seconds)
        else:
            soak = ChaosConfig.soak_seconds if seconds is None else seconds
            config = ChaosConfig(seed=seed, nodes=nodes, soak_seconds=soak)
    except ValueError as e:
        fail(str(e), code=2)
    own = workdir is None
    # Short: the nodes' containerd sockets live under it.
    work = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="wschaos-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = run_chaos(config, work, log=lambda line: err_console.print(line, markup=False))
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        fail(f"benchmark failed: {e}")
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    out_console.print(markdown(results), markup=False)
    for path in write_outputs(results, json_path, out_dir):
        out_console.print(f"wrote {path}")


def _node_counts(values: list[str]) -> list[int]:
    counts = []
    for text in values:
        for part in text.split(","):
            part = part.strip().replace("_", "")
            if not part:
                continue
            if not part.isdigit() or int(part) < 1:
                fail(f"--nodes takes positive whole numbers, not {part!r}", code=2)
            counts.append(int(part))
    if not counts:
        fail("--nodes needs at least one fleet size", code=2)
    return list(dict.fromkeys(counts))


def _rate_option(value: str | None, flag: str) -> float | None:
    if value is None or value.lower() in ("none", "unlimited"):
        return None
    from warmstart.units import parse_rate

    try:
        return parse_rate(value)
    except ValueError as e:
        fail(f"{flag}: {e}", code=2)


@app.command("fleet")
def fleet(
    nodes: list[str] = typer.Option(
        ["100,1000,2600"], "--nodes", help="Fleet sizes: repeat, or a comma list."
    ),
    size: str = typer.Option("3GB", "--size", help="The image every node wants at once."),
    blobs: int = typer.Option(
        1, "--blobs", min=1, max=1000, help="Split it into this many equal blobs (layers)."
    ),
    rate: str = typer.Option(
        "300MB/s", "--rate", help="Each node's NIC, up and down (300MB/s, 25Gb/s, 800mbit)."
    ),
    upstream_rate: str | None = typer.Option(
        None, "--upstream-rate", help="What the upstream registry sends in all (default none)."
    ),
    piece_size: str = typer.Option(
        "auto", "--piece-size", help="auto: blob / 128 within 8-64 MiB; or e.g. 16MiB."
    ),
    requests: int = typer.Option(4, "--requests", min=1, max=64, help="Piece requests per node."),
    upload_slots: int = typer.Option(
        8, "--upload-slots", min=1, max=64, help="Uploads per node (half while downloading)."
    ),
    hash_rate: str = typer.Option(
        "1.7GB/s", "--hash-rate", help="sha256 per core (1.7GB/s SHA-NI; 390MB/s without)."
    ),
    hash_cores: int = typer.Option(4, "--hash-cores", min=1, max=256, help="Cores hashing."),
    disk_rate: str = typer.Option("4GB/s", "--disk-rate", help="Disk writes ('none': no bound)."),
    tracker_rps: float | None = typer.Option(
        None,
        "--tracker-rps",
        min=1,
        help="Tracker answers per second at a home (default: no queue).",
    ),
    blob_digest: bool = typer.Option(
        True,
        "--blob-digest/--no-blob-digest",
        help="pieces: also check each blob's own digest (in order, one core).",
    ),
    seeds_once: bool = typer.Option(
        True,
        "--home-seeds-once/--no-home-seeds-once",
        help="pieces: a streaming home sends each piece out once.",
    ),
    policies: str = typer.Option("one-home,pieces", "--policies", help="Comma-separated."),
    seed: int = typer.Option(0, "--seed", help="Chooses the homes and breaks ties."),
    calibrate_path: Path | None = typer.Option(
        None,
        "--calibrate",
        help="Instead: predict the fan-outs measured in this JSON (bench scaleout's, or rows) "
        "on the test bed's topology and print the error per row.",
    ),
    json_path: Path | None = typer.Option(Path("bench-results/fleet.json"), "--json"),
    out_dir: Path | None = typer.Option(
        Path("bench-results"), "--out", help="fleet.png (the plot) and fleet.md (the table)."
    ),
) -> None:
    """Simulate a fleet pulling one image at once: the one-home policy (every node from the
    blob's home) against pieces (every node from every node), side by side; P50/P99
    completion, upstream bytes, the largest upload of a node. Flow-level, max-min fair links."""
    from warmstart_harness.bench.fleet_hardware import FleetParams
    from warmstart_harness.bench.fleet_policies import POLICIES, PieceParams

    size_bytes = size_option(size)
    assert size_bytes is not None
    fixed_piece = None if piece_size.lower() == "auto" else size_option(piece_size)
    pieces = PieceParams(
        piece_size=fixed_piece,
        requests=requests,
        upload_slots=upload_slots,
        upload_slots_downloading=max(1, upload_slots // 2),
        verify_blob_digest=blob_digest,
        home_seeds_once=seeds_once,
        tracker_rps=tracker_rps,
    )
    per_core = _rate_option(hash_rate, "--hash-rate")
    if calibrate_path is not None:
        from warmstart_harness.bench.fleet_calibrate import (
            TARGET_ERROR,
            BedCosts,
            calibrate,
            markdown_table,
            read_file,
        )

        try:
            measured, skipped = read_file(calibrate_path)
        except (OSError, ValueError, KeyError, TypeError) as e:
            fail(f"--calibrate {calibrate_path}: {e}", code=2)
        if not measured:
            fail(f"--calibrate {calibrate_path}: no warmstart fan-out rows ({skipped})", code=2)
        runs = [("CPU per byte: the simulator's estimate (BedCosts)", False)]
        if any(m.agent_cpu_per_byte is not None for m in measured):
            runs.append(("CPU per byte: what each run's agents were measured to use", True))
        for title, measured_cpu in runs:
            cal = calibrate(measured, BedCosts(), pieces, seed, measured_cpu=measured_cpu)
            cal.skipped.extend(skipped)
            out_console.print(f"\n{title}\n\n{markdown_table(cal)}", markup=False)
            for policy in dict.fromkeys(r.policy for r in cal.rows):
                worst = cal.worst(policy) or 0.0
                verdict = "within" if worst <= TARGET_ERROR else "outside"
                out_console.print(
                    f"{policy}: worst error {worst:.1%} ({verdict} {TARGET_ERROR:.0%})",
                    markup=False,
                )
        return
    from warmstart_harness.bench.fleet_report import describe, plot, run_fleet, write_json
    from warmstart_harness.bench.fleet_report import markdown_table as fleet_table

    counts = _node_counts(nodes)
    chosen = _names(policies, POLICIES, "policy(ies)")
    if size_bytes < blobs:
        fail("--size must be at least one byte per blob", code=2)
    part, extra = divmod(size_bytes, blobs)
    try:
        base = FleetParams(
            nodes=counts[0],
            blob_sizes=tuple(part + (1 if i < extra else 0) for i in range(blobs)),
            nic_rate=_rate_option(rate, "--rate"),
            upstream_rate=_rate_option(upstream_rate, "--upstream-rate"),
            hash_rate=per_core or 1.7e9,
            hash_cores=hash_cores,
            disk_rate=_rate_option(disk_rate, "--disk-rate"),
            seed=seed,
        )
    except ValueError as e:
        fail(str(e), code=2)
    results = run_fleet(
        base, counts, pieces, chosen, log=lambda line: err_console.print(line, markup=False)
    )
    out_console.print(describe(results), markup=False)
    out_console.print(fleet_table(results), markup=False)
    written = []
    if json_path is not None:
        written.append(write_json(results, json_path))
    if out_dir is not None:
        require_bench_extra("bench fleet --out")
        written.append(plot(results, out_dir / "fleet.png"))
        md = out_dir / "fleet.md"
        md.write_text(describe(results) + "\n\n" + fleet_table(results) + "\n", encoding="utf-8")
        written.append(md)
    for path in written:
        out_console.print(f"wrote {path}")
