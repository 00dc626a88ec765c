from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.agent.prewarm_fakes import (
    FakeFetcher,
    ctr_calls,
    make_image,
    make_index,
    write_fake_ctr,
)
from warmstart.agent.hooks import Prewarmer as PrewarmerProtocol
from warmstart.agent.import_grants import IMPORT_HEADER, ImportGrants
from warmstart.agent.linking import BlobIncomplete
from warmstart.agent.prewarm import (
    IMPORT_ATTEMPTS,
    IMPORT_RETRY_BACKOFF,
    ContainerdPrewarmer,
    HotImportFailed,
    HotImportUnavailable,
    image_blobs,
    transient_pull_failure,
)
from warmstart.containerd.ctr import ContainerdTarget
from warmstart.fetch.interfaces import ClientIdentity, NotFoundError
from warmstart.oci import Platform, Reference
from warmstart.oci import mediatypes as mt
from warmstart.store import ContentStore

AGENT = "http://127.0.0.1:5050"
REF = Reference.parse("127.0.0.1:5000/team/app:v1")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ContentStore]:
    with ContentStore(tmp_path / "store") as s:
        yield s


@pytest.fixture
def fetcher(store: ContentStore) -> FakeFetcher:
    f = FakeFetcher(store)
    f.add_image("v1", make_image([b"layer-one" * 100, b"layer-two" * 50]))
    return f


@pytest.fixture
def fake_ctr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    log = tmp_path / "ctr-calls.json"
    monkeypatch.setenv("FAKE_CTR_LOG", str(log))
    monkeypatch.setenv("FAKE_CTR_MODE", "ok")
    return write_fake_ctr(tmp_path), log


def target(ctr: Path) -> ContainerdTarget:
    return ContainerdTarget(Path("/run/fake.sock"), namespace="k8s.io", ctr_binary=str(ctr))


def test_prewarmer_satisfies_the_agents_protocol(fetcher: FakeFetcher, store: ContentStore) -> None:
    assert isinstance(ContainerdPrewarmer(fetcher, store, agent_url=AGENT), PrewarmerProtocol)


async def test_warm_fetches_every_blob_into_the_store(
    fetcher: FakeFetcher, store: ContentStore
) -> None:
    result = await ContainerdPrewarmer(fetcher, store, agent_url=AGENT).prewarm(REF, None, False)
    image = make_image([b"layer-one" * 100, b"layer-two" * 50])
    assert result.reference == str(REF)
    assert result.digest == result.manifest_digest == str(image.digest)
    assert result.blobs == 3
    assert result.bytes == sum(len(b) for b in image.blobs.values())
    assert result.sources == {"upstream": result.bytes}
    assert result.hot is False and result.containerd is None
    assert all(store.has(d) for d in image.blobs) and store.has(image.digest)
    [record] = store.images()
    assert record.reference == str(REF) and record.complete and not record.pinned
    assert fetcher.manifest_calls == [("127.0.0.1:5000", "team/app", "v1")]


async def test_second_prewarm_is_local_and_asks_the_fetcher_for_nothing(
    fetcher: FakeFetcher, store: ContentStore
) -> None:
    prewarmer = ContainerdPrewarmer(fetcher, store, agent_url=AGENT)
    await prewarmer.prewarm(REF, None, False)
    fetcher.blob_calls.clear()
    result = await prewarmer.prewarm(REF, None, False)
    assert fetcher.blob_calls == []
    assert result.sources == {"local": result.bytes}


async def test_blobs_served_as_files_count_under_their_source(
    fetcher: FakeFetcher, store: ContentStore
) -> None:
    fetcher.mode = "path"
    result = await ContainerdPrewarmer(fetcher, store, agent_url=AGENT).prewarm(REF, None, False)
    assert result.sources == {"peer": result.bytes}


