"""``warmstart model``: model artifacts (CNCF ModelPack) in OCI registries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from warmstart.cli.common import err_console, fail, out_console, run, size_option
from warmstart.cli.progress import RichPushProgress
from warmstart.cli.registry_options import REGISTRY_FLAGS, RegistryFlags, registry_flags
from warmstart.model_push import DEFAULT_PUSH_CONCURRENCY, ModelPusher, ModelPushResult
from warmstart.oci import Digest, ImageManifest, OCIError, Platform, Reference, parse_reference
from warmstart.oci.model import LayerKind, ModelFormat, ModelLayout, model_layout
from warmstart.oci.modelpack import ModelInfo
from warmstart.oci.resolve import resolve_image
from warmstart.registry import RegistryClient
from warmstart.registry.upload import DEFAULT_PUSH_CHUNK
from warmstart.units import format_size

MAX_CONFIG_BYTES = 1 << 20  # a ModelPack config is small JSON; a bigger one is not read

app = typer.Typer(
    help="Model artifacts (CNCF ModelPack) in OCI registries.",
    no_args_is_help=True,
)


@app.command("push")
@registry_flags
def push(
    directory: Path = typer.Argument(..., help="The model's directory."),
    reference: str = typer.Argument(
        ..., help="Where to push it, with a tag, e.g. 127.0.0.1:5000/models/tiny:v1"
    ),
    registry: RegistryFlags = REGISTRY_FLAGS,
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
    options = registry.client_options(ref.registry, push_chunk_size=chunk)
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


# -- model ls / model inspect ---------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteModel:
    reference: str
    digest: Digest  # the model's manifest (the platform's, for a modelcar behind an index)
    manifest: ImageManifest
    layout: ModelLayout
    config: dict[str, Any] | None  # a ModelPack config, read; None for other formats


async def read_model(client: RegistryClient, ref: Reference, platform: Platform) -> RemoteModel:
    """The manifest ``ref`` names (an index's entry for ``platform``), its layout and, for a
    ModelPack, its config blob."""
    resolved = await resolve_image(
        ref,
        platform,
        lambda digest: client.get_manifest(ref if digest is None else ref.with_digest(digest)),
    )
    manifest = resolved.image.manifest
    assert isinstance(manifest, ImageManifest)
    layout = model_layout(manifest)
    config = None
    if layout.format is ModelFormat.MODELPACK and layout.config.size <= MAX_CONFIG_BYTES:
        stream = client.blob_stream(
            ref.registry, ref.repository, layout.config.digest, size=layout.config.size
        )
        body = b"".join([chunk async for chunk in stream])  # verified against its digest
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        config = parsed if isinstance(parsed, dict) else None
    return RemoteModel(str(ref), resolved.image.digest, manifest, layout, config)


def layer_rows(layout: ModelLayout) -> list[dict[str, Any]]:
    """One row per layer: where its bytes go, how, its size and digest (pure)."""
    rows = []
    for layer in layout.layers:
        if layer.kind is LayerKind.RAW:
            path = layer.path
        else:
            where = f"{layer.path}/" if layer.path else "./"
            path = f"{where} ({layer.kind.value}" + (
                f", only {layer.strip}/)" if layer.strip else ")"
            )
        rows.append(
            {
                "path": path,
                "kind": layer.role,
                "packing": layer.kind.value,
                "size": layer.size,
                "digest": str(layer.descriptor.digest),
                "media_type": layer.descriptor.media_type,
            }
        )
    return rows


def _open_model(reference: str, platform: str | None, registry: RegistryFlags) -> RemoteModel:
    try:
        ref = parse_reference(reference)
        wanted = Platform.parse(platform).normalized() if platform else Platform.host()
    except OCIError as e:
        fail(str(e))
    options = registry.client_options(ref.registry)

    async def go() -> RemoteModel:
        async with RegistryClient(options) as client:
            return await read_model(client, ref, wanted)

    return run(go)


PLATFORM_OPTION = typer.Option(
    None,
    "--platform",
    help="os/arch[/variant], for a modelcar behind an index (default: this host).",
)


@app.command("ls")
@registry_flags
def ls(
    reference: str = typer.Argument(..., help="The model, e.g. 127.0.0.1:5000/models/tiny:v1"),
    registry: RegistryFlags = REGISTRY_FLAGS,
    platform: str | None = PLATFORM_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print the files as JSON."),
) -> None:
    """List the files a model artifact holds (ModelPack, an ORAS artifact, or a modelcar's
    /models): path, kind, size, digest. A tar layer is one row (its files appear when a node
    materialises it)."""
    model = _open_model(reference, platform, registry)
    rows = layer_rows(model.layout)
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(
        "path", "kind", "size", "digest", title=Text(f"{reference} ({model.layout.format})")
    )
    for row in rows:
        table.add_row(Text(row["path"]), row["kind"], format_size(row["size"]), row["digest"][:19])
    out_console.print(table)
    out_console.print(
        f"{len(rows)} layers, {format_size(model.layout.total_size)} ({reference}@{model.digest})"
    )


@app.command("inspect")
@registry_flags
def inspect(
    reference: str = typer.Argument(..., help="The model, e.g. 127.0.0.1:5000/models/tiny:v1"),
    registry: RegistryFlags = REGISTRY_FLAGS,
    platform: str | None = PLATFORM_OPTION,
) -> None:
    """Show a model artifact as JSON: its format, digest, artifactType, total size, the
    ModelPack config (name, format, architecture, ...) and every layer."""
    model = _open_model(reference, platform, registry)
    doc = {
        "reference": reference,
        "digest": str(model.digest),
        "format": model.layout.format.value,
        "artifact_type": model.manifest.artifact_type,
        "config_media_type": model.manifest.config.media_type,
        "size": model.layout.total_size,
        "config": model.config,
        "layers": layer_rows(model.layout),
    }
    typer.echo(json.dumps(doc, indent=2))
