"""A peer's answer longer than what one read returns is read to its end (the tracker's piece
list and holders grow with the swarm: a 16-node fan-out got answers cut short, "not JSON")."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from warmstart.aio import read_to_end
from warmstart.fetch.peer_source import PeerClient
from warmstart.oci import Digest
from warmstart_harness.testbed.net import free_port


class Trickle:
    """A stream that hands out at most ``step`` bytes a read, as a socket does."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step = data, step

    async def read(self, n: int = -1) -> bytes:
        await asyncio.sleep(0)
        take = min(self.step, n if n >= 0 else len(self.data))
        out, self.data = self.data[:take], self.data[take:]
        return out


async def test_read_to_end_joins_every_read() -> None:
    data = bytes(range(256)) * 1000
    assert await read_to_end(Trickle(data, 1000), len(data)) == data


async def test_read_to_end_refuses_more_than_the_limit() -> None:
    assert await read_to_end(Trickle(b"x" * 101, 7), 100) is None
    assert await read_to_end(Trickle(b"x" * 100, 7), 100) == b"x" * 100
    assert await read_to_end(Trickle(b"", 7), 100) == b""


async def test_a_long_tracker_answer_arrives_whole() -> None:
    holders = {f"http://10.0.3.{i}:5050": list(range(64)) for i in range(200)}
    answer = {"piece_size": 1 << 24, "hashes": ["ab" * 32] * 64, "holders": holders}
    body = json.dumps(answer).encode()
    assert len(body) > 50_000  # many segments

    async def tracker(request: web.Request) -> web.Response:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for i in range(0, len(body), 1400):  # one segment at a time
            await resp.write(body[i : i + 1400])
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/pieces/{digest}", tracker)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = PeerClient(node_id="n1")
    try:
        peer = client.source(f"http://127.0.0.1:{port}")
        digest = Digest.parse("sha256:" + "0" * 64)
        got = await peer.tracker("r.example", digest, {"have": []}, 0.0)
        assert got == answer
    finally:
        await client.aclose()
        await runner.cleanup()
