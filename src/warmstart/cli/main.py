"""The ``warmstart`` command."""

from __future__ import annotations

import typer

from warmstart import __version__
from warmstart.cli import bench_cmd, image_cmd, model_cmd, store_cmd
from warmstart.cli.agent_cmd import agent
from warmstart.cli.containerd_cmd import containerd_config
from warmstart.cli.operator_cmd import operator
from warmstart.cli.prewarm_cmd import prewarm
from warmstart.cli.pull_cmd import pull
from warmstart.cli.serve_cmd import serve, status

app = typer.Typer(
    name="warmstart",
    help="Node-local image and model caches that make inference endpoints scale out fast.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain click-style help (inherited by every command and sub-app): help texts are not
    # parsed as rich markup, so text such as os/arch[/variant] shows as written instead of
    # crashing --help, and flags show no type (typer's rich panels print <bool> for them).
    rich_markup_mode=None,
)
app.command("pull")(pull)
app.command("agent")(agent)
app.add_typer(store_cmd.app, name="store")
app.add_typer(bench_cmd.app, name="bench")
app.add_typer(image_cmd.app, name="image")
app.add_typer(model_cmd.app, name="model")
app.command("containerd-config")(containerd_config)
app.command("prewarm")(prewarm)
app.command("serve")(serve)
app.command("status")(status)
app.command("operator")(operator)


@app.command("version")
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
