"""Commands another distribution adds to ``warmstart``, found at run time.

The harness (the ``warmstart-harness`` distribution: benchmarks, test bed, demo, the example
image) adds ``warmstart bench ...`` and ``warmstart image build-example``; the product imports
none of it. A plugin is a function that takes :class:`CliGroups` and adds its commands, named by
an entry point in the group ``warmstart.cli``. The harness is also found when only its module
is importable (its source directory on ``PYTHONPATH``, not installed). Without it those commands
answer with one line naming what to install, and exit 2.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import typer

from warmstart.cli.common import fail

PLUGIN_GROUP = "warmstart.cli"
HARNESS_MODULE = "warmstart_harness"
HARNESS_PLUGIN = "warmstart_harness.cli.plugin:register"
HARNESS_HINT = "pip install warmstart-harness"
# The commands the harness brings: (group, command); group "" is the root.
HARNESS_COMMANDS = (("", "bench"), ("image", "build-example"))


@dataclass(frozen=True)
class CliGroups:
    """Where a plugin may add commands: the root and the product's groups it extends."""

    root: typer.Typer
    image: typer.Typer


Plugin = Callable[[CliGroups], None]


def plugin_entry_points() -> list[importlib.metadata.EntryPoint]:
    """The installed plugins, and the harness's when its module is importable without an entry
    point (each once)."""
    found = {ep.value: ep for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP)}
    if HARNESS_PLUGIN not in found and importlib.util.find_spec(HARNESS_MODULE) is not None:
        found[HARNESS_PLUGIN] = importlib.metadata.EntryPoint(
            name="harness", value=HARNESS_PLUGIN, group=PLUGIN_GROUP
        )
    return list(found.values())


def installed_plugins() -> list[Plugin]:
    plugins: list[Plugin] = [ep.load() for ep in plugin_entry_points()]
    return plugins


def _names(app: typer.Typer) -> set[str]:
    names = {info.name for info in app.registered_groups if info.name}
    names |= {info.name for info in app.registered_commands if info.name}
    return names


def _missing(command: str) -> Callable[[], None]:
    def missing() -> None:
        fail(f"warmstart {command} comes with the harness: {HARNESS_HINT}", code=2)

    missing.__doc__ = f"(not installed: {HARNESS_HINT})"
    return missing


def add_plugins(groups: CliGroups, plugins: Iterable[Plugin]) -> None:
    """Let each plugin add its commands; where the harness's are absent, a command that says
    what to install (any arguments, ``--help`` too, give that line)."""
    for plugin in plugins:
        plugin(groups)
    for group, command in HARNESS_COMMANDS:
        app = groups.image if group == "image" else groups.root
        if command in _names(app):
            continue
        app.command(
            command,
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
            add_help_option=False,
        )(_missing(f"{group} {command}".strip()))
