"""What the scale-out benchmark measures: plain dataclasses the orchestrator fills in.

Every time in these records is in seconds. Times of the spike scenario (``*_s`` of a request,
``t_s`` of a timeline point) are relative to the start of the replay, on the monotonic clock;
``scheduled_s`` is already time-compressed (the trace's offset divided by the factor).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BASELINE = "baseline"
REGISTRY_PROXY = "registry-proxy"
WARMSTART = "warmstart"
# The spike's floor and its most expensive option: max_replicas replicas ready before the replay
# starts, never scaled (nodes set up as in baseline; how they pulled is not measured). It runs
# only the spike scenario; the spike's replica-seconds are compared with it.
PROVISIONED = "provisioned"
MODES: tuple[str, ...] = (BASELINE, REGISTRY_PROXY, WARMSTART, PROVISIONED)
# The spike once more in warmstart mode with demand-driven pre-warm only (prewarm_spare = 0),
# so the cost of turning the default off stays visible. Not a column of the main table.
WARMSTART_SPARE0 = "warmstart-spare0"
TIERS: tuple[str, ...] = ("hot", "warm", "peer", "cold")
# With a model (``--model-size``), a start of a node without an agent whose containerd still
# holds the image, while its replica downloads the model again: SageMaker with container
# caching (the image cached on the instance, the weights fetched at start).
IMAGE_CACHED = "image-cached"


@dataclass(frozen=True)
class RequestRecord:
    """One replayed request: when it was due, sent and answered, and how it ended.

    ``sent_s`` is the first attempt's send time (``None`` if it was never sent), ``done_s`` the
    time the last attempt ended (answer read, or failed); ``status`` is the last attempt's HTTP
    status (``None`` when no answer came: timeout, connection error). ``error`` is ``None`` only
    for a 200 answer. ``retries`` counts re-sends after a 503 with Retry-After.
    """

    index: int
    scheduled_s: float
    sent_s: float | None
    done_s: float | None
    status: int | None
    error: str | None
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None and self.done_s is not None

    @property
    def latency_s(self) -> float | None:
        """First send to final answer (what a client waited, retries included); None if failed."""
        if not self.ok or self.sent_s is None or self.done_s is None:
            return None
        return self.done_s - self.sent_s


@dataclass(frozen=True)
class EndpointLoad:
    """What a status callback reports about the endpoint at one instant."""

    ready: int
    starting: int = 0
    queue_length: int = 0
    in_flight: int = 0
    stopping: int = 0  # replicas being stopped (drained, then removed): still on their node


@dataclass(frozen=True)
class _Sampled:
    t_s: float  # seconds since the replay started


@dataclass(frozen=True)
class TimelinePoint(EndpointLoad, _Sampled):
    """A :class:`EndpointLoad` sampled at ``t_s`` (seconds since the replay started).

    Its fields are ``t_s`` and then EndpointLoad's (dataclasses collect the bases' fields from
    the last base to the first), so ``TimelinePoint(t_s, ready, ...)`` and the report's columns
    keep that order.
    """


@dataclass(frozen=True)
class DemandPoint:
    """Demand in request slots averaged over ``[t_s, t_s + bin_s)`` (see ``spike_metrics``)."""

    t_s: float
    slots: float


@dataclass(frozen=True)
class SpikeMetrics:
    """The spike scenario's numbers for one mode (see ``spike_metrics.spike_metrics``)."""

    requests: int
    ok: int
    errors: int  # requests that saw at least one non-200 answer or failure (retried or not)
    lost: int  # requests whose final outcome is not a 200 answer
    retries: int
    p50_s: float | None
    p90_s: float | None
    p99_s: float | None
    mean_s: float | None
    throughput_rps: float
    duration_s: float
    max_send_lag_s: float  # worst lateness of a first send vs its schedule (loadgen health)
    slots_per_replica: int
    burst_start_s: float
    hold_s: float
    time_to_capacity_s: float | None  # None: capacity never met demand (for hold_s) in time
    observed_s: float  # how long after the burst start capacity was watched
    # What the replicas cost: the integral of paid replicas (starting, ready or stopping) over
    # [0, cost_window_s) (see ``spike_metrics.replica_seconds``); None in reports from before.
    replica_seconds: float | None = None
    cost_window_s: float | None = None


@dataclass
class SpikeResult:
    """One mode's replay: the raw records and timeline plus the metrics computed from them."""

    mode: str
    records: list[RequestRecord]
    timeline: list[TimelinePoint]
    metrics: SpikeMetrics
    demand: list[DemandPoint] = field(default_factory=list)
    # Body bytes the upstream sent for blob GETs during the run (the endpoint's first replicas
    # included), and of them the model's; bytes that crossed each node's links (node ->
    # upstream_rx, lan_rx, lan_tx). None: not recorded.
    upstream_bytes: int | None = None
    upstream_model_bytes: int | None = None
    links: dict[str, dict[str, int]] | None = None


