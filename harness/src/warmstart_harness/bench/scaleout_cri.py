"""``bench scaleout --puller cri``: replicas pulled the kubelet's way, by containerd's CRI plugin.

Each node's containerd runs its CRI plugin (in the node's network namespace, so its fetches
cross the node's shaped uplink) with ``config_path`` = the node's certs dir: the agent writes
its ``hosts.toml`` there at start, as on a Kubernetes node; without an agent (baseline,
registry-proxy) the runtime's own ``hosts.toml`` is written there before the pull. The pull is
``PullImage``: containerd fetches and unpacks each layer as soon as it has arrived, so fetch and
unpack are not split: the whole call is the pull phase, and unpack is reported as 0.
"""

from __future__ import annotations

import time
from pathlib import Path

from warmstart_harness.testbed.cri import CriClient, CriError

PULLERS = ("ctr", "cri")
READY_TIMEOUT = 30.0


def ready_cri_client(socket: Path, timeout: float = READY_TIMEOUT) -> CriClient:
    """A client of the CRI plugin on ``socket`` once it answers (the plugin initialises after
    containerd's socket is up; until then it refuses calls)."""
    client = CriClient(socket)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.version()
            return client
        except CriError:
            if time.monotonic() > deadline:
                client.close()
                raise
            time.sleep(0.1)
