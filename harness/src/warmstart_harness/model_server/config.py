"""The server's settings, read from the environment (the container's ``Env``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from warmstart_harness.model_server.download import DownloadError, parse_source

DEFAULT_PORT = 8080
DEFAULT_MODEL_DIR = Path("/opt/ml/model")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class BenchCosts:
    """Service-time constants of the simulated model, in seconds per token.

    Defaults: an 8B-parameter decoder (Llama-3-8B / Qwen3-8B class, bf16) on one 24 GB GPU
    (A10G, ml.g5.2xlarge): prefill runs at about 4,000 prompt tokens/s (0.25 ms a token) and
    decode at about 35 tokens/s per sequence (28 ms a token).
    """

    prefill_s_per_token: float = 0.00025
    decode_s_per_token: float = 0.028
    time_scale: float = 1.0  # multiply every service time (compress a benchmark's clock)

    def service_seconds(self, input_tokens: int, output_tokens: int) -> float:
        raw = input_tokens * self.prefill_s_per_token + output_tokens * self.decode_s_per_token
        return raw * self.time_scale


@dataclass(frozen=True)
class ServerConfig:
    port: int = DEFAULT_PORT
    host: str = "0.0.0.0"
    model_dir: Path = DEFAULT_MODEL_DIR
    bench_mode: bool = False
    max_concurrency: int = 1
    costs: BenchCosts = BenchCosts()
    max_batch: int = 256
    read_chunk: int = 8 << 20
    # An artifact to download into model_dir before loading (``WARMSTART_MODEL_SOURCE``:
    # http[s]://HOST/REPO:TAG), as a replica without a node agent gets its model; None: the
    # model is already there (in the image, or mounted).
    model_source: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerConfig:
        env = os.environ if env is None else env
        costs = BenchCosts(
            prefill_s_per_token=_float(env, "WARMSTART_BENCH_PREFILL_S_PER_TOKEN", 0.00025),
            decode_s_per_token=_float(env, "WARMSTART_BENCH_DECODE_S_PER_TOKEN", 0.028),
            time_scale=_float(env, "WARMSTART_BENCH_TIME_SCALE", 1.0),
        )
        config = cls(
            port=_int(env, "PORT", DEFAULT_PORT),
            host=env.get("HOST", "0.0.0.0"),
            model_dir=Path(env.get("SM_MODEL_DIR", str(DEFAULT_MODEL_DIR))),
            bench_mode=env.get("WARMSTART_BENCH_MODE", "").strip().lower() in {"1", "true", "yes"},
            max_concurrency=_int(env, "MAX_CONCURRENCY", 1),
            costs=costs,
            model_source=env.get("WARMSTART_MODEL_SOURCE", "").strip() or None,
        )
        if config.model_source is not None:
            try:
                parse_source(config.model_source)
            except DownloadError as e:
                raise ConfigError(f"WARMSTART_MODEL_SOURCE: {e}") from None
        if not 0 < config.port < 65536:
            raise ConfigError(f"PORT must be 1..65535, not {config.port}")
        if config.max_concurrency < 1:
            raise ConfigError(f"MAX_CONCURRENCY must be >= 1, not {config.max_concurrency}")
        if min(costs.prefill_s_per_token, costs.decode_s_per_token, costs.time_scale) < 0:
            raise ConfigError("bench costs must not be negative")
        return config


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
