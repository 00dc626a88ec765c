"""``warmstart prewarm``: concurrent POST /prewarm to fake agents, per-agent results, exit code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from typer.testing import CliRunner

from warmstart.agent.api import PrewarmRequest, PrewarmResponse, RequestInvalid
from warmstart.cli.main import app
from warmstart.cli.prewarm_cmd import Outcome, exit_code, summary
from warmstart.fetch.interfaces import PEER_TOKEN_HEADER
from warmstart_harness.testbed.aiohttp_thread import ThreadedAiohttpServer
from warmstart_harness.testbed.net import free_port

DIGEST = "sha256:" + "1" * 64
RESULT = {
    "reference": "127.0.0.1:5000/app:v1",
    "digest": DIGEST,
    "manifest_digest": DIGEST,
    "platform": None,
    "blobs": 3,
    "bytes": 3 * 2**20,
    "sources": {"upstream": 2 * 2**20, "peer": 2**20},
    "warm_seconds": 0.75,
    "seconds": 1.25,
    "hot": True,
    "containerd": {
        "namespace": "k8s.io",
        "reference": "127.0.0.1:5000/app:v1",
        "digest": DIGEST,
        "unpacked": True,
        "tag_moved": False,
        "link": {"linked": 3, "linked_bytes": 3 * 2**20, "present": 0, "missing": 0,
                 "seconds": 0.01},
        "pull_seconds": 0.4,
        "pull_attempts": 1,
        "unpack_seconds": 0.3,
        "seconds": 0.5,
    },
    "model_format": None,
    "model": None,
}  # fmt: skip


class FakeAgent(ThreadedAiohttpServer):
    def __init__(self, status: int = 200, body: Any = RESULT) -> None:
        super().__init__(name="fake-agent")
        self.status = status
        self.body = body
        self.requests: list[tuple[dict[str, Any], str | None]] = []

    def build_app(self) -> web.Application:
        async def prewarm(request: web.Request) -> web.Response:
            self.requests.append((await request.json(), request.headers.get(PEER_TOKEN_HEADER)))
            if isinstance(self.body, bytes):
                return web.Response(status=self.status, body=self.body)
            return web.json_response(self.body, status=self.status)

        application = web.Application()
        application.router.add_post("/prewarm", prewarm)
        return application


@pytest.fixture
def agents() -> Iterator[list[FakeAgent]]:
    started: list[FakeAgent] = []
    yield started
    for a in started:
        a.stop()


def start(agents: list[FakeAgent], *args: Any, **kwargs: Any) -> FakeAgent:
    agent = FakeAgent(*args, **kwargs)
    agent.start()
    agents.append(agent)
    return agent


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["prewarm", *args])


def test_every_agent_gets_the_request_and_all_succeed(agents: list[FakeAgent]) -> None:
    a, b = start(agents), start(agents)
    result = run(
        "127.0.0.1:5000/app:v1",
        "--agent",
        a.url,
        "--agent",
        b.url + "/",
        "--hot",
        "--platform",
        "linux/arm64",
        "--token",
        "sekrit",
        "-q",
    )
    assert result.exit_code == 0, result.output
    expected = {"reference": "127.0.0.1:5000/app:v1", "platform": "linux/arm64/v8", "hot": True}
    assert a.requests == [(expected, "sekrit")] and b.requests == [(expected, "sekrit")]
    assert "3 blobs" in result.output and "hot in containerd (k8s.io" in result.output


def test_one_failed_agent_fails_the_run_with_one_line(agents: list[FakeAgent]) -> None:
    ok = start(agents)
    bad = start(
        agents,
        status=502,
        body={"errors": [{"code": "UNKNOWN", "message": "importing x failed:\n ctr: boom"}]},
    )
    down = f"http://127.0.0.1:{free_port()}"
    result = run("127.0.0.1:5000/app:v1", "--agent", ok.url, "--agent", bad.url, "--agent", down)
    assert result.exit_code == 1
    assert f"{bad.url}: HTTP 502: importing x failed: ctr: boom" in result.output
    assert f"{down}: cannot reach the agent" in result.output
    assert len(ok.requests) == 1


def test_json_output(agents: list[FakeAgent]) -> None:
    a = start(agents)
    bad = start(agents, status=400, body=b"plain text problem")
    result = run("busybox", "--agent", a.url, "--agent", bad.url, "--json", "-q")
    assert result.exit_code == 1
    start_at = result.output.index("[")
    end_at = result.output.rindex("]") + 1
    doc = json.loads(result.output[start_at:end_at])
    assert [d["ok"] for d in doc] == [True, False]
    assert doc[0]["result"] == RESULT
    assert doc[1]["error"] == "HTTP 400: plain text problem"
    assert a.requests[0][0]["reference"] == "docker.io/library/busybox:latest"


@pytest.mark.parametrize(
    "args",
    [
        ["Bad..Ref", "--agent", "http://127.0.0.1:1"],
        ["busybox", "--agent", "127.0.0.1:5050"],
        ["busybox", "--agent", "http://127.0.0.1:1", "--platform", "linux"],
    ],
)
def test_bad_input_is_refused_before_any_request(args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert result.output.count("error:") == 1


def test_non_json_success_is_a_failure(agents: list[FakeAgent]) -> None:
    a = start(agents, body=b"<html>")
    result = run("busybox", "--agent", a.url, "-q")
    assert result.exit_code == 1
    assert "no JSON" in result.output


def test_pure_helpers() -> None:
    assert PrewarmRequest.of("busybox", None, False).to_json() == {
        "reference": "docker.io/library/busybox:latest",
        "platform": None,
        "hot": False,
    }
    with pytest.raises(RequestInvalid):
        PrewarmRequest.of("busybox", "nope", False)
    # error_message (one line from an agent's error answer) is tested in test_api.py
    text = summary(PrewarmResponse.model_validate(RESULT))
    assert text.startswith("3 blobs, 3.0 MiB (peer 1.0 MiB, upstream 2.0 MiB) in 1.2 s")
    empty = {**RESULT, "blobs": 0, "bytes": 0, "sources": {}, "seconds": 0, "containerd": None}
    assert summary(PrewarmResponse.model_validate(empty)) == "0 blobs, 0 B in 0.0 s"
    moved = {**RESULT, "containerd": {**RESULT["containerd"], "tag_moved": True}}  # type: ignore[dict-item]
    assert summary(PrewarmResponse.model_validate(moved)).endswith(
        "[tag moved during the pre-warm]"
    )
    assert exit_code([]) == 1
    assert exit_code([Outcome("a", True, 1.0)]) == 0
    assert exit_code([Outcome("a", True, 1.0), Outcome("b", False, 1.0, error="x")]) == 1


def test_an_answer_that_does_not_fit_the_schema_is_a_failure(agents: list[FakeAgent]) -> None:
    a = start(agents, body={"reference": "127.0.0.1:5000/app:v1", "blobs": 3})
    result = run("busybox", "--agent", a.url, "-q")
    assert result.exit_code == 1
    assert "does not fit: digest: is required" in result.output
