from __future__ import annotations

import asyncio
import base64

import pytest

from warmstart.oci import Reference
from warmstart.registry import (
    AuthError,
    Credentials,
    CredentialStore,
    InsecureCredentials,
    UpstreamUnavailable,
)
from warmstart.registry.tokens import TokenCache
from warmstart.registry.transport import Answer

from .conftest import MakeClient, Serve
from .fakes import SERVICE, FakeRegistry, Req, image_manifest, response

BODY = image_manifest(b"{}", (b"layer",))


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def start(serve: Serve, fake: FakeRegistry) -> str:
    server = serve(fake.app())
    return f"127.0.0.1:{server.port}"


def creds(host: str, user: str = "alice", password: str = "wonderland") -> CredentialStore:
    return CredentialStore({host: Credentials(user, password)})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_anonymous_token_flow_and_cache_hit(serve: Serve, make_client: MakeClient) -> None:
    fake = FakeRegistry(auth="bearer")
    host = await start(serve, fake)
    fake.add_manifest("app/web", "v1", BODY)
    blob = fake.add_blob(b"layer")
    client = make_client(host)
    r = Reference.parse(f"{host}/app/web:v1")

    await client.get_manifest(r)
    assert fake.unauthorized == 1
    assert len(fake.token_requests) == 1
    tr = fake.token_requests[0]
    assert tr.query == {"service": [SERVICE], "scope": ["repository:app/web:pull"]}
    assert tr.authorization is None

    # Same scope again: the cached token goes along at once, no challenge, no token request.
    await client.get_manifest(r)
    assert b"".join([c async for c in client.blob_stream(host, "app/web", blob)]) == b"layer"
    assert await client.head_blob(host, "app/web", blob) == 5
    assert fake.unauthorized == 1
    assert len(fake.token_requests) == 1
    assert all(s.authorization and s.authorization.startswith("Bearer ") for s in fake.requests[1:])


async def test_other_repository_gets_its_own_token_without_a_challenge(
    serve: Serve, make_client: MakeClient
) -> None:
    fake = FakeRegistry(auth="bearer")
    host = await start(serve, fake)
    fake.add_manifest("a/one", "v1", BODY)
    fake.add_manifest("b/two", "v1", BODY)
    client = make_client(host)
    await client.get_manifest(Reference.parse(f"{host}/a/one:v1"))
    await client.get_manifest(Reference.parse(f"{host}/b/two:v1"))
    assert fake.unauthorized == 1  # the second repository's token was fetched up front
    assert [t.query["scope"] for t in fake.token_requests] == [
        ["repository:a/one:pull"],
        ["repository:b/two:pull"],
    ]


async def test_token_with_basic_credentials(serve: Serve, make_client: MakeClient) -> None:
    fake = FakeRegistry(auth="bearer", users={"alice": "wonderland"}, anonymous_pull=False)
    host = await start(serve, fake)
    fake.add_manifest("private/app", "v1", BODY)
    client = make_client(host, credentials=creds(host))
    await client.get_manifest(Reference.parse(f"{host}/private/app:v1"))
    tr = fake.token_requests[0]
    assert tr.authorization == basic("alice", "wonderland")
    assert tr.query["account"] == ["alice"]
    # Basic credentials never go to the registry itself when it asks for Bearer.
    assert all(not (s.authorization or "").startswith("Basic") for s in fake.requests)


async def test_refresh_after_401_with_a_cached_token(serve: Serve, make_client: MakeClient) -> None:
    fake = FakeRegistry(auth="bearer")
    host = await start(serve, fake)
    fake.add_manifest("app/web", "v1", BODY)
    client = make_client(host)
    r = Reference.parse(f"{host}/app/web:v1")
    await client.get_manifest(r)
    first = fake.requests[-1].authorization
    fake.revoke_tokens()  # e.g. the registry restarted with a new signing key
    await client.get_manifest(r)
    assert len(fake.token_requests) == 2
    assert fake.requests[-1].authorization != first
    assert fake.unauthorized == 2


