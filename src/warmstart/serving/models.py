"""An endpoint's model on its nodes: what the controller asks of a node's agent, and the count
of replicas that use the model on each node (pure).

A replica of an endpoint with a ``model`` gets the directory its node's agent materialised
(``POST /prewarm`` with ``model``, ``hot`` and ``pin``: :func:`replica_model_request`)
bind-mounted read-only at :data:`MODEL_DIR`. The agent keeps one pin per reference, so the
controller counts the replicas that use the model on each node (:class:`ModelUsers`) and
releases the node's pin (``POST /unpin``) only when the last of them is gone: the agent never
evicts a model a replica is reading, and may once no replica uses it.

A pre-warm ahead of a scale-out materialises the model too (:func:`prewarm_model_request`),
without a pin, as the image's pre-warm takes none: a pre-warmed model may still be evicted if
the node's store needs the room before a replica starts there.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from warmstart.agent.api import PrewarmRequest, PrewarmResponse, UnpinResponse
from warmstart.runtime.interfaces import Mount

# The SageMaker hosting contract: the model's files are under /opt/ml/model.
MODEL_DIR = "/opt/ml/model"
# An unpin is one small request: a replica's stop (and the endpoint's shutdown) waits no
# longer for it; a pin left behind goes when the agent restarts.
UNPIN_TIMEOUT = 10.0


class ModelAgent(Protocol):
    """What the controller asks of a node's agent for a model (``AgentClient`` is one)."""

    async def prewarm(self, request: PrewarmRequest) -> PrewarmResponse:
        """``POST /prewarm``: fetch (and with ``hot`` materialise) the model."""
        ...

    async def unpin(
        self, reference: str, *, holder: str | None = None, time_limit: float | None = None
    ) -> UnpinResponse:
        """``POST /unpin``: release the pin ``holder``'s ``pin`` pre-warm of ``reference``
        took."""
        ...


def pin_holder(endpoint: str) -> str:
    """The endpoint's name for its pins on agents: separate from the operator's or another
    endpoint's pin on the same model."""
    return f"endpoint/{endpoint}"


def replica_model_request(model: str, endpoint: str) -> PrewarmRequest:
    """What a replica's start asks of its node's agent: the model materialised and pinned
    (by this endpoint)."""
    return PrewarmRequest.of(model, hot=True, pin=True, model=True, holder=pin_holder(endpoint))


def prewarm_model_request(model: str) -> PrewarmRequest:
    """What a pre-warm ahead asks: the model materialised, not pinned (as for the image)."""
    return PrewarmRequest.of(model, hot=True, model=True)


def model_mount(path: str) -> Mount:
    """The materialised directory ``path``, read-only at :data:`MODEL_DIR`."""
    return Mount(source=path, target=MODEL_DIR, read_only=True)


def materialised_path(answer: PrewarmResponse, model: str) -> str:
    """The directory a hot model pre-warm materialised; ``ValueError`` (one line) if the
    agent answered without one."""
    if answer.model is None:
        raise ValueError(f"the agent did not materialise {model} (it answered no model directory)")
    return answer.model.path


class ModelUsers:
    """How many replicas use the endpoint's model on each node: a replica is counted from the
    moment its start asks for the model until it is gone (started, failed or stopped)."""

    def __init__(self) -> None:
        self._count: Counter[str] = Counter()

    def acquire(self, node: str) -> None:
        self._count[node] += 1

    def release(self, node: str) -> bool:
        """One user fewer; True when it was the node's last (its pin may go)."""
        if self._count[node] <= 0:
            raise ValueError(f"no replica uses the model on {node}")
        self._count[node] -= 1
        if self._count[node] == 0:
            del self._count[node]
            return True
        return False

    def count(self, node: str) -> int:
        return self._count[node]

    def nodes(self) -> dict[str, int]:
        return dict(self._count)


__all__ = [
    "MODEL_DIR",
    "UNPIN_TIMEOUT",
    "ModelAgent",
    "ModelUsers",
    "materialised_path",
    "model_mount",
    "pin_holder",
    "prewarm_model_request",
    "replica_model_request",
]
