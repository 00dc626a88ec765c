"""What a ``bench scaleout`` run is asked for (:class:`ScaleoutConfig`) and the trace it
replays by default; below the scenarios and the spike's plan, which read it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warmstart.image.layers import DEFAULT_IMAGE_CACHE
from warmstart_harness.bench.scaleout_types import MODES

SCENARIOS = ("startup", "fanout", "fanout-fetch", "spike")
BUNDLED_TRACE = Path(__file__).resolve().parent / "traces" / "azure-llm-2023-conv.csv"


@dataclass
class ScaleoutConfig:
    nodes: int = 4
    rate: str = "800mbit"  # each node's download from the upstream (100 MB/s)
    upstream_rate: str | None = None
    lan_rate: str | None = None
    padding_bytes: int = 2 << 30
    # A separate model artifact of this many bytes of safetensors shards (0: none; the padding
    # layer in the image stands for the weights then).
    model_bytes: int = 0
    modes: tuple[str, ...] = MODES
    scenarios: tuple[str, ...] = SCENARIOS
    trace: Path | None = None
    factor: float = 4.0  # time compression of the burst
    burst_s: float = 60.0  # replayed seconds of the burst
    lead_s: float = 30.0  # replayed seconds of lead-in before it
    slots: int = 4  # K: requests one replica serves at once
    burst_load: float = 0.85  # burst demand as a share of all nodes' capacity
    lead_load: float = 0.7  # lead-in demand as a share of one replica's capacity
    hold_s: float = 5.0
    # The endpoint spec's prewarm_spare; None: the product's default (every node the endpoint
    # may scale to). The spike runs once more with 0 when ``spike_spare0`` is set.
    prewarm_spare: int | None = None
    spike_spare0: bool = True

    def spare_nodes(self, prewarm_spare: int | None = None) -> int:
        """Idle nodes the endpoint keeps hot before the surge (its first node runs it)."""
        spare = self.prewarm_spare if prewarm_spare is None else prewarm_spare
        return self.nodes - 1 if spare is None else min(spare, self.nodes - 1)

    image_cache: Path = DEFAULT_IMAGE_CACHE
    quick: bool = False
    # How the startup and fanout replicas pull: "ctr" (ctr images pull) or "cri" (containerd's
    # CRI plugin, PullImage: the kubelet's way; warmstart_harness.bench.scaleout_cri)
    puller: str = "ctr"
    # agent.toml settings other than the product's defaults (a comparison run, e.g. pieces =
    # false: the one-home policy before pieces); empty: the defaults, what a user gets
    agent_settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick_config(cls, **overrides: Any) -> ScaleoutConfig:
        # About 3 minutes on 2 cores: two nodes, a small padding layer, a short spike, and no
        # fanout (with two nodes it shows little that startup and spike do not).
        values: dict[str, Any] = {
            "nodes": 2,
            "padding_bytes": 64 << 20,
            "burst_s": 10.0,
            "lead_s": 5.0,
            "scenarios": ("startup", "spike"),
            "spike_spare0": False,
            "quick": True,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def default_trace() -> Path:
    """The Azure LLM conversation trace shipped with warmstart (CC-BY 4.0; see its README)."""
    path = BUNDLED_TRACE
    if not path.exists():
        raise FileNotFoundError(
            f"the bundled trace {path} is missing: give --trace PATH "
            "(a CSV with TIMESTAMP,ContextTokens,GeneratedTokens)"
        )
    return path


def piece_settings(agent_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The agents' effective piece settings: the product's defaults under ``agent_settings``
    (recorded with a run, for the report and for ``bench fleet --calibrate``)."""
    from warmstart.agent.config import AgentConfig

    config = AgentConfig.model_validate(dict(agent_settings))
    names = ("pieces", "piece_threshold", "piece_min", "piece_max", "piece_downloads")
    return {name: getattr(config, name) for name in (*names, "piece_uploads")}
