"""The agent as a real process: what it logs for garbage on its socket, and how it stops."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import ImageBuilder
from warmstart.testbed.agent import AgentProcess
from warmstart.testbed.registry import RegistryProcess

GARBAGE = [
    b"GARBAGE\r\n\r\n",
    b"GET /v2/ HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # TLS hello on the plain port
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n",
    b"GET /v2/ HTTP/9.9\r\n\r\n",
    b"\x00\x01\x02\xff\r\n\r\n",
]


@pytest.fixture
def agent() -> Iterator[AgentProcess]:
    agent = AgentProcess(upstreams={"reg.example": "http://127.0.0.1:9"})
    try:
        yield agent
    finally:
        agent.cleanup()


def send_raw(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        chunks = []
        while True:
            try:
                data = s.recv(4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_garbage_requests_log_one_line_each_and_no_traceback(agent: AgentProcess) -> None:
    before = agent.log.read_text(errors="replace").splitlines()
    rounds = 10
    for _ in range(rounds):
        for payload in GARBAGE:
            answer = send_raw(agent.port, payload)
            assert answer.startswith(b"HTTP/1.0 400 "), answer[:100]
    status, _ = agent.get("/healthz")  # still serving
    assert status == 200
    deadline = time.monotonic() + 5
    while True:
        lines = agent.log.read_text(errors="replace").splitlines()[len(before) :]
        refused = [line for line in lines if "bad request refused with 400" in line]
        if len(refused) >= rounds * len(GARBAGE) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(refused) == rounds * len(GARBAGE), "\n".join(lines)
    assert all(" WARNING warmstart.agent.access: 127.0.0.1 " in line for line in refused)
    # nothing else: no traceback, no ERROR, one line per bad request (and one for /healthz)
    others = [line for line in lines if line not in refused]
    assert len(others) == 1 and '"GET /healthz HTTP/1.1" 200' in others[0], "\n".join(others)
    assert any("Invalid header token" in line for line in refused)
    assert any("HTTPS traffic" in line for line in refused)


@pytest.mark.timeout(120)
def test_sigterm_with_a_client_that_stalls_forever_exits_0_within_the_grace(
    registry: RegistryProcess, image_builder: ImageBuilder, tmp_path: Path
) -> None:
    data = os.urandom(64 << 20)  # more than the socket buffers hold
    digest = image_builder.push_blob(registry, "team/app", data)
    grace = 3.0
    agent = AgentProcess(
        tmp_path / "agent",
        upstreams={registry.host: registry.url},
        settings={"shutdown_grace": grace},
    )
    try:
        stalled = socket.create_connection(("127.0.0.1", agent.port), timeout=10)
        try:
            stalled.sendall(f"GET /v2/team/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert stalled.recv(1024).startswith(b"HTTP/1.1 200 ")  # then never reads again
            time.sleep(0.5)
            assert agent.proc is not None
            terminated = time.monotonic()
            agent.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(ConnectionRefusedError):  # no new connections while it drains
                socket.create_connection(("127.0.0.1", agent.port), timeout=2).close()
            code = agent.proc.wait(timeout=60)
            exited = time.monotonic() - terminated
        finally:
            stalled.close()
        assert code == 0, agent.log_tail()
        assert grace - 0.5 <= exited <= grace + 2.0, exited
        log = agent.log.read_text(errors="replace")
        assert "Traceback" not in log, log
        assert "cut 1 response(s) still in flight" in log, log
    finally:
        agent.cleanup()