async def test_index_chooses_the_platform(store: ContentStore) -> None:
    amd, arm = make_image([b"amd" * 10]), make_image([b"arm" * 10], arch="arm64")
    fetcher = FakeFetcher(store)
    fetcher.add_image(str(amd.digest), amd)
    fetcher.add_image(str(arm.digest), arm)
    fetcher.manifests["v1"] = (make_index({"linux/amd64": amd, "linux/arm64": arm}), mt.OCI_INDEX)
    result = await ContainerdPrewarmer(fetcher, store, agent_url=AGENT).prewarm(
        REF, Platform.parse("linux/arm64"), False
    )
    assert result.manifest_digest == str(arm.digest)
    assert result.platform == "linux/arm64/v8"
    assert all(store.has(d) for d in arm.blobs)
    assert not any(store.has(d) for d in amd.blobs if d not in arm.blobs)
    [record] = store.images()
    assert str(record.manifest_digest) == result.digest != result.manifest_digest


async def test_short_stream_fails_and_records_nothing(
    fetcher: FakeFetcher, store: ContentStore
) -> None:
    fetcher.mode = "short"
    with pytest.raises(BlobIncomplete, match="stream ended after"):
        await ContainerdPrewarmer(fetcher, store, agent_url=AGENT).prewarm(REF, None, False)
    assert store.images() == []


async def test_blob_streamed_but_not_kept_is_an_error(
    fetcher: FakeFetcher, store: ContentStore
) -> None:
    fetcher.mode = "forget"
    prewarmer = ContainerdPrewarmer(fetcher, store, agent_url=AGENT, settle_seconds=0.05)
    with pytest.raises(BlobIncomplete, match="not in the store"):
        await prewarmer.prewarm(REF, None, False)


async def test_unknown_image_propagates_the_fetch_error(
    fetcher: FakeFetcher, store: ContentStore
) -> None:
    with pytest.raises(NotFoundError):
        await ContainerdPrewarmer(fetcher, store, agent_url=AGENT).prewarm(
            Reference.parse("127.0.0.1:5000/team/app:nope"), None, False
        )


async def test_hot_without_containerd_is_refused_before_any_transfer(
    fetcher: FakeFetcher, store: ContentStore
) -> None:
    with pytest.raises(HotImportUnavailable) as info:
        await ContainerdPrewarmer(fetcher, store, agent_url=AGENT).prewarm(REF, None, True)
    assert info.value.status == 409
    # the manifest says whether it is an image or a model; no blob moves
    assert fetcher.blob_calls == []


