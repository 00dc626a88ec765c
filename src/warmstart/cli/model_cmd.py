"""``warmstart model``: model artifacts (CNCF ModelPack) in OCI registries."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from warmstart.cli.common import err_console, fail, out_console, run, size_option
from warmstart.cli.progress import RichPushProgress
from warmstart.cli.registry_options import (
    CA_FILE_OPTION,
    DOCKER_CONFIG_OPTION,
    INSECURE_REGISTRY_OPTION,
    PASSWORD_STDIN_OPTION,
    USERNAME_OPTION,
    client_options,
)
from warmstart.model_push import DEFAULT_PUSH_CONCURRENCY, ModelPusher, ModelPushResult
from warmstart.oci import OCIError, parse_reference
from warmstart.oci.modelpack import ModelInfo
from warmstart.registry import RegistryClient
from warmstart.registry.upload import DEFAULT_PUSH_CHUNK
from warmstart.units import format_size

app = typer.Typer(
    help="Model artifacts (CNCF ModelPack) in OCI registries.",
    no_args_is_help=True,
)


@app.command("push")
def push(
    directory: Path = typer.Argument(..., help="The model's directory."),
    reference: str = typer.Argument(
        ..., help="Where to push it, with a tag, e.g. 127.0.0.1:5000/models/tiny:v1"
    ),
    insecure_registry: list[str] = INSECURE_REGISTRY_OPTION,
    ca_file: Path | None = CA_FILE_OPTION,
    username: str | None = USERNAME_OPTION,
    password_stdin: bool = PASSWORD_STDIN_OPTION,
    docker_config: Path | None = DOCKER_CONFIG_OPTION,
    name: str | None = typer.Option(
        None, "--name", help="The model's name in its config (default: the directory's name)."
    ),
    model_format: str | None = typer.Option(
        None,
        "--format",
        help="The weights' format in the config, e.g. safetensors, gguf, onnx, pt "
        "(default: from the weight files' extensions when they agree).",
    ),
    chunk_size: str = typer.Option(
        f"{DEFAULT_PUSH_CHUNK >> 20}MiB",
        "--chunk-size",
        help="Bytes per upload request (PATCH); an upload that breaks resumes from the "
        "registry's offset.",
    ),
    concurrency: int = typer.Option(
        DEFAULT_PUSH_CONCURRENCY, "--concurrency", min=1, max=16, help="Files at a time."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Push DIRECTORY as a CNCF ModelPack artifact to REFERENCE: one layer per file (weights,
    their config and tokenizer files, docs, code, named by path), skipping what the registry
    has. Entries whose name starts with a dot are left out. Prints REFERENCE@DIGEST."""
    try:
        ref = parse_reference(reference)
    except OCIError as e:
        fail(str(e))
    if ref.digest is not None:
        fail(f"push to a tag, not a digest ({reference}): the digest comes from the content")
    chunk = size_option(chunk_size)
    if chunk is None or chunk < 1:
        fail("--chunk-size must be at least one byte", code=2)
    if name is not None and not name.strip():
        fail("--name must not be empty", code=2)
    options = client_options(
        ref.registry,
        insecure_registry=insecure_registry,
        ca_file=ca_file,
        username=username,
        password_stdin=password_stdin,
        docker_config=docker_config,
        push_chunk_size=chunk,
    )
    info = ModelInfo(name=name, format=model_format or None)

    async def go() -> ModelPushResult:
        async with RegistryClient(options) as client:
            with RichPushProgress(err_console, enabled=not quiet and not json_out) as progress:
                pusher = ModelPusher(client, concurrency=concurrency, progress=progress)
                return await pusher.push(directory, ref, info)

    result = run(go)
    if json_out:
        out_console.print_json(
            json.dumps(
                {
                    "reference": result.pinned,
                    "digest": str(result.digest),
                    "files": result.files,
                    "bytes_total": result.bytes_total,
                    "bytes_uploaded": result.bytes_uploaded,
                    "bytes_skipped": result.bytes_skipped,
                    "bytes_sent": result.bytes_sent,
                    "left_out": result.hidden,
                    "seconds": round(result.seconds, 3),
                }
            )
        )
        return
    if result.hidden and not quiet:
        shown = ", ".join(result.hidden[:5]) + (", ..." if len(result.hidden) > 5 else "")
        err_console.print(f"left out (names starting with a dot): {shown}")
    out_console.print(
        f"{result.pinned} ({result.files} files, {format_size(result.bytes_total)}; "
        f"uploaded {format_size(result.bytes_uploaded)}, "
        f"skipped {format_size(result.bytes_skipped)} already there; "
        f"{result.seconds:.2f}s)"
    )
