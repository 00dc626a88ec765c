"""``warmstart pull``: pull an image into the node-local store."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from warmstart.cli.common import STORE_OPTION, err_console, fail, out_console, run, size_option
from warmstart.cli.progress import RichPullProgress
from warmstart.cli.registry_options import REGISTRY_FLAGS, RegistryFlags, registry_flags
from warmstart.oci import OCIError, Platform, parse_reference
from warmstart.pull import DEFAULT_CONCURRENCY, Puller, PullResult
from warmstart.registry import RegistryClient
from warmstart.store import ContentStore
from warmstart.units import format_size


@registry_flags
def pull(
    reference: str = typer.Argument(..., help="Image reference, e.g. 127.0.0.1:5000/app:v1"),
    store: Path = STORE_OPTION,
    platform: str | None = typer.Option(
        None, "--platform", help="os/arch[/variant] to choose from an index (default: this host)."
    ),
    registry: RegistryFlags = REGISTRY_FLAGS,
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
    budget_bytes = size_option(budget)
    options = registry.client_options(ref.registry)

    async def go() -> PullResult:
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
