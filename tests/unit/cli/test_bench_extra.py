"""Without the ``bench`` extra, ``bench ...`` and ``image build-example`` say how to install it."""

from __future__ import annotations

import builtins
from typing import Any

import pytest
from typer.testing import CliRunner

from warmstart.cli.main import app


@pytest.mark.parametrize("missing", ["matplotlib", "cryptography"])
@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "pull"],
        ["bench", "agent"],
        ["bench", "scaleout", "--quick"],
        ["bench", "chaos", "--quick"],
        ["image", "build-example", "--registry", "127.0.0.1:5000"],
    ],
)
def test_missing_extra_is_one_line(
    monkeypatch: pytest.MonkeyPatch, missing: str, argv: list[str]
) -> None:
    real_import = builtins.__import__

    def failing_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == missing or name.startswith(missing + "."):
            raise ImportError(f"No module named {name!r}", name=name)
        if name.startswith("warmstart_harness.bench") or name.startswith(
            "warmstart_harness.example_image.build"
        ):
            # never run a real benchmark or build if the check let the command through
            raise AssertionError(f"{name} imported past the check")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing_import)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2
    assert "pip install warmstart-harness" in result.output
    assert len(result.output.strip().splitlines()) == 1
