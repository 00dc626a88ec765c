"""``warmstart pull``: pull an image into the node-local store."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from warmstart.cli.common import STORE_OPTION, err_console, fail, out_console, run, size_option
from warmstart.cli.progress import RichPullProgress
from warmstart.oci import OCIError, Platform, parse_reference
from warmstart.pull import DEFAULT_CONCURRENCY, Puller
from warmstart.registry import ClientOptions, CredentialStore, RegistryClient
from warmstart.store import ContentStore
from warmstart.units import format_size


def build_credentials(
    registry: str,
    username: str | None,
    password_stdin: bool,
    docker_config: Path | None,
) -> CredentialStore:
    creds = CredentialStore.from_docker_config(docker_config)
    if username is not None:
        if not password_stdin:
            fail("--username needs --password-stdin (the password is read from standard input)")
        password = typer.get_text_stream("stdin").readline().rstrip("\r\n")
        creds.add(registry, username=username, password=password)
    return creds


def pull(
    reference: str = typer.Argument(..., help="Image reference, e.g. 127.0.0.1:5000/app:v1"),
    store: Path = STORE_OPTION,
    platform: str | None = typer.Option(
        None, "--platform", help="os/arch[/variant] to choose from an index (default: this host)."
    ),
    insecure_registry: list[str] = typer.Option(
        [], "--insecure-registry", help="HOST:PORT reached over plain HTTP (repeatable)."
    ),
    ca_file: Path | None = typer.Option(None, "--ca-file", help="Extra CA bundle for TLS."),
    username: str | None = typer.Option(None, "--username", "-u"),
    password_stdin: bool = typer.Option(False, "--password-stdin"),
    docker_config: Path | None = typer.Option(
        None, "--docker-config", help="A docker config.json with credentials."
    ),
    budget: str | None = typer.Option(
        None, "--budget", help="Disk budget of the store, e.g. 20GiB."
    ),
    concurrency: int = typer.Option(DEFAULT_CONCURRENCY, "--concurrency", min=1, max=64),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Pull REFERENCE into the store; exit 0 only when every blob is stored and verified."""
    try:
        ref = parse_reference(reference)
        wanted = Platform.parse(platform) if platform else Platform.host()
    except OCIError as e:
        fail(str(e))
    if ca_file is not None and not ca_file.is_file():
        fail(f"CA file {ca_file} does not exist")
    budget_bytes = size_option(budget)
    creds = build_credentials(ref.registry, username, password_stdin, docker_config)
    options = ClientOptions(
        insecure=frozenset(insecure_registry),
        ca_file=str(ca_file) if ca_file else None,
        credentials=creds,
    )

    async def go():
        content = ContentStore(store, budget=budget_bytes)
        try:
            async with RegistryClient(options) as client:
                with RichPullProgress(err_console, enabled=not quiet and not json_out) as progress:
                    return await Puller(
                        client, content, concurrency=concurrency, progress=progress
                    ).pull(ref, wanted)
        finally:
            content.close()

    result = run(go)
    if json_out:
        out_console.print_json(
            json.dumps(
                {
                    "reference": str(result.reference),
                    "digest": str(result.digest),
                    "manifest": str(result.manifest_digest),
                    "platform": str(result.platform) if result.platform else None,
                    "blobs": [str(b.digest) for b in result.blobs],
                    "bytes_total": result.bytes_total,
                    "bytes_fetched": result.bytes_fetched,
                    "seconds": round(result.seconds, 3),
                }
            )
        )
        return
    rate = result.bytes_fetched / result.seconds if result.seconds > 0 else 0.0
    out_console.print(
        f"pulled {result.reference} ({result.digest}): {len(result.blobs)} blobs, "
        f"{format_size(result.bytes_total)}, fetched {format_size(result.bytes_fetched)} "
        f"in {result.seconds:.2f}s ({format_size(rate)}/s)"
    )
