"""Blob uploads and manifest PUTs through a MemoryTransport: the upload state machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from yarl import URL

from warmstart.oci import Digest, parse_reference
from warmstart.oci import mediatypes as mt
from warmstart.registry import (
    AuthError,
    CredentialStore,
    DigestMismatch,
    RegistryError,
    UpstreamUnavailable,
    bytes_reader,
    file_reader,
)
from warmstart.registry.transport import Answer
from warmstart.registry.upload import parse_upload_range, push_scope, with_digest

from .conftest import MakeClient
from .fakes import FakeRegistry, Req, error, image_manifest

DATA = os.urandom(3500)
DIGEST = Digest.of(DATA)
REPO = "team/model"


def calls(fake: FakeRegistry) -> list[str]:
    """The registry's requests as ``METHOD kind``: what the state machine did, in order."""
    out = []
    for s in fake.requests:
        if "/blobs/uploads/" in s.path:
            kind = "uploads" if s.path.endswith("/uploads/") else "session"
        elif "/blobs/" in s.path:
            kind = "blob"
        elif "/manifests/" in s.path:
            kind = "manifest"
        else:
            kind = s.path
        out.append(f"{s.method} {kind}")
    return out


def patch_ranges(fake: FakeRegistry) -> list[str | None]:
    return [s.headers.get("Content-Range") for s in fake.requests if s.method == "PATCH"]


def break_patch(fake: FakeRegistry, *, nth: int, keep: int, invalidate: bool = False) -> None:
    """The ``nth`` PATCH (1-based) breaks after the registry took ``keep`` of its bytes; with
    ``invalidate`` the registry then forgets the session (what distribution 2.8 does)."""
    seen = 0

    async def hook(request: Req) -> Answer | None:
        nonlocal seen
        if request.method != "PATCH":
            return None
        seen += 1
        if seen != nth:
            return None
        session = request.path.rsplit("/", 1)[-1]
        if invalidate:
            del fake.uploads[session]
        else:
            fake.uploads[session] += request.content[:keep]
        raise ConnectionResetError("connection reset while the PATCH body was sent")

    fake.hooks.append(hook)


@pytest.mark.parametrize("absolute", [False, True], ids=["relative", "absolute"])
async def test_chunked_upload_then_put_with_the_digest(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient, absolute: bool
) -> None:
    fake.absolute_locations = absolute
    client = make_client(fake_host, push_chunk_size=1000)
    positions: list[int] = []
    pushed = await client.push_blob(
        fake_host, REPO, DIGEST, len(DATA), bytes_reader(DATA), on_progress=positions.append
    )
    assert fake.blobs[str(DIGEST)] == DATA
    assert fake.blob_repos[str(DIGEST)] == {REPO}
    assert calls(fake) == [
        "HEAD blob",
        "POST uploads",
        *["PATCH session"] * 4,
        "PUT session",
    ]
    assert patch_ranges(fake) == ["0-999", "1000-1999", "2000-2999", "3000-3499"]
    put = fake.requests[-1]
    assert put.query["digest"] == [str(DIGEST)]
    assert (pushed.existed, pushed.uploaded, pushed.bytes_sent) == (False, len(DATA), len(DATA))
    assert (pushed.sessions, pushed.resumes) == (1, 0)
    assert positions[-1] == len(DATA)
    assert positions == sorted(positions)


