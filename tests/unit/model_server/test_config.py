from __future__ import annotations

from pathlib import Path

import pytest

from warmstart_harness.model_server.config import BenchCosts, ConfigError, ServerConfig


def test_defaults_follow_the_sagemaker_contract() -> None:
    config = ServerConfig.from_env({})
    assert config.port == 8080
    assert config.model_dir == Path("/opt/ml/model")
    assert not config.bench_mode
    assert config.max_concurrency == 1


def test_env_overrides() -> None:
    config = ServerConfig.from_env(
        {
            "PORT": "9000",
            "SM_MODEL_DIR": "/m",
            "WARMSTART_BENCH_MODE": "1",
            "MAX_CONCURRENCY": "4",
            "WARMSTART_BENCH_PREFILL_S_PER_TOKEN": "0.001",
            "WARMSTART_BENCH_DECODE_S_PER_TOKEN": "0.01",
            "WARMSTART_BENCH_TIME_SCALE": "0.5",
        }
    )
    assert (config.port, config.model_dir, config.bench_mode) == (9000, Path("/m"), True)
    assert config.max_concurrency == 4
    assert config.costs == BenchCosts(0.001, 0.01, 0.5)


@pytest.mark.parametrize(
    "env",
    [{"PORT": "x"}, {"PORT": "0"}, {"MAX_CONCURRENCY": "0"}, {"WARMSTART_BENCH_TIME_SCALE": "-1"}],
)
def test_bad_values_are_rejected(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        ServerConfig.from_env(env)


def test_service_time_is_prefill_plus_decode() -> None:
    costs = BenchCosts(prefill_s_per_token=0.001, decode_s_per_token=0.02, time_scale=1.0)
    assert costs.service_seconds(1000, 10) == pytest.approx(1.0 + 0.2)
    assert BenchCosts(0.001, 0.02, 0.1).service_seconds(1000, 10) == pytest.approx(0.12)


def test_default_costs_are_those_of_an_8b_model() -> None:
    costs = BenchCosts()
    # ~4k prompt tokens/s prefill, ~35 tokens/s decode
    assert 1 / costs.prefill_s_per_token == pytest.approx(4000)
    assert 1 / costs.decode_s_per_token == pytest.approx(35.7, abs=0.1)
