"""Pre-warm: bring an image into this node before a replica needs it.

``warm``: every blob of the image (for one platform) into the agent's store, fetched through
the agent's own :class:`~warmstart.fetch.interfaces.Fetcher`, so the tiers apply exactly as for a
containerd pull (local store, the digest's home peer, other peers, upstream once per cluster).
The image is pinned while it is pre-warmed and recorded in the store's index afterwards.

A **model** (``model``, or any artifact that is not a container image) is fetched the same
way; ``hot`` then materialises it: a read-only directory in the store whose raw files are hard
links to the verified blobs (``warmstart.model.materialise``), plus a stable
``models/by-ref/<reference>`` link to it. A hostile artifact is refused before a byte is fetched.

``hot``: then also import it into the node's containerd, content *and* unpacked snapshot, so the
next container start pulls and unpacks nothing. containerd 1.6 has no pull RPC (the fetch runs
in the client), so this runs ``ctr images pull`` against the agent itself: a temporary hosts
directory names the agent as the registry's only endpoint (no fallback to the upstream), so
every byte comes from the local store at loopback speed. Afterwards ``ctr images check`` must
show the image complete and unpacked. Into the CRI's namespace (``k8s.io``) the image is
also named by its digest (``registry/repository@sha256:...``), as a CRI pull names it: the
kubelet then finds it by tag and by digest (``ImageStatus``, a pod pinned by digest, the repo
digests ``ListImages`` reports) and pulls nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from warmstart.agent.api import (
    ContainerdImport,
    LinkSummary,
    ModelMaterialisation,
    PrewarmResponse,
)
from warmstart.agent.import_grants import IMPORT_HEADER, ImportGrants
from warmstart.agent.linking import ImageLinker, ensure_stored
from warmstart.aio import run_all
from warmstart.backoff import Backoff
from warmstart.containerd.ctr import (
    CRI_NAMESPACE,
    ContainerdTarget,
    Ctr,
    CtrError,
    digest_name,
    last_error_line,
    pull_args,
)
from warmstart.containerd.hosts import agent_only, write_hosts_dir
from warmstart.containerd.images import ContainerdImages
from warmstart.containerd.pull_output import parse_pull_output
from warmstart.fetch.interfaces import ClientIdentity, Fetcher, FetchError, ManifestResult
from warmstart.model.materialise import ModelMaterialiser
from warmstart.oci import (
    Descriptor,
    Digest,
    ImageIndex,
    ImageManifest,
    Platform,
    Reference,
)
from warmstart.oci import mediatypes as mt
from warmstart.oci.manifest import parse_manifest
from warmstart.oci.model import InvalidModel, ModelLayout, is_model_candidate, model_layout
from warmstart.oci.resolve import resolve_image
from warmstart.oci.tiers import Tier
from warmstart.store import ContentStore

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 4
DEFAULT_IMPORT_TIMEOUT = 3600.0
IMPORT_ATTEMPTS = 3  # ctr pulls per hot import when one breaks mid-body
IMPORT_RETRY_BACKOFF = Backoff(0.5, cap=2.0, factor=4.0)  # 0.5 s before the 2nd attempt, 2 s after
# What ctr prints when a body it was reading broke (the agent restarted, a connection reset):
# the next attempt resumes from what containerd already has. Anything else is final.
TRANSIENT_PULL_ERRORS = (
    "unexpected eof",
    "failed to read expected number of bytes",
    "connection reset",
)
STORE_SETTLE_SECONDS = 10.0
IMAGE_CONFIGS = frozenset({mt.DOCKER_CONFIG, mt.OCI_CONFIG})


class HotImportUnavailable(FetchError):
    """``hot`` was asked of an agent that has no containerd configured."""

    status = 409
    code = "UNSUPPORTED"


class HotImportFailed(FetchError):
    """``ctr images pull`` through the agent failed, or left the image not unpacked."""


# -- pure helpers ---------------------------------------------------------------------------------


def image_blobs(manifest: ImageManifest) -> list[Descriptor]:
    """The manifest's blobs, each digest once, config first."""
    seen: dict[Digest, Descriptor] = {}
    for desc in manifest.blobs:
        seen.setdefault(desc.digest, desc)
    return list(seen.values())


