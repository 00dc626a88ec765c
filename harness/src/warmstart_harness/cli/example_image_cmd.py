"""``warmstart image build-example``: build and push the example model image (the harness's;
the plugin adds it to the product's ``image`` group)."""

from __future__ import annotations

from pathlib import Path

import typer

from warmstart.cli.common import fail, out_console
from warmstart.cli.image_cmd import built, print_layers
from warmstart.image.layers import DEFAULT_IMAGE_CACHE
from warmstart.units import format_size
from warmstart_harness.cli.bench_cmd import require_bench_extra


def build_example_cmd(
    registry: str = typer.Option(..., "--registry", help="HOST:PORT of the registry to push to."),
    insecure: bool = typer.Option(False, "--insecure", help="Plain HTTP / no TLS verification."),
    padding_gib: float = typer.Option(
        0.0, "--padding-gib", min=0.0, help="GiB of incompressible stand-in weights to add."
    ),
    repository: str = typer.Option("warmstart/example-minilm", "--repository", "--repo"),
    tag: str = typer.Option("latest", "--tag"),
    cache: Path = typer.Option(
        DEFAULT_IMAGE_CACHE,
        "--cache",
        envvar="WARMSTART_IMAGE_CACHE",
        help="Keeps the debootstrap rootfs, wheels and the OCI layout between builds.",
    ),
    mirror: str | None = typer.Option(
        None, "--mirror", help="Debian mirror (default: from this machine's apt sources)."
    ),
) -> None:
    """Build and push the example model image (Debian, onnxruntime, all-MiniLM-L6-v2).

    The image follows the SageMaker hosting contract: entrypoint `serve`, port 8080 ($PORT),
    GET /ping, POST /invocations; model under /opt/ml/model. Only the package registries are
    contacted (the apt mirror of this machine, pip's index).
    """
    require_bench_extra("image build-example")
    from warmstart_harness.example_image.build import BuildOptions, build_example

    if "/" in registry or ":" not in registry:
        fail(f"--registry must be HOST:PORT, not {registry!r}", code=2)
    options = BuildOptions(
        cache=cache,
        registry=registry,
        repository=repository,
        tag=tag,
        insecure=insecure,
        padding_bytes=int(padding_gib * 2**30),
        mirror=mirror,
    )
    result = built(lambda log: build_example(options, log=log))
    print_layers(result.reference, result.layers)
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    out_console.print(f"total {format_size(result.total_size)} compressed; {timing}")
    out_console.print(f"digest {result.manifest.digest}")
    out_console.print(f"pushed {result.reference}@{result.manifest.digest}")
