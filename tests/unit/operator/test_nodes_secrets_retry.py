"""Agent discovery, --agent-url, pull secrets, per-node backoff (pure)."""

from __future__ import annotations

import base64
import json

import pytest

from warmstart.operator.nodes import agent_urls, parse_agent_urls
from warmstart.operator.pull_secrets import authorization_for, secret_credentials
from warmstart.operator.retry import PrewarmFailures


def pod(name: str, node: str, ip: str | None, phase: str = "Running", **meta: str) -> dict:
    return {"metadata": {"name": name, **meta}, "spec": {"nodeName": node},
            "status": {"podIP": ip, "phase": phase}}  # fmt: skip


def test_agent_urls_from_pods_and_overrides() -> None:
    pods = [
        pod("agent-1", "a", "10.0.0.1"),
        pod("agent-2", "b", "fd00::2"),
        pod("agent-3", "c", None),
        pod("agent-4", "d", "10.0.0.4", phase="Pending"),
        pod("agent-5", "e", "10.0.0.5", deletionTimestamp="2024-01-01T00:00:00Z"),
    ]
    urls = agent_urls(pods, 5050, {"c": "http://127.0.0.3:6000"})
    assert urls == {
        "a": "http://10.0.0.1:5050",
        "b": "http://[fd00::2]:5050",
        "c": "http://127.0.0.3:6000",
    }


def test_parse_agent_urls() -> None:
    assert parse_agent_urls(["n1=http://127.0.0.1:5050/", " n2 = https://x:1"]) == {
        "n1": "http://127.0.0.1:5050",
        "n2": "https://x:1",
    }
    for bad in ("n1", "=http://x", "n1=ftp://x"):
        with pytest.raises(ValueError, match="--agent-url"):
            parse_agent_urls([bad])


def _secret(config: object, kind: str = "kubernetes.io/dockerconfigjson") -> dict:
    data = base64.b64encode(json.dumps(config).encode()).decode()
    return {"metadata": {"name": "s"}, "type": kind, "data": {".dockerconfigjson": data}}


def test_pull_secret_gives_basic_authorization_per_registry() -> None:
    auth = base64.b64encode(b"robot:pw").decode()
    store = secret_credentials(_secret({"auths": {"reg.example:5000": {"auth": auth},
                                                   "tok.example": {"identitytoken": "t"}}}))  # fmt: skip
    assert authorization_for("reg.example:5000/app:v1", [store]) == "Basic " + auth
    assert authorization_for("tok.example/app:v1", [store]) is None  # token only: not sent
    assert authorization_for("other.example/app:v1", [store]) is None
    with pytest.raises(ValueError, match="not of type"):
        secret_credentials(_secret({}, kind="Opaque"))
    with pytest.raises(ValueError, match="secret s"):
        secret_credentials({"metadata": {"name": "s"}, "type": "kubernetes.io/dockerconfigjson",
                            "data": {".dockerconfigjson": "!!!"}})  # fmt: skip


def test_backoff_per_node_and_image() -> None:
    failures = PrewarmFailures()
    key = ("a", "img")
    assert failures.due(key, 0.0)
    failures.failed(key, 100.0, "HTTP 502: boom")
    assert not failures.due(key, 105.0) and failures.due(key, 110.0)
    assert failures.due(("b", "img"), 100.0)  # another node is not held back
    assert failures.error("a", ["img"]) == "img: HTTP 502: boom"
    failures.failed(key, 110.0, "again")
    assert failures.retry_in(key, 110.0) == 20.0
    for i in range(10):
        failures.failed(key, 200.0 + i, "again")
    assert failures.retry_in(key, 209.0) == 300.0  # capped at 5 min
    failures.succeeded(key)
    assert failures.due(key, 209.0) and failures.error("a", ["img"]) is None