def is_container_image(manifest: ImageManifest) -> bool:
    return manifest.config.media_type in IMAGE_CONFIGS


def transient_pull_failure(returncode: int, stderr: str) -> bool:
    """Whether a failed ``ctr images pull`` broke mid-body (worth another attempt) rather than
    failing for a reason another attempt would meet again (not found, denied, 503, bad
    arguments)."""
    if returncode == 0:
        return False
    text = stderr.lower()
    return any(marker in text for marker in TRANSIENT_PULL_ERRORS)


# -- the pre-warmer (I/O through the Fetcher, the store and ctr) --------------------------------


@dataclass
class _Tally:
    blobs: int = 0
    bytes_total: int = 0
    by_source: dict[str, int] = field(default_factory=dict)

    def add(self, source: str, size: int) -> None:
        self.blobs += 1
        self.bytes_total += size
        self.by_source[source] = self.by_source.get(source, 0) + size


class ContainerdPrewarmer:
    """Implements the agent's ``Prewarmer`` protocol (``warmstart.agent.hooks``)."""

    def __init__(
        self,
        fetcher: Fetcher,
        store: ContentStore | None,
        *,
        agent_url: str,
        containerd: ContainerdTarget | None = None,
        grants: ImportGrants | None = None,
        linker: ImageLinker | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        import_timeout: float = DEFAULT_IMPORT_TIMEOUT,
        settle_seconds: float = STORE_SETTLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._fetcher = fetcher
        self._store = store
        self._agent_url = agent_url.rstrip("/")
        self._containerd = containerd
        self._grants = grants if grants is not None else ImportGrants()
        self._linker = linker
        self._concurrency = concurrency
        self._import_timeout = import_timeout
        self._settle_seconds = settle_seconds
        self._clock = clock
        self._sleep = sleep
        self._materialiser: ModelMaterialiser | None = None

    @property
    def containerd(self) -> ContainerdTarget | None:
        return self._containerd

    async def prewarm(
        self,
        ref: Reference,
        platform: Platform | None,
        hot: bool,
        *,
        client: ClientIdentity | None = None,
        model: bool = False,
    ) -> PrewarmResponse:
        started = self._clock()
        identity = client or ClientIdentity()
        top, image = await self._resolve(ref, platform, identity)
        assert isinstance(image.manifest, ImageManifest)
        layout = self._model_layout(ref, image.manifest, model)
        if hot and layout is None and not is_container_image(image.manifest):
            raise ValueError(
                f"{ref} is not a container image (config {image.manifest.config.media_type}): "
                "it can be pre-warmed, but not imported into containerd"
            )
        if hot and layout is None and self._containerd is None:
            raise HotImportUnavailable(
                "this agent has no containerd configured (containerd_socket): "
                "pre-warm without hot, or configure it"
            )
        if hot and layout is not None and self._store is None:
            raise HotImportUnavailable("this agent has no store to materialise models in")
        manifests = [top] if top is image else [top, image]
        blobs = image_blobs(image.manifest)
        chosen = platform.normalized() if (platform and top is not image) else None
        if top is not image and chosen is None:
            chosen = Platform.host()
        tally = _Tally()
        holder = f"prewarm:{os.getpid()}:{id(self)}:{ref}"
        pin = (
            self._store.pin(
                holder, [m.digest for m in manifests] + [b.digest for b in blobs], str(ref)
            )
            if self._store is not None
            else None
        )
        try:
            self._keep_manifests(manifests)
            await self._fetch_all(ref, blobs, identity, tally)
            if self._store is not None:
                self._store.record_image(
                    str(ref),
                    top.digest,
                    [(m.digest, len(m.body), m.media_type) for m in manifests]
                    + [(b.digest, b.size, b.media_type) for b in blobs],
                    str(chosen) if chosen else None,
                    model_format=layout.format.value if layout is not None else None,
                )
            warm_seconds = self._clock() - started
            containerd = None
            materialised = None
            if hot and layout is not None:
                materialised = await self._materialise(ref, image.digest, layout)
            elif hot:
                containerd = await self._import(ref, chosen, top.digest, identity, blobs)
        finally:
            if pin is not None:
                pin.release()
        return PrewarmResponse(
            reference=str(ref),
            digest=str(top.digest),
            manifest_digest=str(image.digest),
            platform=str(chosen) if chosen else None,
            blobs=tally.blobs,
            bytes=tally.bytes_total,
            sources=dict(sorted(tally.by_source.items())),
            warm_seconds=round(warm_seconds, 3),
            seconds=round(self._clock() - started, 3),
            hot=hot,
            containerd=containerd,
            model_format=layout.format.value if layout is not None else None,
            model=materialised,
        )

    # -- models ----------------------------------------------------------------------------

    @staticmethod
    def _model_layout(ref: Reference, manifest: ImageManifest, model: bool) -> ModelLayout | None:
        """The model's layout when ``ref`` is (asked for as) a model; None for an image. An
        artifact that is no container image is taken as a model if it reads as one."""
        if model:
            try:
                return model_layout(manifest)
            except InvalidModel as e:
                raise InvalidModel(
                    f"{ref} is not a model this agent can materialise: {e}"
                ) from None
        if not is_model_candidate(manifest):
            return None
        try:
            return model_layout(manifest, modelcar=False)
        except InvalidModel:
            return None  # some other artifact (a signature, a chart): pre-warmed as it is

    async def _materialise(
        self, ref: Reference, manifest_digest: Digest, layout: ModelLayout
    ) -> ModelMaterialisation:
        assert self._store is not None
        if self._materialiser is None:
            self._materialiser = ModelMaterialiser(self._store)
        done = await self._materialiser.materialise(manifest_digest, layout)
        link = self._store.link_model_reference(str(ref), manifest_digest)
        return ModelMaterialisation(
            path=str(done.path),
            reference_path=str(link),
            files=done.files,
            linked_bytes=done.linked_bytes,
            extracted_bytes=done.extracted_bytes,
            seconds=round(done.seconds, 3),
            built=done.built,
        )

    # -- warm ------------------------------------------------------------------------------

    async def _manifest(
        self, ref: Reference, reference: str, identity: ClientIdentity
    ) -> _Manifest:
        result = await self._fetcher.get_manifest(
            ref.registry, ref.repository, reference, mt.MANIFEST_ACCEPT, identity
        )
        return _Manifest(result, parse_manifest(result.body, result.media_type))

    async def _resolve(
        self, ref: Reference, platform: Platform | None, identity: ClientIdentity
    ) -> tuple[_Manifest, _Manifest]:
        resolved = await resolve_image(
            ref,
            (platform or Platform.host()).normalized(),
            lambda digest: self._manifest(
                ref, ref.reference if digest is None else str(digest), identity
            ),
        )
        return resolved.top, resolved.image

    def _keep_manifests(self, manifests: list[_Manifest]) -> None:
        if self._store is None:
            return
        for m in manifests:
            if not self._store.has(m.digest):
                self._store.put_bytes(m.digest, m.body, m.media_type)

    async def _fetch_all(
        self, ref: Reference, blobs: list[Descriptor], identity: ClientIdentity, tally: _Tally
    ) -> None:
        limit = asyncio.Semaphore(self._concurrency)

        async def one(desc: Descriptor) -> None:
            async with limit:
                source = await self._fetch_blob(ref, desc, identity)
                tally.add(source, desc.size)

        tasks = [asyncio.create_task(one(d)) for d in blobs]
        await run_all(tasks)

    async def _fetch_blob(self, ref: Reference, desc: Descriptor, identity: ClientIdentity) -> str:
        if self._store is None:  # nothing to keep it in: read it through once
            result = await self._fetcher.get_blob(
                ref.registry, ref.repository, desc.digest, identity
            )
            if result.open_stream is not None:
                async for _chunk in result.open_stream(0):
                    pass
            return result.source
        return await ensure_stored(
            self._fetcher,
            self._store,
            ref.registry,
            ref.repository,
            desc,
            identity,
            self._settle_seconds,
        )

    # -- hot -------------------------------------------------------------------------------

    async def _import(
        self,
        ref: Reference,
        platform: Platform | None,
        digest: Digest,
        identity: ClientIdentity,
        blobs: list[Descriptor],
    ) -> ContainerdImport:
        target = self._containerd
        assert target is not None
        ctr = target.ctr()
        started = self._clock()
        # Every blob is stored and pinned: put them in containerd's content store, so the pull
        # below transfers nothing and only unpacks.
        linked = await self._linker.link_stored(blobs) if self._linker is not None else None
        pull_started = self._clock()
        # ctr sends no credentials: a one-time grant carries the asking client's identity.
        with (
            self._grants.grant(identity) as token,
            tempfile.TemporaryDirectory(prefix="warmstart-hosts-") as tmp,
        ):
            hosts_dir = Path(tmp)
            headers = ((IMPORT_HEADER, token),)
            write_hosts_dir(hosts_dir, [agent_only(ref.registry, self._agent_url, headers)])
            attempts = 0
            while True:
                attempts += 1
                try:
                    result = await ctr.run(
                        *pull_args(
                            str(ref),
                            hosts_dir,
                            str(platform) if platform is not None else None,
                            target.snapshotter,
                        ),
                        time_limit=self._import_timeout,
                    )
                except CtrError as e:
                    raise HotImportFailed(str(e)) from None
                except TimeoutError:
                    raise HotImportFailed(
                        f"ctr images pull {ref} did not finish in {self._import_timeout:.0f}s"
                    ) from None
                if attempts >= IMPORT_ATTEMPTS or not transient_pull_failure(
                    result.returncode, result.stderr
                ):
                    break
                delay = IMPORT_RETRY_BACKOFF.ceiling(attempts - 1)
                log.warning(
                    "hot import of %s: ctr pull broke mid-transfer (%s); attempt %d of %d in "
                    "%.1f s",
                    ref,
                    last_error_line(result.stderr),
                    attempts + 1,
                    IMPORT_ATTEMPTS,
                    delay,
                )
                await self._sleep(delay)
        pull_seconds = self._clock() - pull_started
        if result.returncode != 0:
            reason = last_error_line(result.stderr) or f"exit status {result.returncode}"
            tries = f" (after {attempts} attempts)" if attempts > 1 else ""
            raise HotImportFailed(f"importing {ref} into containerd failed{tries}: {reason}")
        try:
            state = await ContainerdImages(ctr, target.snapshotter).image(str(ref))
        except CtrError as e:
            raise HotImportFailed(str(e)) from None
        if state is None or state.tier != Tier.HOT:
            shown = "missing" if state is None else f"{state.status}, unpacked={state.unpacked}"
            raise HotImportFailed(f"{ref} is not unpacked in containerd after the import ({shown})")
        if target.namespace == CRI_NAMESPACE and ref.digest is None:
            await self._name_by_digest(ctr, str(ref), digest_name(ref.name, state.digest))
        return ContainerdImport(
            namespace=target.namespace,
            reference=state.reference,
            digest=state.digest,
            unpacked=state.unpacked,
            tag_moved=state.digest != str(digest),
            link=LinkSummary.model_validate(linked.to_json()) if linked is not None else None,
            pull_seconds=round(pull_seconds, 3),
            pull_attempts=attempts,
            unpack_seconds=round(parse_pull_output(result.stdout).unpack_seconds, 3),
            seconds=round(self._clock() - started, 3),
        )

    async def _name_by_digest(self, ctr: Ctr, reference: str, by_digest: str) -> None:
        """Give the imported image its digest name too (``ctr images tag --force``). The image
        is hot either way: a failure here is one warning line."""
        try:
            result = await ctr.run("images", "tag", "--force", reference, by_digest)
        except (CtrError, TimeoutError) as e:
            log.warning("naming %s %s failed: %s", reference, by_digest, e)
            return
        if result.returncode != 0:
            reason = last_error_line(result.stderr) or f"exit status {result.returncode}"
            log.warning("naming %s %s failed: %s", reference, by_digest, reason)


@dataclass(frozen=True)
class _Manifest:
    result: ManifestResult
    manifest: ImageManifest | ImageIndex

    @property
    def digest(self) -> Digest:
        return self.result.digest

    @property
    def body(self) -> bytes:
        return self.result.body

    @property
    def media_type(self) -> str:
        return self.result.media_type