async def test_expired_token_is_refetched_without_a_401(
    serve: Serve, make_client: MakeClient
) -> None:
    fake = FakeRegistry(auth="bearer", token_ttl=60)
    host = await start(serve, fake)
    fake.add_manifest("app/web", "v1", BODY)
    client = make_client(host)
    clock = Clock()
    client._requests.tokens = TokenCache(clock=clock)
    r = Reference.parse(f"{host}/app/web:v1")
    await client.get_manifest(r)
    clock.now += 50
    await client.get_manifest(r)
    assert len(fake.token_requests) == 1
    clock.now += 6  # 56 s: inside the 5 s safety margin of a 60 s token
    await client.get_manifest(r)
    assert len(fake.token_requests) == 2
    assert fake.unauthorized == 1


async def test_token_without_expires_in_lives_60_seconds(
    serve: Serve, make_client: MakeClient
) -> None:
    fake = FakeRegistry(auth="bearer", token_ttl=None)
    host = await start(serve, fake)
    fake.add_manifest("app/web", "v1", BODY)
    client = make_client(host)
    clock = Clock()
    client._requests.tokens = TokenCache(clock=clock)
    r = Reference.parse(f"{host}/app/web:v1")
    await client.get_manifest(r)
    clock.now += 54
    await client.get_manifest(r)
    assert len(fake.token_requests) == 1
    clock.now += 2
    await client.get_manifest(r)
    assert len(fake.token_requests) == 2


async def test_concurrent_requests_share_one_token_fetch(
    serve: Serve, make_client: MakeClient
) -> None:
    fake = FakeRegistry(auth="bearer")
    host = await start(serve, fake)
    digests = [fake.add_blob(f"blob-{i}".encode()) for i in range(10)]
    client = make_client(host)
    await client.ping(host)  # learn the challenge
    sizes = await asyncio.gather(*(client.head_blob(host, "app/web", d) for d in digests))
    assert sizes == [6] * 10
    scoped = [t for t in fake.token_requests if t.query.get("scope")]
    assert len(scoped) == 1


async def test_ping_with_bearer_fetches_an_unscoped_token(
    serve: Serve, make_client: MakeClient
) -> None:
    fake = FakeRegistry(auth="bearer")
    host = await start(serve, fake)
    await make_client(host).ping(host)
    assert fake.token_requests[0].query == {"service": [SERVICE]}


async def test_basic_auth(serve: Serve, make_client: MakeClient) -> None:
    fake = FakeRegistry(auth="basic", users={"alice": "wonderland"})
    host = await start(serve, fake)
    fake.add_manifest("app/web", "v1", BODY)
    client = make_client(host, credentials=creds(host))
    r = Reference.parse(f"{host}/app/web:v1")
    await client.get_manifest(r)
    await client.get_manifest(r)
    assert fake.unauthorized == 1  # Basic goes along up front once the challenge is known
    assert fake.requests[-1].authorization == basic("alice", "wonderland")


@pytest.mark.parametrize("auth", ["basic", "bearer"])
async def test_no_credentials_tells_the_user_what_to_do(
    serve: Serve, make_client: MakeClient, auth: str
) -> None:
    fake = FakeRegistry(auth=auth, anonymous_pull=False)
    host = await start(serve, fake)
    fake.add_manifest("private/app", "v1", BODY)
    with pytest.raises(AuthError) as err:
        await make_client(host).get_manifest(Reference.parse(f"{host}/private/app:v1"))
    text = str(err.value)
    assert "docker login" in text and f"{host}/private/app:v1" in text
    assert "\n" not in text


@pytest.mark.parametrize("auth", ["basic", "bearer"])
async def test_wrong_password(serve: Serve, make_client: MakeClient, auth: str) -> None:
    fake = FakeRegistry(auth=auth, users={"alice": "wonderland"}, anonymous_pull=False)
    host = await start(serve, fake)
    fake.add_manifest("private/app", "v1", BODY)
    client = make_client(host, credentials=creds(host, password="wrong"))
    with pytest.raises(AuthError, match="denied access to alice"):
        await client.get_manifest(Reference.parse(f"{host}/private/app:v1"))
    assert fake.unauthorized <= 2