@dataclass(frozen=True)
class StartupResult:
    """One replica start: where its time went, by phase, from a given cache tier."""

    mode: str
    tier: str  # "hot", "warm", "peer", "cold"; "image-cached" (with a model, no agent)
    pull_s: float
    unpack_s: float
    start_s: float
    load_s: float
    total_s: float  # may exceed the sum of the phases (scheduling, readiness polling)
    upstream_bytes: int = 0
    # bytes on each node's links during this start (node -> upstream_rx, lan_rx, lan_tx)
    links: dict[str, dict[str, int]] | None = None
    # the replica's model: fetched by its node's agent alongside pull_s + unpack_s (it
    # overlaps them), or downloaded by the replica itself once its container ran (then after
    # start_s and not part of load_s); None: the replica had no model artifact
    model_s: float | None = None
    # the part of model_s the pull and unpack did not hide (the controller's "model" phase;
    # all of it for a replica's own download): what the model added to total_s
    model_phase_s: float | None = None
    # the agent's materialisation (hard links) within model_s; None without an agent
    model_materialise_s: float | None = None
    upstream_model_bytes: int = 0  # of upstream_bytes, the model's
    # the agent's answer to the start's model request (POST /prewarm: bytes by source, fetch
    # and materialisation seconds, files linked); None without an agent
    model_agent: dict[str, Any] | None = None
    # the node the replica started on, and the bytes of blobs each node's agent (or mirror)
    # held before it started: a "peer" start must find nothing on its own node
    node: str = ""
    held: dict[str, int] | None = None


@dataclass(frozen=True)
class PrewarmResult:
    """One hot pre-warm of a node (``POST /prewarm {"hot": true}``) from a given tier:
    ``fetch_s`` brings every blob into the agent's store, ``link_s`` places them in containerd's
    content store, ``import_s`` is ``ctr images pull`` through the agent (with every blob linked:
    the commit and the unpack), ``unpack_s`` the unpack as ctr reports it.

    ``kind`` "model": a model's (``{"model": true, "hot": true}``): ``link_s`` is its
    materialisation (raw layers hard-linked into its read-only directory), ``linked`` the files
    and ``linked_bytes`` their bytes; no import or unpack."""

    mode: str
    tier: str  # "cold", "peer", "warm"
    fetch_s: float
    link_s: float
    import_s: float
    unpack_s: float
    total_s: float
    upstream_bytes: int = 0
    linked: int = 0  # blobs linked (not transferred into containerd)
    kind: str = "image"  # or "model"
    linked_bytes: int = 0  # a model: bytes its directory got as links (no copy)


# The fan-out scenarios: every node starts a replica of the image at once (containerd pulls
# and unpacks it: ``fanout``), or every node only fetches the image's blobs at once, no
# containerd (``fanout-fetch``: the agents pre-warm it warm; baseline nodes copy it from the
# upstream with skopeo): the network side without N unpacks sharing the machine's cores.
FANOUT = "fanout"
FANOUT_FETCH = "fanout-fetch"


@dataclass(frozen=True)
class NodeTransfer:
    """One node in a fan-out: when it held every byte, and what crossed its links meanwhile
    (kernel counters of its shaped links, so TCP/IP and HTTP overhead included)."""

    node: str
    done_s: float  # since the fan-out began: every image byte verified on this node
    upstream_rx: int  # received through its uplink from the upstream
    lan_rx: int  # received over the LAN (from its peers)
    lan_tx: int  # sent over the LAN (to its peers)


@dataclass(frozen=True)
class FanoutResult:
    """``nodes`` nodes start (or fetch) the same image at once: wall time, bytes from the
    upstream, and per node when it was done and its link bytes."""

    mode: str
    nodes: int
    wall_s: float
    upstream_bytes: int
    image_bytes: int
    fetch_s: float | None = None  # until every node held all the image's bytes (pull phase)
    model_bytes: int = 0  # a separate model every replica got too (upstream_bytes counts it)
    scenario: str = FANOUT  # or FANOUT_FETCH
    per_node: tuple[NodeTransfer, ...] = ()
    # CPU seconds the whole machine was busy during the fan-out (every process, the
    # benchmark's own and anything else running), and of it the agents' (warmstart only)
    machine_busy_s: float | None = None
    agents_cpu_s: float | None = None

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> FanoutResult:
        """The inverse of ``dataclasses.asdict`` (older files have no ``per_node``)."""
        nodes = tuple(NodeTransfer(**n) for n in doc.get("per_node", ()))
        return cls(**{**doc, "per_node": nodes})


@dataclass
class ScaleoutResults:
    """Everything one ``warmstart bench scaleout`` run produced, ready for the report."""

    spike: list[SpikeResult] = field(default_factory=list)
    startup: list[StartupResult] = field(default_factory=list)
    fanout: list[FanoutResult] = field(default_factory=list)
    prewarm: list[PrewarmResult] = field(default_factory=list)
    modes: tuple[str, ...] = MODES
    params: dict[str, Any] = field(default_factory=dict)  # trace, factor, K, time scale, ...
    environment: dict[str, Any] = field(default_factory=dict)
