"""``warmstart bench ...``: benchmarks that print a table and write JSON and PNG plots."""

from __future__ import annotations

import subprocess
from pathlib import Path

import typer
from rich.table import Table

from warmstart.cli.common import err_console, fail, out_console, size_option

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
    from warmstart.bench.pull import CONTENDERS, markdown_table, run_pull_bench, write_report

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
    from warmstart.bench.agent import SCENARIOS, markdown_table, run_agent_bench, write_report

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
