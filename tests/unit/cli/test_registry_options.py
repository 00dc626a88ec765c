"""The registry flags ``warmstart pull`` and ``warmstart model push|ls|inspect`` share behave
alike."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from warmstart.cli.main import app


@pytest.fixture
def commands(tmp_path: Path) -> dict[str, list[str]]:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    return {
        "pull": ["pull", "127.0.0.1:1/a:v1", "--store", str(tmp_path / "store"), "-q"],
        "model push": ["model", "push", str(tmp_path / "m"), "127.0.0.1:1/a:v1", "-q"],
        "model ls": ["model", "ls", "127.0.0.1:1/a:v1"],
        "model inspect": ["model", "inspect", "127.0.0.1:1/a:v1"],
    }


@pytest.mark.parametrize("command", ["pull", "model push", "model ls", "model inspect"])
@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--docker-config", "BAD"], "is not valid JSON"),
        (["-u", "bob"], "--username needs --password-stdin"),
        (["--password-stdin"], "--password-stdin needs --username"),
        (["--ca-file", "/nonexistent.pem"], "CA file /nonexistent.pem does not exist"),
    ],
)
def test_shared_flags_fail_in_one_line(
    commands: dict[str, list[str]], tmp_path: Path, command: str, flags: list[str], needle: str
) -> None:
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    args = [*commands[command], *(str(bad) if f == "BAD" else f for f in flags)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert needle in lines[0]
