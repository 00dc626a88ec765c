"""``warmstart image build-example`` caches where the demo and ``bench scaleout`` do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import warmstart_harness.example_image.build as image_build
from warmstart.cli.main import app
from warmstart.image.layers import DEFAULT_IMAGE_CACHE
from warmstart.image.tools import BuildError
from warmstart_harness.bench.scaleout_config import ScaleoutConfig

BENCH_CACHE = ScaleoutConfig().image_cache


def build_cache(monkeypatch: pytest.MonkeyPatch, *args: str) -> Path:
    """The cache directory the command hands the builder (the build itself is stubbed)."""
    seen: list[Path] = []

    def fake_build(options: Any, log: Any = None) -> Any:
        seen.append(options.cache)
        raise BuildError("stubbed")

    monkeypatch.setattr(image_build, "build_example", fake_build)
    result = CliRunner().invoke(app, ["image", "build-example", "--registry", "h:5000", *args])
    assert result.exit_code == 1 and "build failed: stubbed" in result.output, result.output
    [cache] = seen
    return Path(cache)


def test_default_cache_is_the_benchmarks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WARMSTART_IMAGE_CACHE", raising=False)
    assert DEFAULT_IMAGE_CACHE == BENCH_CACHE
    assert build_cache(monkeypatch) == BENCH_CACHE == Path("/var/cache/warmstart/example-image")


def test_cache_from_the_environment_and_the_flag(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WARMSTART_IMAGE_CACHE", str(tmp_path / "env"))
    assert build_cache(monkeypatch) == tmp_path / "env"
    assert build_cache(monkeypatch, "--cache", str(tmp_path / "flag")) == tmp_path / "flag"
