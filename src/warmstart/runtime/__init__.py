"""Starting and stopping model replicas on a node.

``interfaces`` is the seam (:class:`Runtime`, :class:`ReplicaSpec`, timings); ``memory`` is an
in-memory runtime for tests of the controller; ``containerd`` drives containerd 1.6 + runc
with ``ctr``.
"""

from __future__ import annotations

from warmstart.runtime.interfaces import (
    DEFAULT_PORT,
    DEFAULT_STOP_TIMEOUT,
    ImageNotPresent,
    ImagePullError,
    Mount,
    PullTiming,
    Replica,
    ReplicaError,
    ReplicaExists,
    ReplicaNotFound,
    ReplicaSpec,
    ReplicaState,
    ReplicaStatus,
    ReplicaTimings,
    Runtime,
    RuntimeUnavailable,
)

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_STOP_TIMEOUT",
    "ImageNotPresent",
    "ImagePullError",
    "Mount",
    "PullTiming",
    "Replica",
    "ReplicaError",
    "ReplicaExists",
    "ReplicaNotFound",
    "ReplicaSpec",
    "ReplicaState",
    "ReplicaStatus",
    "ReplicaTimings",
    "Runtime",
    "RuntimeUnavailable",
]