async def test_a_blob_the_registry_has_is_not_sent_again(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    fake.add_blob(DATA)
    client = make_client(fake_host)
    positions: list[int] = []
    pushed = await client.push_blob(
        fake_host, REPO, DIGEST, len(DATA), bytes_reader(DATA), on_progress=positions.append
    )
    assert calls(fake) == ["HEAD blob"]
    assert (pushed.existed, pushed.uploaded, pushed.bytes_sent) == (True, 0, 0)
    assert positions == [len(DATA)]


async def test_empty_blob_is_a_post_and_a_put(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    client = make_client(fake_host)
    pushed = await client.push_blob(fake_host, REPO, Digest.of(b""), 0, bytes_reader(b""))
    assert calls(fake) == ["HEAD blob", "POST uploads", "PUT session"]
    assert fake.blobs[str(Digest.of(b""))] == b""
    assert pushed.uploaded == 0 and not pushed.existed


async def test_broken_patch_resumes_at_the_offset_the_registry_reports(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    break_patch(fake, nth=2, keep=400)
    client = make_client(fake_host, push_chunk_size=1000)
    positions: list[int] = []
    pushed = await client.push_blob(
        fake_host, REPO, DIGEST, len(DATA), bytes_reader(DATA), on_progress=positions.append
    )
    assert fake.blobs[str(DIGEST)] == DATA
    # the second chunk broke after 400 bytes: GET the session, go on from byte 1400
    assert patch_ranges(fake) == ["0-999", "1000-1999", "1400-2399", "2400-3399", "3400-3499"]
    assert calls(fake)[:6] == [
        "HEAD blob",
        "POST uploads",
        "PATCH session",
        "PATCH session",
        "GET session",
        "PATCH session",
    ]
    assert (pushed.sessions, pushed.resumes) == (1, 1)
    assert pushed.bytes_sent == len(DATA) + 1000 - 400  # the lost 600 were sent twice
    assert 1400 in positions and positions[-1] == len(DATA)


async def test_a_session_the_registry_forgot_starts_afresh(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    break_patch(fake, nth=3, keep=0, invalidate=True)
    client = make_client(fake_host, push_chunk_size=1000)
    pushed = await client.push_blob(fake_host, REPO, DIGEST, len(DATA), bytes_reader(DATA))
    assert fake.blobs[str(DIGEST)] == DATA
    assert patch_ranges(fake) == [
        "0-999",
        "1000-1999",
        "2000-2999",
        "0-999",
        "1000-1999",
        "2000-2999",
        "3000-3499",
    ]
    # asked the session (gone: 404), checked the blob is still missing, started a new one
    assert calls(fake)[5:8] == ["GET session", "HEAD blob", "POST uploads"]
    assert (pushed.sessions, pushed.resumes) == (2, 1)
    assert fake.uploads == {}


async def test_a_put_that_broke_after_the_commit_is_not_uploaded_again(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    broke = False

    async def commit_then_break(request: Req) -> Answer | None:
        nonlocal broke
        if request.method == "PUT" and not broke:
            broke = True
            fake.blobs[str(DIGEST)] = DATA
            fake.uploads.pop(request.path.rsplit("/", 1)[-1])
            raise ConnectionResetError("connection reset before the answer")
        return None

    fake.hooks.append(commit_then_break)
    client = make_client(fake_host, push_chunk_size=2000)
    pushed = await client.push_blob(fake_host, REPO, DIGEST, len(DATA), bytes_reader(DATA))
    assert calls(fake)[-3:] == ["PUT session", "GET session", "HEAD blob"]
    assert (pushed.existed, pushed.uploaded, pushed.sessions) == (False, len(DATA), 1)


async def test_server_errors_are_retried_with_backoff(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    failures = {"POST": 1, "PATCH": 1}

    async def flaky(request: Req) -> Answer | None:
        if failures.get(request.method, 0) > 0:
            failures[request.method] -= 1
            return error(503, "UNAVAILABLE", "try again")
        return None

    fake.hooks.append(flaky)
    client = make_client(fake_host, push_chunk_size=1000)
    await client.push_blob(fake_host, REPO, DIGEST, len(DATA), bytes_reader(DATA))
    assert fake.blobs[str(DIGEST)] == DATA
    assert calls(fake)[:4] == ["HEAD blob", "POST uploads", "POST uploads", "PATCH session"]


async def test_attempts_run_out_when_every_patch_breaks(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    async def always_break(request: Req) -> Answer | None:
        if request.method == "PATCH":
            raise ConnectionResetError("reset")
        return None

    fake.hooks.append(always_break)
    client = make_client(fake_host, push_chunk_size=1000, max_attempts=3)
    with pytest.raises(UpstreamUnavailable) as err:
        await client.push_blob(fake_host, REPO, DIGEST, len(DATA), bytes_reader(DATA), name="w.bin")
    message = str(err.value)
    assert "gave up after 3 attempts" in message and "(w.bin)" in message
    assert "\n" not in message


async def test_digest_refused_at_the_put_is_a_one_line_error(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    client = make_client(fake_host)
    wrong = Digest.of(b"something else")
    with pytest.raises(DigestMismatch) as err:
        await client.push_blob(fake_host, REPO, wrong, len(DATA), bytes_reader(DATA))
    assert "did the file change" in str(err.value)
    assert calls(fake).count("PUT session") == 1  # not retried


async def test_push_asks_for_pull_push_tokens_and_reuses_them(
    fake_host: str, fake: FakeRegistry, make_client: MakeClient
) -> None:
    fake.auth = "bearer"
    fake.users = {"alice": "secret"}
    creds = CredentialStore()
    creds.add_basic(fake_host, "alice", "secret")
    client = make_client(fake_host, push_chunk_size=1000, credentials=creds)
    await client.push_blob(fake_host, REPO, DIGEST, len(DATA), bytes_reader(DATA))
    assert fake.blobs[str(DIGEST)] == DATA
    # the HEAD's challenge names only pull; the auth rules join it to the push scope
    assert all(push_scope(REPO)[0] in t.query["scope"] for t in fake.token_requests)
    assert fake.unauthorized == 1  # only the first HEAD, answered with the challenge
    fetched = len(fake.token_requests)
    other = os.urandom(2500)
    await client.push_blob(fake_host, REPO, Digest.of(other), len(other), bytes_reader(other))
    assert len(fake.token_requests) == fetched  # cached for the next blob
    assert fake.unauthorized == 1


async def test_push_without_credentials_is_refused(
    fake_host: str, fake: FakeRegistry, make_client: MakeClient
) -> None:
    fake.auth = "bearer"
    fake.anonymous_pull = False
    client = make_client(fake_host)
    with pytest.raises(AuthError) as err:
        await client.push_blob(fake_host, REPO, DIGEST, len(DATA), bytes_reader(DATA))
    assert "requires authentication" in str(err.value)


async def test_put_manifest_by_tag_returns_its_digest(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    config = b"{}"
    fake.add_blob(config)
    fake.add_blob(DATA)
    body = image_manifest(config, (DATA,))
    client = make_client(fake_host)
    digest = await client.put_manifest(
        parse_reference(f"{fake_host}/{REPO}:v1"), body, mt.OCI_MANIFEST
    )
    assert digest == Digest.of(body)
    assert fake.manifests[(REPO, "v1")] == (body, mt.OCI_MANIFEST)
    put = fake.requests[-1]
    assert (put.method, put.path) == ("PUT", f"/v2/{REPO}/manifests/v1")
    assert put.headers["Content-Type"] == mt.OCI_MANIFEST


async def test_put_manifest_with_a_missing_blob_is_refused(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    client = make_client(fake_host)
    body = image_manifest(b"{}", (DATA,))
    with pytest.raises(RegistryError) as err:
        await client.put_manifest(parse_reference(f"{fake_host}/{REPO}:v1"), body, mt.OCI_MANIFEST)
    assert "MANIFEST_BLOB_UNKNOWN" in str(err.value)


async def test_file_reader_streams_pieces_of_the_range(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(DATA)
    read = file_reader(path, piece=256)
    pieces = [p async for p in read(1000, 1500)]
    assert b"".join(pieces) == DATA[1000:2500]
    assert max(len(p) for p in pieces) == 256
    with pytest.raises(RegistryError, match="did it change"):
        _ = [p async for p in read(3000, 1000)]


async def test_push_from_a_file(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient, tmp_path: Path
) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(DATA)
    client = make_client(fake_host, push_chunk_size=1024)
    await client.push_blob(fake_host, REPO, DIGEST, len(DATA), file_reader(path, piece=100))
    assert fake.blobs[str(DIGEST)] == DATA


async def test_a_file_that_shrank_fails_at_once(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient, tmp_path: Path
) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(DATA[:2000])  # shorter than the size the push was told
    client = make_client(fake_host, push_chunk_size=1024)
    with pytest.raises(RegistryError, match="ended at byte 2000 while it was pushed"):
        await client.push_blob(fake_host, REPO, DIGEST, len(DATA), file_reader(path))
    assert calls(fake).count("POST uploads") == 1  # no retry: the file, not the network


def test_upload_range_and_digest_query() -> None:
    assert parse_upload_range("0-1499") == 1500
    assert parse_upload_range("bytes=0-9") == 10
    assert parse_upload_range("0-0") is None  # nothing or one byte: ambiguous
    assert parse_upload_range(None) is None
    assert parse_upload_range("5-9") is None
    assert parse_upload_range("junk") is None
    url = URL("http://r:5000/v2/a/blobs/uploads/u?_state=ab%3D%3D", encoded=True)
    assert str(with_digest(url, DIGEST)) == (
        f"http://r:5000/v2/a/blobs/uploads/u?_state=ab%3D%3D&digest={DIGEST}"
    )
    bare = URL("http://r:5000/v2/a/blobs/uploads/u", encoded=True)
    assert str(with_digest(bare, DIGEST)) == f"http://r:5000/v2/a/blobs/uploads/u?digest={DIGEST}"


def test_push_scope_names_both_actions() -> None:
    assert push_scope("team/model") == ("repository:team/model:pull,push",)
