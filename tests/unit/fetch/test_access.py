"""Access to cached content of private repositories: tables over an in-memory upstream."""

from __future__ import annotations

import base64

import pytest

from tests.unit.fetch.helpers import FakeClock
from warmstart.fetch.access import AccessControl, grant_key, parse_basic, peer_token_ok
from warmstart.fetch.interfaces import NotFoundError, UnauthorizedError, UnavailableError
from warmstart.fetch.memory import MemorySource
from warmstart.fetch.source import Probe, SourceUnavailable
from warmstart.registry import Credentials

REG = "reg.example"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic("alice", "secret"), ("alice", "secret")),
        (basic("alice", "pa:ss"), ("alice", "pa:ss")),
        (basic("alice", ""), ("alice", "")),
        ("basic " + base64.b64encode(b"bob:x").decode(), ("bob", "x")),
        ("Bearer abc", None),
        ("Basic", None),
        ("Basic !!!", None),
        ("Basic " + base64.b64encode(b"nocolon").decode(), None),
        ("Basic " + base64.b64encode(b":pw").decode(), None),
        ("Basic " + base64.b64encode(b"\xff:x").decode(), None),
    ],
)
def test_parse_basic(header: str, expected: tuple[str, str] | None) -> None:
    got = parse_basic(header)
    assert (None if got is None else (got.username, got.password)) == expected


def test_grant_key_hides_the_secret_and_separates_repositories() -> None:
    h = basic("alice", "secret")
    key = grant_key(h, REG, "team/app")
    assert "secret" not in key and h not in key and len(key) == 64
    assert key != grant_key(h, REG, "team/other") != grant_key(h, "other.example", "team/app")


@pytest.mark.parametrize(
    ("configured", "presented", "ok"),
    [
        (None, None, True),
        (None, "x", True),
        ("s", "s", True),
        ("s", "t", False),
        ("s", None, False),
    ],
)
def test_peer_token(configured: str | None, presented: str | None, ok: bool) -> None:
    assert peer_token_ok(configured, presented) is ok


def setup() -> tuple[MemorySource, AccessControl, FakeClock, str, str]:
    up = MemorySource(users={"alice": "secret"}, agent_credentials=Credentials("robot", "r"))
    up.users["robot"] = "r"
    public = up.add_blob(b"public layer", "pub/app")
    private = up.add_blob(b"private layer", "team/app")
    up.private.add("team/app")
    clock = FakeClock()
    return (
        up,
        AccessControl(up, privacy_ttl=300, grant_ttl=60, denial_ttl=10, clock=clock),
        clock,
        str(public),
        str(private),
    )


ALICE = basic("alice", "secret")
WRONG = basic("alice", "nope")


@pytest.mark.parametrize(
    ("repository", "which", "authorization", "outcome"),
    [
        ("pub/app", "public", None, None),
        ("pub/app", "public", WRONG, None),  # public: credentials are not even looked at
        ("team/app", "private", ALICE, None),
        ("team/app", "private", None, UnauthorizedError),
        ("team/app", "private", WRONG, UnauthorizedError),
        ("team/app", "private", "Bearer xyz", UnauthorizedError),
        ("team/app", "private", basic("mallory", "secret"), UnauthorizedError),
        # a private digest through the public repository: it is not in there
        ("pub/app", "private", None, NotFoundError),
        # alice may read team/app, but the public layer is not in team/app
        ("team/app", "public", ALICE, NotFoundError),
    ],
)
async def test_admit_table(
    repository: str, which: str, authorization: str | None, outcome: type[Exception] | None
) -> None:
    _up, access, _clock, public, private = setup()
    probe = Probe("blob", public if which == "public" else private)
    if outcome is None:
        await access.admit(REG, repository, authorization, probe)
    else:
        with pytest.raises(outcome):
            await access.admit(REG, repository, authorization, probe)


async def test_answers_are_remembered_for_their_ttl() -> None:
    up, access, clock, _public, private = setup()
    probe = Probe("blob", private)
    await access.admit(REG, "team/app", ALICE, probe)
    assert len(up.access_checks) == 2  # anonymous (-> private), alice (-> allowed, present)
    for _ in range(5):
        await access.admit(REG, "team/app", ALICE, probe)
    assert len(up.access_checks) == 2
    clock.tick(61)  # grant expired, privacy still known
    await access.admit(REG, "team/app", ALICE, probe)
    assert [c[1] for c in up.access_checks] == [None, "alice", "alice"]
    for _ in range(3):
        with pytest.raises(UnauthorizedError):
            await access.admit(REG, "team/app", WRONG, probe)
    assert len(up.access_checks) == 4  # the denial is remembered too
    clock.tick(11)
    with pytest.raises(UnauthorizedError):
        await access.admit(REG, "team/app", WRONG, probe)
    assert len(up.access_checks) == 5


async def test_concurrent_checks_share_one_question() -> None:
    import asyncio

    up, access, _clock, _public, private = setup()
    await asyncio.gather(
        *(access.admit(REG, "team/app", ALICE, Probe("blob", private)) for _ in range(10))
    )
    assert len(up.access_checks) == 2


async def test_shared_registry_needs_nothing() -> None:
    up, _, clock, _public, private = setup()
    access = AccessControl(up, shared=[REG], clock=clock)
    await access.admit(REG, "team/app", None, Probe("blob", private))
    await access.admit(REG, "pub/app", None, Probe("blob", private))
    assert up.access_checks == [] and access.is_shared(REG)


async def test_membership_from_manifests_skips_the_upstream() -> None:
    up, access, _clock, _public, private = setup()
    access.note_members(REG, "team/app", [private])
    await access.admit(REG, "team/app", ALICE, Probe("blob", private))
    assert [c[2] for c in up.access_checks] == [False, False]  # no as_agent membership check


async def test_upstream_down() -> None:
    up, access, clock, public, private = setup()
    await access.admit(REG, "team/app", ALICE, Probe("blob", private))
    up.fail = SourceUnavailable("registry down")
    # privacy: the last answer is used; grant: still fresh
    await access.admit(REG, "team/app", ALICE, Probe("blob", private))
    clock.tick(400)  # privacy stale, grant expired: credentials cannot be checked -> fail closed
    with pytest.raises(UnavailableError):
        await access.admit(REG, "team/app", ALICE, Probe("blob", private))
    with pytest.raises(UnavailableError):  # never asked before: nothing to fall back on
        await access.admit(REG, "other/app", None, Probe("blob", public))


async def test_tag_probe_needs_no_membership() -> None:
    up, access, _clock, _public, _private = setup()
    up.add_manifest("team/app", b'{"x":1}', "application/json", tag="v1")
    await access.admit(REG, "team/app", ALICE, Probe("manifest", "v1"))
    with pytest.raises(UnauthorizedError):
        await access.admit(REG, "team/app", None, Probe("manifest", "v1"))
