"""The harness's commands in ``warmstart``: the product's CLI finds :func:`register` by the
entry point ``warmstart.cli`` (or, not installed, by this module's name) and calls it."""

from __future__ import annotations

from warmstart.cli.plugins import CliGroups
from warmstart_harness.cli import bench_cmd, example_image_cmd


def register(groups: CliGroups) -> None:
    """``warmstart bench ...`` and ``warmstart image build-example``."""
    groups.root.add_typer(bench_cmd.app, name="bench")
    groups.image.command("build-example")(example_image_cmd.build_example_cmd)
