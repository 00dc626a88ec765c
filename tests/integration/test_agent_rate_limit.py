"""An upstream that rate-limits (429 + Retry-After) reaches containerd through a real agent as
a 503 with the upstream's Retry-After: the error model carries the hint from the registry
client to the agent's one error answer.

The fault proxy in front of the registry answers every manifest and blob request with 429 and
``Retry-After: 120`` (longer than the agent waits, so it gives up at once), and lets everything
through once the fault is cleared.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable

from tests.support.fault_proxy import FaultProxy
from tests.support.images import ImageBuilder
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.registry import RegistryProcess

CONTAINERD = {
    "User-Agent": "containerd/v1.7.0",
    "Accept": "application/vnd.oci.image.manifest.v1+json",
}


def get(agent: AgentProcess, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=30)
    try:
        conn.request("GET", path, headers=CONTAINERD)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_upstream_429_reaches_containerd_with_retry_after(
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    fault_proxy: Callable[..., FaultProxy],
    agents: Callable[..., AgentProcess],
) -> None:
    image = image_builder.build(registry, "app/web", "v1")
    proxy = fault_proxy(registry)
    limited = {"Retry-After": "120"}
    proxy.fail_status(429, times=None, path_contains="/manifests/", headers=limited)
    proxy.fail_status(429, times=None, path_contains="/blobs/", headers=limited)
    agent = agents(upstreams={proxy.host: proxy.url})

    for path in ("/v2/app/web/manifests/v1", f"/v2/app/web/blobs/{image.config_digest}"):
        status, headers, body = get(agent, path)
        assert status in (429, 503), (path, status, body)
        assert headers.get("retry-after") == "120", (path, headers)
        error = json.loads(body)["errors"][0]
        assert error["code"] in ("TOOMANYREQUESTS", "UNAVAILABLE"), error
    assert proxy.requests_matching("/manifests/")  # the agent did ask the upstream

    proxy.clear()
    status, headers, _ = get(agent, "/v2/app/web/manifests/v1")
    assert status == 200 and "retry-after" not in headers
    status, _, body = get(agent, f"/v2/app/web/blobs/{image.config_digest}")
    assert status == 200 and len(body) == image.config_size
