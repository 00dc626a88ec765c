"""``warmstart image ...``: build the example model image and the agent's image."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import typer
from rich.table import Table

from warmstart.cli.common import err_console, fail, out_console
from warmstart.image.build import DEFAULT_IMAGE_CACHE, LayerInfo
from warmstart.units import format_size

T = TypeVar("T")

app = typer.Typer(
    help="Build images without Docker: the example endpoint's, and the one deploy/kubernetes runs.",
    no_args_is_help=True,
)


@app.command("build-example")
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
    from warmstart.cli.bench_cmd import require_bench_extra

    require_bench_extra("image build-example")
    from warmstart.image.build import BuildOptions, build_example

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
    result = _built(lambda log: build_example(options, log=log))
    _print_layers(result.reference, result.layers)
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    out_console.print(f"total {format_size(result.total_size)} compressed; {timing}")
    out_console.print(f"digest {result.manifest.digest}")
    out_console.print(f"pushed {result.reference}@{result.manifest.digest}")


@app.command("build-agent")
def build_agent_cmd(
    layout: Path | None = typer.Option(
        None, "--layout", help="Where to write the OCI layout (default: CACHE/agent-layout)."
    ),
    tag: str | None = typer.Option(None, "--tag", help="The layout's tag (default: the version)."),
    push: str | None = typer.Option(
        None,
        "--push",
        help="Push to REGISTRY/NAME:TAG with skopeo (credentials: `skopeo login REGISTRY`).",
    ),
    insecure: bool = typer.Option(False, "--insecure", help="Push over plain HTTP / no TLS check."),
    source: Path | None = typer.Option(
        None, "--source", help="warmstart's source tree (default: the running package's)."
    ),
    cache: Path = typer.Option(
        DEFAULT_IMAGE_CACHE,
        "--cache",
        envvar="WARMSTART_IMAGE_CACHE",
        help="Keeps the debootstrap rootfs, .deb files and wheels between builds.",
    ),
    mirror: str | None = typer.Option(
        None, "--mirror", help="Debian mirror (default: from this machine's apt sources)."
    ),
) -> None:
    """Build the image deploy/kubernetes runs (agent and operator) as an OCI layout.

    Debian minbase + python3 (the example image's base), ctr and the CA bundle from Debian's
    containerd and ca-certificates packages, cp311 wheels of warmstart's runtime requirements
    and warmstart's own wheel; assembled with umoci, no Docker. Only package registries are
    contacted (this machine's apt sources, pip's index), and only for what the cache lacks.
    """
    from warmstart.image.agent_image import AgentImageOptions, build_agent_image

    options = AgentImageOptions(
        cache=cache,
        layout=(layout or cache / "agent-layout").absolute(),
        tag=tag,
        source=source,
        mirror=mirror,
        push=push,
        insecure=insecure,
    )
    result = _built(lambda log: build_agent_image(options, log=log))
    _print_layers(result.oci_reference, result.layers)
    shares = []
    for name, only in sorted(result.exclusive.items()):
        size, share = result.share(only)
        shares.append(f"{name} {format_size(size)} ({share:.1%})")
    out_console.print("unpacked, by requirement (with what only it needs): " + ", ".join(shares))
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    out_console.print(
        f"total {format_size(result.total_size)} compressed, "
        f"{format_size(result.total_unpacked)} unpacked; {timing}"
    )
    out_console.print(f"digest {result.manifest.digest}")
    if result.reference:
        out_console.print(f"pushed {result.reference}@{result.manifest.digest}")
    else:
        out_console.print(f"push with: {result.push_command()}")


def _built(build: Callable[[Callable[[str], None]], T]) -> T:
    """Run ``build`` with its log on stderr; a failure ends the command with its message."""
    from warmstart.image.mirror import MirrorNotFound
    from warmstart.image.tools import BuildError, ToolMissing

    try:
        return build(lambda line: err_console.print(line, markup=False))
    except (BuildError, MirrorNotFound, ToolMissing, RuntimeError, OSError) as e:
        fail(f"build failed: {e}")


def _print_layers(title: str | None, layers: Sequence[LayerInfo]) -> None:
    table = Table("layer", "content", "digest", "size", "unpacked", title=title)
    for layer in layers:
        table.add_row(
            layer.name,
            layer.content,
            layer.digest[:19],
            format_size(layer.size),
            format_size(layer.unpacked),
        )
    out_console.print(table)
