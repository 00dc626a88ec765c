"""``warmstart prewarm REF --agent URL...``: ask agents to pre-warm an image, all at once."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from warmstart.agent.api import PrewarmRequest, PrewarmResponse, RequestInvalid
from warmstart.agent.client import AgentClient, AgentError
from warmstart.cli.common import err_console, fail, out_console
from warmstart.containerd.hosts import HostsConfigError, check_url
from warmstart.units import format_size

DEFAULT_TIMEOUT = 3600.0


@dataclass(frozen=True)
class Outcome:
    agent: str
    ok: bool
    seconds: float
    result: PrewarmResponse | None = None
    error: str | None = None


# -- pure helpers -------------------------------------------------------------------------------


def summary(result: PrewarmResponse) -> str:
    """``3 blobs, 1.0 GiB (upstream 1.0 GiB) in 12.3 s; hot in containerd (k8s.io, 4.1 s)``."""
    parts = ", ".join(f"{k} {format_size(v)}" for k, v in sorted(result.sources.items()) if v)
    text = f"{result.blobs} blobs, {format_size(result.bytes)}"
    if parts:
        text += f" ({parts})"
    text += f" in {result.seconds:.1f} s"
    containerd = result.containerd
    if containerd is not None:
        text += f"; hot in containerd ({containerd.namespace}, {containerd.seconds:.1f} s)"
        if containerd.tag_moved:
            text += " [tag moved during the pre-warm]"
    model = result.model
    if model is not None:
        how = "materialised" if model.built else "already materialised"
        text += f"; model {how} at {model.path} ({model.files} files, {model.seconds:.2f} s)"
    elif result.model_format is not None:
        text += f"; model ({result.model_format}) warm"
    return text


def exit_code(outcomes: Sequence[Outcome]) -> int:
    return 0 if outcomes and all(o.ok for o in outcomes) else 1


# -- I/O ----------------------------------------------------------------------------------------


async def post_prewarm(
    client: AgentClient,
    request: PrewarmRequest,
    authorization: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    started = clock()
    try:
        result = await client.prewarm(request, authorization=authorization)
    except AgentError as e:
        return Outcome(client.url, False, clock() - started, error=str(e))
    return Outcome(client.url, True, clock() - started, result=result)


async def prewarm_all(
    agents: Sequence[str],
    request: PrewarmRequest,
    *,
    token: str | None = None,
    authorization: str | None = None,
    seconds: float = DEFAULT_TIMEOUT,
    show_progress: bool = True,
) -> list[Outcome]:
    client_timeout = aiohttp.ClientTimeout(total=seconds, sock_connect=10)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.fields[agent]}", markup=False),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        disable=not show_progress,
    )
    what = "pre-warming"
    if request.hot:
        what += " + materialising" if request.model else " + importing into containerd"
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        with progress:
            tasks = {a: progress.add_task(what, agent=a, total=1) for a in agents}

            async def one(agent: str) -> Outcome:
                client = AgentClient(agent, token=token, session=session, timeout=None)
                outcome = await post_prewarm(client, request, authorization)
                status = "[green]done[/]" if outcome.ok else "[red]failed[/]"
                progress.update(tasks[agent], description=status, completed=1)
                return outcome

            return list(await asyncio.gather(*(one(a) for a in agents)))


def prewarm(
    reference: str = typer.Argument(
        ..., help="Image or model reference, e.g. registry.example/app:v1."
    ),
    agents: list[str] = typer.Option(
        ..., "--agent", help="An agent URL (repeat for several nodes), e.g. http://node1:5050."
    ),
    hot: bool = typer.Option(
        False,
        "--hot",
        help="Image: also import into each node's containerd, unpacked. Model: materialise it "
        "(a read-only directory to mount at /opt/ml/model).",
    ),
    model: bool = typer.Option(
        False,
        "--model",
        help="REFERENCE is a model (ModelPack, an ORAS artifact, or a modelcar image's /models). "
        "Artifacts that are not container images are taken as models without it.",
    ),
    platform: str | None = typer.Option(None, "--platform", help="os/arch[/variant]."),
    token: str | None = typer.Option(
        None, "--token", envvar="WARMSTART_PEER_TOKEN", help="The cluster's peer token, if set."
    ),
    username: str | None = typer.Option(
        None, "--username", "-u", help="Registry user, for a private image (with --password-stdin)."
    ),
    password_stdin: bool = typer.Option(False, "--password-stdin"),
    timeout: float = typer.Option(DEFAULT_TIMEOUT, "--timeout", min=1, help="Seconds per agent."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Pre-warm an image or a model on every named agent concurrently; exit 1 if any agent
    failed."""
    try:
        request = PrewarmRequest.of(reference, platform, hot, model=model)
        urls = list(dict.fromkeys(check_url(a, "agent URL") for a in agents))
    except (RequestInvalid, HostsConfigError) as e:
        fail(str(e), code=2)
    authorization = None
    if username is not None:
        if not password_stdin:
            fail("--username needs --password-stdin (the password is read from standard input)", 2)
        password = typer.get_text_stream("stdin").readline().rstrip("\r\n")
        basic = base64.b64encode(f"{username}:{password}".encode()).decode()
        authorization = f"Basic {basic}"
    try:
        outcomes = asyncio.run(
            prewarm_all(
                urls,
                request,
                token=token,
                authorization=authorization,
                seconds=timeout,
                show_progress=not quiet,
            )
        )
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    if as_json:
        docs = [
            {
                "agent": o.agent,
                "ok": o.ok,
                "seconds": round(o.seconds, 3),
                "result": o.result.to_json() if o.result is not None else None,
            }
            | ({"error": o.error} if o.error else {})
            for o in outcomes
        ]
        typer.echo(json.dumps(docs, indent=2))  # plain: never wrapped to the terminal width
    else:
        table = Table("agent", "result", title=Text(f"prewarm {request.reference}"))
        for o in outcomes:
            shown = (
                Text(summary(o.result)) if o.ok and o.result else Text(o.error or "", style="red")
            )
            table.add_row(Text(o.agent), shown)
        out_console.print(table)
    for o in outcomes:
        if not o.ok:
            err_console.print(Text.assemble(("error:", "bold red"), f" {o.agent}: {o.error or ''}"))
    code = exit_code(outcomes)
    if code:
        raise typer.Exit(code)
