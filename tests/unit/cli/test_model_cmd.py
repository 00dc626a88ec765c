"""``warmstart model push``: bad input is one line on stderr and a non-zero exit (no registry
is reached: every case fails before a connection)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from warmstart.cli.main import app


def push(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["model", "push", *args], input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stderr


def assert_one_line(code: int, stderr: str, needle: str) -> None:
    assert code != 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert needle in lines[0], lines[0]


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    root.mkdir()
    (root / "config.json").write_text("{}")
    return root


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["127.0.0.1:1/Bad/Name:v1"], "invalid reference"),
        ([f"127.0.0.1:1/m@sha256:{'a' * 64}"], "push to a tag, not a digest"),
        (["127.0.0.1:1/m:v1", "--chunk-size", "lots"], "invalid size"),
        (["127.0.0.1:1/m:v1", "--chunk-size", "0"], "--chunk-size must be at least"),
        (["127.0.0.1:1/m:v1", "--name", " "], "--name must not be empty"),
        (["127.0.0.1:1/m:v1", "-u", "bob"], "--password-stdin"),
        (["127.0.0.1:1/m:v1", "--password-stdin"], "needs --username"),
        (["127.0.0.1:1/m:v1", "--ca-file", "/nonexistent.pem"], "CA file"),
    ],
)
def test_bad_options(model: Path, args: list[str], needle: str) -> None:
    assert_one_line(*push(str(model), *args, "-q"), needle)


def test_bad_docker_config(model: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text("{not json")
    code, stderr = push(str(model), "127.0.0.1:1/m:v1", "--docker-config", str(config), "-q")
    assert_one_line(code, stderr, "is not valid JSON")


def test_bad_directories(tmp_path: Path) -> None:
    assert_one_line(*push(str(tmp_path / "nope"), "127.0.0.1:1/m:v1", "-q"), "does not exist")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert_one_line(*push(str(tmp_path / "empty"), "127.0.0.1:1/m:v1", "-q"), "no files")
    (tmp_path / "outside").mkdir()
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "d").symlink_to(tmp_path / "outside", target_is_directory=True)
    assert_one_line(*push(str(tmp_path / "linked"), "127.0.0.1:1/m:v1", "-q"), "outside")
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / "pipe")
    assert_one_line(*push(str(tmp_path / "fifo"), "127.0.0.1:1/m:v1", "-q"), "a FIFO")


def test_unreachable_registry(model: Path) -> None:
    code, stderr = push(str(model), "127.0.0.1:1/m:v1", "--insecure-registry", "127.0.0.1:1", "-q")
    assert_one_line(code, stderr, "127.0.0.1:1")
