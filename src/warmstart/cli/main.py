"""The ``warmstart`` command."""

from __future__ import annotations

from collections.abc import Iterable

import typer

from warmstart import __version__
from warmstart.cli import image_cmd, model_cmd, store_cmd
from warmstart.cli.agent_cmd import agent
from warmstart.cli.containerd_cmd import containerd_config
from warmstart.cli.operator_cmd import operator
from warmstart.cli.plugins import CliGroups, Plugin, add_plugins, installed_plugins
from warmstart.cli.prewarm_cmd import prewarm
from warmstart.cli.pull_cmd import pull
from warmstart.cli.serve_cmd import serve, status


def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def build_app(plugins: Iterable[Plugin]) -> typer.Typer:
    """The ``warmstart`` command: the product's commands and what ``plugins`` add (the
    harness's ``bench`` and ``image build-example``)."""
    root = typer.Typer(
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
    root.command("pull")(pull)
    root.command("agent")(agent)
    root.add_typer(store_cmd.app, name="store")
    image = image_cmd.image_app()
    root.add_typer(image, name="image")
    root.add_typer(model_cmd.app, name="model")
    root.command("containerd-config")(containerd_config)
    root.command("prewarm")(prewarm)
    root.command("serve")(serve)
    root.command("status")(status)
    root.command("operator")(operator)
    root.command("version")(version)
    add_plugins(CliGroups(root=root, image=image), plugins)
    return root


app = build_app(installed_plugins())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
