from __future__ import annotations

from typer.testing import CliRunner

from warmstart.cli.main import app


def test_build_example_is_registered_and_checks_the_registry() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["image", "build-example", "--help"])
    assert result.exit_code == 0
    assert "--padding-gib" in result.output
    result = runner.invoke(app, ["image", "build-example", "--registry", "http://x/y"])
    assert result.exit_code == 2


def test_build_agent_is_registered() -> None:
    result = CliRunner().invoke(app, ["image", "build-agent", "--help"])
    assert result.exit_code == 0
    for option in ("--layout", "--tag", "--push", "--insecure", "--cache", "--source"):
        assert option in result.output