async def test_identity_token_uses_the_oauth2_post(serve: Serve, make_client: MakeClient) -> None:
    fake = FakeRegistry(auth="bearer", identity_tokens={"refresh-me"}, anonymous_pull=False)
    host = await start(serve, fake)
    fake.add_manifest("private/app", "v1", BODY)
    store = CredentialStore({host: Credentials(identity_token="refresh-me")})
    await make_client(host, credentials=store).get_manifest(
        Reference.parse(f"{host}/private/app:v1")
    )
    (tr,) = fake.token_requests
    assert tr.method == "POST"
    assert tr.form["grant_type"] == "refresh_token"
    assert tr.form["refresh_token"] == "refresh-me"
    assert tr.form["scope"] == "repository:private/app:pull"
    assert tr.form["service"] == SERVICE
    assert tr.authorization is None


async def test_identity_token_falls_back_to_get_without_an_oauth2_endpoint(
    serve: Serve, make_client: MakeClient
) -> None:
    fake = FakeRegistry(auth="bearer", users={"alice": "wonderland"}, anonymous_pull=False)

    async def no_oauth(request: Req) -> Answer | None:
        return response(status=404) if request.method == "POST" else None

    fake.hooks.append(no_oauth)
    host = await start(serve, fake)
    fake.add_manifest("private/app", "v1", BODY)
    store = CredentialStore({host: Credentials("alice", "wonderland", identity_token="tok")})
    await make_client(host, credentials=store).get_manifest(
        Reference.parse(f"{host}/private/app:v1")
    )
    post, get = fake.token_requests
    assert post.method == "POST" and post.form["refresh_token"] == "tok"
    assert get.method == "GET" and get.authorization == basic("alice", "wonderland")


async def test_credentials_never_go_to_a_plain_http_realm(
    serve: Serve, make_client: MakeClient
) -> None:
    fake = FakeRegistry(auth="bearer", realm="http://auth.example.invalid/token")
    host = await start(serve, fake)
    fake.add_manifest("app/web", "v1", BODY)
    client = make_client(host, credentials=creds(host))
    with pytest.raises(InsecureCredentials, match="plain HTTP"):
        await client.get_manifest(Reference.parse(f"{host}/app/web:v1"))
    assert fake.token_requests == []


async def test_token_server_on_another_host_and_its_retries(
    serve: Serve, make_client: MakeClient
) -> None:
    # The realm is a separate server ("localhost" vs "127.0.0.1"): a different origin.
    tokens = FakeRegistry(auth="bearer", users={"alice": "wonderland"})
    token_server = serve(tokens.app())
    failures = {"left": 2}

    async def flaky(request: Req) -> Answer | None:
        if request.path == "/token" and failures["left"]:
            failures["left"] -= 1
            return response(status=503)
        return None

    tokens.hooks.append(flaky)
    fake = FakeRegistry(auth="bearer", realm=f"http://localhost:{token_server.port}/token")
    fake.issued = tokens.issued  # the registry trusts what the token server issues
    host = await start(serve, fake)
    fake.add_manifest("app/web", "v1", BODY)
    await make_client(host, credentials=creds(host)).get_manifest(
        Reference.parse(f"{host}/app/web:v1")
    )
    assert len(tokens.token_requests) == 3


async def test_token_server_down_is_upstream_unavailable(
    serve: Serve, make_client: MakeClient
) -> None:
    fake = FakeRegistry(auth="bearer", realm="http://127.0.0.1:1/token")
    host = await start(serve, fake)
    with pytest.raises(UpstreamUnavailable):
        await make_client(host, max_attempts=2).get_manifest(Reference.parse(f"{host}/app/web:v1"))


async def test_fresh_token_rejected_is_an_auth_error(serve: Serve, make_client: MakeClient) -> None:
    fake = FakeRegistry(auth="bearer")
    host = await start(serve, fake)
    fake.add_manifest("app/web", "v1", BODY)

    async def reject(request: Req) -> Answer | None:
        if request.path == "/token":
            return None
        fake.revoke_tokens()  # every token is rejected the moment it is used
        return None

    fake.hooks.append(reject)
    with pytest.raises(AuthError):
        await make_client(host).get_manifest(Reference.parse(f"{host}/app/web:v1"))
    assert len(fake.token_requests) == 1
