"""The agent as a real process: what it logs for garbage on its socket, and how it stops."""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent_log import assert_no_tracebacks, wait_for_lines
from tests.support.images import ImageBuilder
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.registry import RegistryProcess

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
        assert_no_tracebacks(agent.log)
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
        # the access line of /healthz is written after its answer went out: wait for it too
        healthz = any('"GET /healthz HTTP/1.1" 200' in line for line in lines)
        if (len(refused) >= rounds * len(GARBAGE) and healthz) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(refused) == rounds * len(GARBAGE), "\n".join(lines)
    assert all(" WARNING warmstart.agent.access: 127.0.0.1 " in line for line in refused)
    # nothing else: no traceback, no ERROR, one line per bad request (and the /healthz lines:
    # ours, and maybe the start-up probe's, which can land after ``before`` was read)
    others = [line for line in lines if line not in refused]
    health = [line for line in others if '"GET /healthz HTTP/1.1" 200' in line]
    assert health and len(others) == len(health), "\n".join(others)
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


# -- clients that go away in the middle of a blob ---------------------------------------------

BLOB_SIZE = 16 << 20  # more than the loopback socket buffers hold: the agent is mid-send
LEAVERS = 40
GONE = "client went away after"


def read_a_little_then_reset(port: int, path: str, want: int = 64 << 10) -> bytes:
    """GET ``path``, read ``want`` bytes, then close with SO_LINGER 0 (the kernel sends RST)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)  # keep the agent blocked
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = b""
        while len(got) < want:
            chunk = sock.recv(want - len(got))
            if not chunk:
                break
            got += chunk
        return got
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def _blob_agent(
    registry: RegistryProcess, image_builder: ImageBuilder, tmp_path: Path
) -> tuple[AgentProcess, str]:
    digest = image_builder.push_blob(registry, "team/app", os.urandom(BLOB_SIZE))
    agent = AgentProcess(tmp_path / "agent", upstreams={registry.host: registry.url})
    return agent, f"/v2/team/app/blobs/{digest}"


def _assert_each_leaver_is_one_quiet_line(agent: AgentProcess, expected: int) -> None:
    gone = wait_for_lines(agent.log, lambda line: GONE in line, expected)
    assert_no_tracebacks(agent.log)  # and no ERROR line
    assert len(gone) == expected, agent.log_tail(80)
    for line in gone:
        assert " INFO " in line or " DEBUG " in line, line
        sent = int(line.split(GONE, 1)[1].split()[0])
        assert 0 <= sent < BLOB_SIZE and f"of {BLOB_SIZE} bytes" in line, line
    status, _ = agent.get("/healthz")  # and it goes on serving
    assert status == 200


def test_clients_that_reset_mid_blob_are_one_info_line_each_and_no_traceback(
    registry: RegistryProcess, image_builder: ImageBuilder, tmp_path: Path
) -> None:
    """containerd cancels, kubelets time out: a client leaving mid-body is normal. From the
    store (sendfile), each is one INFO line with the bytes sent; no traceback, no ERROR."""
    agent, path = _blob_agent(registry, image_builder, tmp_path)
    try:
        status, body = agent.get(path, timeout=60)  # stored: later answers are sendfile's
        assert status == 200 and len(body) == BLOB_SIZE
        for _ in range(LEAVERS):
            assert read_a_little_then_reset(agent.port, path).startswith(b"HTTP/1.1 200 ")
        _assert_each_leaver_is_one_quiet_line(agent, LEAVERS)
    finally:
        agent.cleanup()


def test_clients_that_reset_while_the_blob_arrives_log_no_traceback(
    registry: RegistryProcess, image_builder: ImageBuilder, tmp_path: Path
) -> None:
    """The same for clients of a cold blob (following the transfer in progress, or the file
    once stored): all leave at once, the transfer itself completes and is kept."""
    agent, path = _blob_agent(registry, image_builder, tmp_path)
    try:
        leavers = 8
        answers: list[bytes] = []
        threads = [
            threading.Thread(
                target=lambda: answers.append(read_a_little_then_reset(agent.port, path))
            )
            for _ in range(leavers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(answers) == leavers
        assert all(a.startswith(b"HTTP/1.1 200 ") for a in answers), [a[:40] for a in answers]
        _assert_each_leaver_is_one_quiet_line(agent, leavers)
        status, body = agent.get(path, timeout=60)  # the agent's copy is whole
        assert status == 200 and len(body) == BLOB_SIZE
    finally:
        agent.cleanup()
