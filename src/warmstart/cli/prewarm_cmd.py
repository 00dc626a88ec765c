"""``warmstart prewarm REF --agent URL...``: ask agents to pre-warm an image, all at once."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from warmstart.agent.containerd_hosts import HostsConfigError, check_url
from warmstart.cli.common import err_console, fail, out_console
from warmstart.fetch.api import PEER_TOKEN_HEADER
from warmstart.oci import OCIError, Platform, Reference
from warmstart.units import format_size

DEFAULT_TIMEOUT = 3600.0
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class Outcome:
    agent: str
    ok: bool
    seconds: float
    result: dict[str, Any] | None = None
    error: str | None = None


# -- pure helpers -------------------------------------------------------------------------------


def prewarm_payload(reference: str, platform: str | None, hot: bool) -> dict[str, Any]:
    """Validate locally (one-line errors before any request) and build the JSON body."""
    ref = Reference.parse(reference)
    plat = Platform.parse(platform).normalized() if platform else None
    return {"reference": str(ref), "platform": str(plat) if plat else None, "hot": hot}


def error_text(status: int, body: bytes) -> str:
    """One line from an agent's error answer (OCI ``errors`` list, ``{"error": ...}`` or text)."""
    message = ""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        errors = doc.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            message = str(first.get("message") or first.get("code") or "")
        elif isinstance(doc.get("error"), str):
            message = doc["error"]
        elif isinstance(doc.get("message"), str):
            message = doc["message"]
    if not message:
        message = body.decode("utf-8", "replace").strip()
    message = " ".join(message.split())[:MAX_ERROR_CHARS]
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"


def summary(result: dict[str, Any]) -> str:
    """``3 blobs, 1.0 GiB (upstream 1.0 GiB) in 12.3 s; hot in containerd (k8s.io, 4.1 s)``."""
    sources = result.get("sources") or {}
    parts = ", ".join(f"{k} {format_size(int(v))}" for k, v in sorted(sources.items()) if v)
    text = f"{result.get('blobs', '?')} blobs, {format_size(int(result.get('bytes') or 0))}"
    if parts:
        text += f" ({parts})"
    text += f" in {float(result.get('seconds') or 0):.1f} s"
    containerd = result.get("containerd")
    if isinstance(containerd, dict):
        text += (
            f"; hot in containerd ({containerd.get('namespace', '?')}, "
            f"{float(containerd.get('seconds') or 0):.1f} s)"
        )
        if containerd.get("tag_moved"):
            text += " [tag moved during the pre-warm]"
    return text


def exit_code(outcomes: Sequence[Outcome]) -> int:
    return 0 if outcomes and all(o.ok for o in outcomes) else 1


# -- I/O ----------------------------------------------------------------------------------------


async def post_prewarm(
    session: aiohttp.ClientSession,
    agent: str,
    payload: dict[str, Any],
    headers: dict[str, str],
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    started = clock()
    try:
        async with session.post(f"{agent}/prewarm", json=payload, headers=headers) as resp:
            body = await resp.read()
            elapsed = clock() - started
            if resp.status >= 300:
                return Outcome(agent, False, elapsed, error=error_text(resp.status, body))
            try:
                result = json.loads(body)
            except ValueError:
                return Outcome(agent, False, elapsed, error="the agent answered with no JSON")
            if not isinstance(result, dict):
                return Outcome(agent, False, elapsed, error="the agent answered with no object")
            return Outcome(agent, True, elapsed, result=result)
    except TimeoutError:
        return Outcome(agent, False, clock() - started, error="timed out")
    except aiohttp.ClientError as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        return Outcome(agent, False, clock() - started, error=f"cannot reach the agent: {reason}")


async def prewarm_all(
    agents: Sequence[str],
    payload: dict[str, Any],
    *,
    token: str | None = None,
    authorization: str | None = None,
    seconds: float = DEFAULT_TIMEOUT,
    show_progress: bool = True,
) -> list[Outcome]:
    headers = {PEER_TOKEN_HEADER: token} if token else {}
    if authorization:
        headers["Authorization"] = authorization
    client_timeout = aiohttp.ClientTimeout(total=seconds, sock_connect=10)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.fields[agent]}", markup=False),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        disable=not show_progress,
    )
    what = "pre-warming + importing into containerd" if payload["hot"] else "pre-warming"
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        with progress:
            tasks = {a: progress.add_task(what, agent=a, total=1) for a in agents}

            async def one(agent: str) -> Outcome:
                outcome = await post_prewarm(session, agent, payload, headers)
                status = "[green]done[/]" if outcome.ok else "[red]failed[/]"
                progress.update(tasks[agent], description=status, completed=1)
                return outcome

            return list(await asyncio.gather(*(one(a) for a in agents)))


def prewarm(
    reference: str = typer.Argument(..., help="Image reference, e.g. registry.example/app:v1."),
    agents: list[str] = typer.Option(
        ..., "--agent", help="An agent URL (repeat for several nodes), e.g. http://node1:5050."
    ),
    hot: bool = typer.Option(
        False, "--hot", help="Also import into each node's containerd, unpacked."
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
    """Pre-warm an image on every named agent concurrently; exit 1 if any agent failed."""
    try:
        payload = prewarm_payload(reference, platform, hot)
        urls = list(dict.fromkeys(check_url(a, "agent URL") for a in agents))
    except (OCIError, HostsConfigError) as e:
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
                payload,
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
            {"agent": o.agent, "ok": o.ok, "seconds": round(o.seconds, 3), "result": o.result}
            | ({"error": o.error} if o.error else {})
            for o in outcomes
        ]
        typer.echo(json.dumps(docs, indent=2))  # plain: never wrapped to the terminal width
    else:
        table = Table("agent", "result", title=Text(f"prewarm {payload['reference']}"))
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
