"""``warmstart serve SPEC --node ...`` runs an endpoint; ``warmstart status`` shows it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from warmstart.cli.common import (
    LOG_LEVEL_OPTION,
    err_console,
    fail,
    out_console,
    run_until_signalled,
    setup_logging,
)

# A replica's phases, as the controller reports them (warmstart.serving.replicas.PHASES; not
# imported: the status command stays light). "model" only for an endpoint with a model.
PHASES = ("wait", "pull", "unpack", "model", "start", "load")
DEFAULT_LISTEN = "127.0.0.1:8080"
STATUS_TIMEOUT = 5.0


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        fail(f"--listen must be HOST:PORT, not {listen!r}", code=2)
    return host.strip("[]"), int(port)


def serve(
    spec_file: Path = typer.Argument(..., help="The endpoint spec (TOML)."),
    node: list[str] = typer.Option(
        [],
        "--node",
        metavar="NAME=SOCKET,AGENT_URL[,host=IP][,slots=N][,netns=NS]",
        help="A node: its containerd socket and its agent (- for none); repeatable.",
    ),
    listen: str = typer.Option(DEFAULT_LISTEN, "--listen", help="HOST:PORT of the router."),
    namespace: str = typer.Option(
        "warmstart", "--namespace", help="containerd namespace of the replicas."
    ),
    work_dir: Path | None = typer.Option(
        None, "--work-dir", help="Replica logs and hosts dirs (default: a temp dir)."
    ),
    insecure_registry: list[str] = typer.Option(
        [], "--insecure-registry", metavar="HOST[:PORT]", help="Reach it over plain HTTP."
    ),
    queue_size: int = typer.Option(1000, "--queue-size", min=0, help="Requests that may wait."),
    queue_timeout: float = typer.Option(
        60.0, "--queue-timeout", min=0.001, help="Seconds a request may wait for a replica."
    ),
    interval: float = typer.Option(1.0, "--interval", min=0.05, help="Seconds between ticks."),
    no_prewarm: bool = typer.Option(False, "--no-prewarm", help="Do not pre-warm ahead."),
    peer_token_file: Path | None = typer.Option(
        None,
        "--peer-token-file",
        metavar="PATH",
        help="A file holding the cluster's peer token (the agents' peer_token); the agents "
        "refuse pre-warms without it.",
    ),
    log_level: str = LOG_LEVEL_OPTION,
) -> None:
    """Run an endpoint: autoscaled replicas on the nodes, behind one router."""
    from warmstart.serving.router import RouterConfig
    from warmstart.serving.serve import (
        NodeOptionError,
        ServeOptions,
        TokenFileError,
        parse_node_options,
        read_token_file,
        serve_endpoint,
    )
    from warmstart.serving.spec import SpecError, load_spec

    setup_logging(log_level)
    host, port = _split_listen(listen)
    try:
        spec = load_spec(spec_file)
        nodes = parse_node_options(node)
        token = read_token_file(peer_token_file) if peer_token_file is not None else None
    except (SpecError, NodeOptionError, TokenFileError) as e:
        fail(str(e), code=2)
    missing = [n.name for n in nodes if not n.socket.exists()]
    if missing:
        fail(
            f"no containerd socket for node(s) {', '.join(missing)}; start containerd there "
            "or fix --node",
            code=2,
        )
    own_dir = work_dir is None
    base = Path(tempfile.mkdtemp(prefix="warmstart-serve-")) if work_dir is None else work_dir
    options = ServeOptions(
        spec=spec,
        nodes=nodes,
        work_dir=base,
        namespace=namespace,
        insecure_registries=frozenset(insecure_registry),
        router=RouterConfig(queue_size=queue_size, queue_timeout=queue_timeout),
        interval=interval,
        prewarm=not no_prewarm,
        peer_token=token,
    )

    def ready(url: str) -> None:
        err_console.print(
            f"endpoint {spec.name} ({spec.image}) serving on {url} with "
            f"{len(nodes)} node(s): {', '.join(n.name for n in nodes)}",
            markup=False,
        )

    async def main(stop: asyncio.Event) -> None:
        await serve_endpoint(options, host, port, stop, ready)

    try:
        run_until_signalled(main)
    except OSError as e:
        fail(f"cannot serve on {listen}: {e.strerror or e}")
    finally:
        if own_dir:
            import shutil

            shutil.rmtree(base, ignore_errors=True)


def fetch_status(url: str, timeout: float = STATUS_TIMEOUT) -> dict[str, Any]:
    target = url.rstrip("/") + "/endpoint/status"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        fail(f"{target} answered HTTP {e.code}; is this a warmstart serve router?")
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        fail(f"cannot reach {target}: {reason}; is 'warmstart serve' running there?")
    except ValueError:
        fail(f"{target} did not answer JSON; is this a warmstart serve router?")
    if not isinstance(body, dict):
        fail(f"{target} did not answer a JSON object")
    return body


def _seconds(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def render_status(body: dict[str, Any]) -> list[Table | str]:
    """Tables for the replicas and nodes, and a summary line (pure). An endpoint with a model
    shows the model's tier beside the image's (image/model), the "model" phase (the part of the
    model's fetch the pull did not hide) and the model's whole fetch (``model s``)."""
    model = body.get("model")
    head = (
        f"endpoint {body.get('endpoint', '?')} ({body.get('image', '?')}"
        + (f", model {model}" if model else "")
        + f"): desired {body.get('desired', '?')}, in flight {body.get('in_flight', 0)}, "
        f"queued {body.get('queue_length', 0)}; {body.get('last_decision') or '-'}"
    )
    shown = PHASES if model else tuple(k for k in PHASES if k != "model")
    tier = "tier (image/model)" if model else "tier"

    def tiers(entry: dict[str, Any]) -> str:
        image = str(entry.get("tier"))
        return f"{image}/{entry.get('model_tier') or '-'}" if model else image

    columns = ["replica", "node", tier, "state", "url", "ready s", "/".join(shown)]
    replicas = Table(*columns, *(["model s"] if model else []))
    for r in body.get("replicas") or []:
        phases = r.get("phases") or {}
        split = "/".join(_seconds(phases.get(k)) for k in shown)
        row = [str(r.get("id")), str(r.get("node")), tiers(r), str(r.get("state")),
               str(r.get("url", "")), _seconds(r.get("ready_seconds")), split]  # fmt: skip
        replicas.add_row(*row, *([_seconds(r.get("model_seconds"))] if model else []))
    nodes = Table("node", tier, "replicas", "slots")
    for n in body.get("nodes") or []:
        nodes.add_row(str(n.get("name")), tiers(n), str(n.get("replicas")),
                      str(n.get("slots")))  # fmt: skip
    return [head, replicas, nodes]


def status(
    url: str = typer.Option(
        "http://" + DEFAULT_LISTEN, "--url", help="The router of 'warmstart serve'."
    ),
    events: int = typer.Option(10, "--events", min=0, help="Show this many recent events."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw status JSON."),
) -> None:
    """Show an endpoint's replicas, their nodes and tiers, the queue and recent events."""
    body = fetch_status(url)
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    for part in render_status(body):
        out_console.print(part, markup=False) if isinstance(part, str) else out_console.print(part)
    recent = (body.get("events") or [])[-events:] if events else []
    with contextlib.suppress(TypeError, KeyError):
        for e in recent:
            out_console.print(f"  {e['kind']}: {e['message']}", markup=False)
