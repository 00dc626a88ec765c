"""Every command's ``--help`` renders: no rich-markup crash, a usage line, no ``<bool>`` on flags."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import typer
from typer.testing import CliRunner

from warmstart.cli.main import app


def command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The root, every command and every subcommand, walked from the click tree."""
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from command_paths(sub, (*path, name))


def help_problems(output: str) -> list[str]:
    problems = []
    if "Usage" not in output:
        problems.append("no Usage line")
    if "<bool>" in output:
        problems.append("<bool> metavar on a flag")
    return problems


def test_help_renders_for_every_command() -> None:
    paths = list(command_paths(typer.main.get_command(app)))
    # The walk really reaches the groups' subcommands (guards against an empty walk).
    assert ("pull",) in paths and ("store", "ls") in paths and ("image", "build-example") in paths

    runner = CliRunner()
    failures: dict[str, str] = {}
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        problems = help_problems(result.output)
        if result.exit_code != 0 or result.exception is not None:
            problems.append(f"exit {result.exit_code}: {result.exception!r}")
        if problems:
            failures[" ".join(path) or "(root)"] = "; ".join(problems)
    assert not failures, failures

    # The real entry point, as a user runs it (a fresh process, the installed typer/rich).
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "warmstart.cli.main", "pull", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.lstrip().startswith("Usage"), proc.stdout
    assert help_problems(proc.stdout) == [], proc.stdout
    assert "os/arch[/variant]" in proc.stdout
    assert "Traceback" not in proc.stderr