async def test_hot_imports_through_the_agent_only(
    fetcher: FakeFetcher,
    store: ContentStore,
    fake_ctr: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctr, log = fake_ctr
    digest = make_image([b"layer-one" * 100, b"layer-two" * 50]).digest
    monkeypatch.setenv("FAKE_CTR_DIGEST", str(digest))
    grants = ImportGrants()
    asker = ClientIdentity(authorization="Basic YWxpY2U6c2VjcmV0")
    prewarmer = ContainerdPrewarmer(
        fetcher, store, agent_url=AGENT + "/", containerd=target(ctr), grants=grants
    )
    result = await prewarmer.prewarm(REF, None, True, client=asker)
    assert result.hot is True
    assert result.containerd is not None
    assert result.containerd.unpacked is True
    assert result.containerd.namespace == "k8s.io"
    assert result.containerd.tag_moved is False
    pull, check, tag = ctr_calls(log)
    assert pull["args"][:4] == ["--address", "/run/fake.sock", "--namespace", "k8s.io"]
    assert pull["args"][4:6] == ["images", "pull"]
    assert pull["args"][-1] == str(REF)
    assert "--platform" not in pull["args"]  # a single-platform image: nothing to choose
    [(path, text)] = pull["hosts"].items()
    assert path == "127.0.0.1:5000/hosts.toml"
    hosts = tomllib.loads(text)
    [token] = hosts["host"][AGENT].pop("header")[IMPORT_HEADER]
    assert hosts == {
        "server": AGENT,
        "host": {AGENT: {"capabilities": ["pull", "resolve"]}},
    }
    assert check["args"][4:] == ["images", "check"]
    # In the CRI's namespace the image is named by digest too, as a CRI pull names it.
    by_digest = f"{REF.name}@{digest}"
    assert tag["args"][4:] == ["images", "tag", "--force", str(REF), by_digest]
    # The grant let ctr act as the client who asked, and only while the import ran.
    assert len(token) >= 32
    assert grants.identity(token) is None
    assert len(grants) == 0


def test_import_grants_carry_the_asking_identity() -> None:
    grants = ImportGrants()
    asker = ClientIdentity(authorization="Basic abc")
    with grants.grant(asker) as token:
        assert grants.identity(token) is asker
        assert grants.identity(token + "x") is None
        assert grants.identity(None) is None
    assert grants.identity(token) is None


async def test_hot_import_failure_is_one_line(
    fetcher: FakeFetcher,
    store: ContentStore,
    fake_ctr: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctr, _ = fake_ctr
    monkeypatch.setenv("FAKE_CTR_MODE", "pull-fails")
    prewarmer = ContainerdPrewarmer(fetcher, store, agent_url=AGENT, containerd=target(ctr))
    with pytest.raises(HotImportFailed) as info:
        await prewarmer.prewarm(REF, None, True)
    assert str(info.value) == (
        f"importing {REF} into containerd failed: "
        "ctr: failed to resolve reference: 503 Service Unavailable"
    )
    assert info.value.status == 502
    [record] = store.images()  # the warm part stays done
    assert record.complete and not record.pinned


async def test_hot_import_that_leaves_no_snapshot_fails(
    fetcher: FakeFetcher,
    store: ContentStore,
    fake_ctr: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctr, _ = fake_ctr
    monkeypatch.setenv("FAKE_CTR_MODE", "not-unpacked")
    monkeypatch.setenv("FAKE_CTR_DIGEST", "sha256:" + "a" * 64)
    prewarmer = ContainerdPrewarmer(fetcher, store, agent_url=AGENT, containerd=target(ctr))
    with pytest.raises(HotImportFailed, match="not unpacked"):
        await prewarmer.prewarm(REF, None, True)


async def test_missing_ctr_binary_is_a_clear_error(
    fetcher: FakeFetcher, store: ContentStore, tmp_path: Path
) -> None:
    prewarmer = ContainerdPrewarmer(
        fetcher, store, agent_url=AGENT, containerd=target(tmp_path / "no-such-ctr")
    )
    with pytest.raises(HotImportFailed, match="cannot run"):
        await prewarmer.prewarm(REF, None, True)


async def test_artifacts_can_be_warm_but_not_hot(
    store: ContentStore, fake_ctr: tuple[Path, Path]
) -> None:
    fetcher = FakeFetcher(store)
    fetcher.add_image("v1", make_image([b"weights" * 99], config_type="application/x-model"))
    prewarmer = ContainerdPrewarmer(fetcher, store, agent_url=AGENT, containerd=target(fake_ctr[0]))
    with pytest.raises(ValueError, match="not a container image"):
        await prewarmer.prewarm(REF, None, True)
    assert (await prewarmer.prewarm(REF, None, False)).blobs == 2


async def test_without_a_store_the_bytes_still_flow(fetcher: FakeFetcher) -> None:
    fetcher.store = None
    result = await ContainerdPrewarmer(fetcher, None, agent_url=AGENT).prewarm(REF, None, False)
    assert result.blobs == 3 and len(fetcher.blob_calls) == 3


def test_unique_blobs() -> None:
    from warmstart.oci.manifest import parse_manifest

    image = make_image([b"same", b"same"])
    manifest = parse_manifest(image.manifest)
    assert len(image_blobs(manifest)) == 2  # config + one layer, the repeat dropped


@pytest.mark.parametrize(
    ("returncode", "stderr", "transient"),
    [
        (1, "ctr: failed to read expected number of bytes: unexpected EOF\n", True),
        (1, "ctr: unexpected EOF", True),
        (
            1,
            "ctr: failed to copy: read tcp 127.0.0.1:1->127.0.0.1:2: connection reset by peer",
            True,
        ),
        (1, "ctr: failed to resolve reference: 503 Service Unavailable", False),
        (1, "ctr: failed to resolve reference: not found", False),
        (1, "ctr: failed to authorize: 401 Unauthorized", False),
        (1, "", False),
        (0, "unexpected EOF", False),  # a success is never retried
    ],
)
def test_transient_pull_failure(returncode: int, stderr: str, transient: bool) -> None:
    assert transient_pull_failure(returncode, stderr) is transient


async def test_hot_import_retries_a_pull_that_broke_mid_body(
    fetcher: FakeFetcher,
    store: ContentStore,
    fake_ctr: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctr, log = fake_ctr
    digest = make_image([b"layer-one" * 100]).digest
    monkeypatch.setenv("FAKE_CTR_DIGEST", str(digest))
    monkeypatch.setenv("FAKE_CTR_MODE", "eof-once")
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    prewarmer = ContainerdPrewarmer(
        fetcher, store, agent_url=AGENT, containerd=target(ctr), sleep=sleep
    )
    result = await prewarmer.prewarm(REF, None, True)
    assert result.containerd is not None and result.containerd.unpacked is True
    assert result.containerd.pull_attempts == 2
    assert [c["args"][4:6] for c in ctr_calls(log)] == [
        ["images", "pull"],
        ["images", "pull"],
        ["images", "check"],
        ["images", "tag"],  # k8s.io: the digest name
    ]
    assert waits == [IMPORT_RETRY_BACKOFF.ceiling(0)]


async def test_hot_import_gives_up_after_three_broken_pulls(
    fetcher: FakeFetcher,
    store: ContentStore,
    fake_ctr: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctr, log = fake_ctr
    monkeypatch.setenv("FAKE_CTR_MODE", "eof-always")

    async def sleep(seconds: float) -> None:
        pass

    prewarmer = ContainerdPrewarmer(
        fetcher, store, agent_url=AGENT, containerd=target(ctr), sleep=sleep
    )
    with pytest.raises(HotImportFailed, match=r"after 3 attempts.*unexpected EOF"):
        await prewarmer.prewarm(REF, None, True)
    assert len(ctr_calls(log)) == IMPORT_ATTEMPTS == 3


async def test_hot_import_does_not_retry_a_final_failure(
    fetcher: FakeFetcher,
    store: ContentStore,
    fake_ctr: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctr, log = fake_ctr
    monkeypatch.setenv("FAKE_CTR_MODE", "pull-fails")
    prewarmer = ContainerdPrewarmer(fetcher, store, agent_url=AGENT, containerd=target(ctr))
    with pytest.raises(HotImportFailed, match="503"):
        await prewarmer.prewarm(REF, None, True)
    assert len(ctr_calls(log)) == 1


@pytest.mark.parametrize(("namespace", "mode"), [("warmstart", "ok"), ("k8s.io", "tag-fails")])
async def test_the_digest_name_only_in_the_cri_namespace_and_never_fatal(
    fetcher: FakeFetcher,
    store: ContentStore,
    fake_ctr: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    namespace: str,
    mode: str,
) -> None:
    ctr, log = fake_ctr
    digest = make_image([b"layer-one" * 100, b"layer-two" * 50]).digest
    monkeypatch.setenv("FAKE_CTR_DIGEST", str(digest))
    monkeypatch.setenv("FAKE_CTR_MODE", mode)
    containerd = ContainerdTarget(Path("/run/fake.sock"), namespace=namespace, ctr_binary=str(ctr))
    prewarmer = ContainerdPrewarmer(fetcher, store, agent_url=AGENT, containerd=containerd)
    result = await prewarmer.prewarm(REF, None, True)
    assert result.containerd is not None and result.containerd.unpacked is True
    tags = [c for c in ctr_calls(log) if c["args"][4:6] == ["images", "tag"]]
    assert len(tags) == (1 if namespace == "k8s.io" else 0)
    failed = [r.getMessage() for r in caplog.records if "naming" in r.getMessage()]
    assert len(failed) == (1 if mode == "tag-fails" else 0)
