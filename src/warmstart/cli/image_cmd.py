"""``warmstart image ...``: build the image deploy/kubernetes runs (the harness adds
``image build-example``, the example model image)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import typer
from rich.table import Table

from warmstart.cli.common import err_console, fail, out_console
from warmstart.image.layers import DEFAULT_IMAGE_CACHE, LayerInfo
from warmstart.units import format_size

T = TypeVar("T")


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
    agent_only: bool = typer.Option(
        False,
        "--agent-only",
        help="Leave out the operator extra (kopf): an image that runs only the agent.",
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
        extras=() if agent_only else ("operator",),
    )
    result = built(lambda log: build_agent_image(options, log=log))
    print_layers(result.oci_reference, result.layers)
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


def built(build: Callable[[Callable[[str], None]], T]) -> T:
    """Run ``build`` with its log on stderr; a failure ends the command with its message."""
    from warmstart.image.mirror import MirrorNotFound
    from warmstart.image.tools import BuildError, ToolMissing

    try:
        return build(lambda line: err_console.print(line, markup=False))
    except (BuildError, MirrorNotFound, ToolMissing, RuntimeError, OSError) as e:
        fail(f"build failed: {e}")


def print_layers(title: str | None, layers: Sequence[LayerInfo]) -> None:
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


def image_app() -> typer.Typer:
    """The ``image`` group (a new one each time: plugins add commands to it)."""
    app = typer.Typer(
        help="Build images without Docker: the one deploy/kubernetes runs (and, with the "
        "harness, the example endpoint's).",
        no_args_is_help=True,
    )
    app.command("build-agent")(build_agent_cmd)
    return app
