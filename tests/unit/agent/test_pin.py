"""``"pin": true`` pre-warms keep the image pinned until ``POST /unpin`` (the operator's
ImageCache pins; deleting it unpins)."""

from __future__ import annotations

import pytest

from tests.unit.agent.conftest import REGISTRY, MakeAgent
from tests.unit.agent.fakes import RecordingPrewarmer
from warmstart.agent.api import PrewarmRequest, RequestInvalid, UnpinRequest, parse_request
from warmstart.agent.client import AgentClient, AgentRefused
from warmstart.agent.state import STATE
from warmstart.oci import Digest

TOKEN = "pin-token"
REF = f"{REGISTRY}/app:v1"
ZERO = Digest.parse("sha256:" + "0" * 64)


def test_pin_is_sent_only_when_set() -> None:
    assert "pin" not in PrewarmRequest.of(REF).to_json()
    assert PrewarmRequest.of(REF, pin=True).to_json()["pin"] is True
    assert parse_request(PrewarmRequest, {"reference": REF, "pin": True}).pin is True
    with pytest.raises(RequestInvalid, match="pin: must be true or false"):
        parse_request(PrewarmRequest, {"reference": REF, "pin": "yes"})
    with pytest.raises(RequestInvalid, match="reference"):
        parse_request(UnpinRequest, {"reference": "Bad Ref"})


async def test_a_pinned_prewarm_stays_pinned_until_unpinned(make_agent: MakeAgent) -> None:
    agent = await make_agent(prewarmer=RecordingPrewarmer(), peer_token=TOKEN)
    store = agent.app[STATE].parts.store
    assert store is not None
    store.record_image(REF, ZERO, [(ZERO, 10, "application/vnd.oci.image.manifest.v1+json")])
    url = str(agent.client.make_url("/")).rstrip("/")
    async with AgentClient(url, token=TOKEN) as client:

        async def pinned() -> bool:
            return next(i.pinned for i in (await client.status()).images if i.reference == REF)

        await client.prewarm(PrewarmRequest.of(REF))
        assert not await pinned()  # a plain pre-warm pins only while it runs
        await client.prewarm(PrewarmRequest.of(REF, pin=True))
        await client.prewarm(PrewarmRequest.of(REF, pin=True))  # again: still one pin
        assert await pinned() and len(agent.app[STATE].pins) == 1
        answer = await client.unpin(REF)
        assert answer.released and answer.reference == REF
        assert not await pinned()
        assert (await client.unpin(REF)).released is False  # nothing left to release
    async with AgentClient(url) as stranger:
        with pytest.raises(AgentRefused) as info:
            await stranger.unpin(REF)
        assert info.value.status == 401
