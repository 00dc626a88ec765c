"""An inference endpoint's spec: one TOML document, every field but ``name`` and ``image``
with a default.

``model`` (optional) names a model artifact (a CNCF ModelPack, an ORAS artifact with titled
files, or a modelcar image) that every replica gets read-only at ``/opt/ml/model`` (the
SageMaker contract): the node's agent materialises it once and keeps it pinned while a replica
uses it; when the image also bakes files into ``/opt/ml/model``, the mount hides them.

The endpoint's image is kept hot (pre-warmed) by default on every node the endpoint may scale
to: the nodes that :func:`~warmstart.serving.placement.place` would give the next
``max_replicas`` minus current replicas, so a scale-out starts hot without any setting.
``prewarm_spare`` only limits that: N keeps it hot on at most N more nodes, 0 leaves only the
pre-warm of the next nodes when demand nears capacity (``prewarm_headroom``).

```toml
name = "qwen3-8b"
image = "registry.example/llm/vllm:0.9"
model = "registry.example/llm/qwen3-8b:v1"   # mounted read-only at /opt/ml/model (omit: none)
min_replicas = 0            # floor (with scale_to_zero = false the floor is at least 1)
max_replicas = 8
target_concurrency = 4.0    # in-flight + queued requests one replica should carry
stable_window = 60          # seconds averaged for the stable desired count
panic_window = 6            # seconds averaged for the panic desired count
panic_threshold = 2.0       # panic at 200 % of ready capacity
scale_down_delay = 30       # seconds demand must stay lower before replicas go
max_scale_up_step = 4       # replicas added per decision (omit: no limit)
max_scale_down_step = 1     # replicas removed per decision (omit: no limit)
scale_to_zero = false
prewarm_headroom = 0.2      # pre-warm the next node when demand is within 20 % of capacity
prewarm_spare = 2           # keep it hot on at most 2 more nodes, whatever the load (omit:
                            # every node it may scale to; 0: only near capacity)
port = 8080
replica_concurrency = 4     # the router sends a replica at most this many at once (omit: no cap)
replica_start_timeout = 900 # seconds a replica may take to pass /ping

[env]
MODEL_ID = "Qwen/Qwen3-8B"
```
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from warmstart.files import read_capped
from warmstart.oci import OCIError, Reference, parse_reference
from warmstart.validation import describe_invalid

MAX_SPEC_BYTES = 1 << 20
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SpecError(ValueError):
    """An endpoint spec that cannot be used; the message is one line naming the field."""


class EndpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, str_strip_whitespace=True)

    name: str
    image: str  # normalised reference text; see :attr:`reference`
    model: str | None = None  # normalised reference text of the model artifact, or None
    min_replicas: int = Field(default=0, ge=0)
    max_replicas: int = Field(default=4, ge=1)
    target_concurrency: float = Field(default=1.0, gt=0)
    stable_window: float = Field(default=60.0, gt=0)
    panic_window: float = Field(default=6.0, gt=0)
    panic_threshold: float = Field(default=2.0, ge=1.0)
    scale_down_delay: float = Field(default=30.0, ge=0)
    max_scale_up_step: int | None = Field(default=None, ge=1)
    max_scale_down_step: int | None = Field(default=None, ge=1)
    scale_to_zero: bool = False
    prewarm_headroom: float = Field(default=0.2, ge=0, le=1)
    # None: keep the image hot on every node the endpoint may scale to (max_replicas minus
    # the replicas it runs); N: on at most N of them; 0: only when demand nears capacity.
    prewarm_spare: int | None = Field(default=None, ge=0, le=1000)
    port: int = Field(default=8080, ge=1, le=65535)
    replica_concurrency: int | None = Field(default=None, ge=1)
    env: dict[str, str] = Field(default_factory=dict)
    replica_start_timeout: float = Field(default=900.0, gt=0)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(
                f"{v[:100]!r} is not a DNS label (1-63 of a-z, 0-9 and '-', no '-' at the ends)"
            )
        return v

    @field_validator("image", "model")
    @classmethod
    def _reference(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return str(parse_reference(v))
        except OCIError as e:
            raise ValueError(str(e)) from None

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not _ENV_NAME_RE.match(key):
                raise ValueError(f"{key[:100]!r} is not an environment variable name")
        return v

    @model_validator(mode="after")
    def _bounds(self) -> EndpointSpec:
        if self.scale_to_zero and self.min_replicas > 0:
            raise ValueError(
                f"scale_to_zero needs min_replicas = 0 (min_replicas is {self.min_replicas})"
            )
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})"
            )
        if self.panic_window > self.stable_window:
            raise ValueError(
                f"panic_window ({self.panic_window:g}s) must be <= stable_window "
                f"({self.stable_window:g}s)"
            )
        return self

    # -- derived ---------------------------------------------------------------------------

    @property
    def reference(self) -> Reference:
        return parse_reference(self.image)

    @property
    def model_reference(self) -> Reference | None:
        return parse_reference(self.model) if self.model is not None else None

    @property
    def floor(self) -> int:
        """The fewest replicas the endpoint may run: ``min_replicas``, at least 1 unless
        ``scale_to_zero``."""
        return self.min_replicas if self.scale_to_zero else max(1, self.min_replicas)


_SPEC_MESSAGES = {"extra_forbidden": "unknown setting", "missing": "required"}


def build_spec(data: Mapping[str, Any], source: str = "endpoint") -> EndpointSpec:
    """Validate a mapping (a parsed TOML document); raise :class:`SpecError`."""
    try:
        return EndpointSpec.model_validate(dict(data))
    except ValidationError as e:
        raise SpecError(describe_invalid(e, source, _SPEC_MESSAGES)) from None


def parse_spec(text: str, source: str = "endpoint") -> EndpointSpec:
    """Parse and validate TOML text; raise :class:`SpecError`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(" ".join(f"{source}: not valid TOML: {e}".split())) from None
    return build_spec(data, source)


def load_spec(path: Path) -> EndpointSpec:
    """Read, parse and validate one spec file; raise :class:`SpecError`."""
    raw = read_capped(path, MAX_SPEC_BYTES, f"endpoint spec {path}", SpecError)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"endpoint spec {path} is not UTF-8") from None
    return parse_spec(text, str(path))


__all__ = ["EndpointSpec", "SpecError", "build_spec", "load_spec", "parse_spec"]
