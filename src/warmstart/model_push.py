"""Push a local model directory to a registry as a CNCF ModelPack artifact.

The directory's files (:mod:`.model_dir`) become one raw layer each (:mod:`.oci.modelpack`).
Each file is read twice at most: once to hash it (the digest names the blob, lets a HEAD find
it in the registry, and goes into the manifest), then, only if the registry lacks it, once more
while it is uploaded in chunks (:meth:`RegistryClient.push_blob`). Hashing while uploading would
save the first read of new files but loses the HEAD that makes a second push send nothing; the
registry still checks every upload against its digest at the final PUT. Files are hashed and
pushed ``concurrency`` at a time (hashing in threads); files with the same bytes are pushed once.
Then the config blob and the manifest, by tag.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from warmstart.aio import run_all
from warmstart.model_dir import LocalFile, ModelDirError, scan_model_dir
from warmstart.oci import Digest, InvalidReference, Reference
from warmstart.oci.modelpack import ModelArtifact, ModelFile, ModelInfo, build_artifact
from warmstart.registry import RegistryClient, bytes_reader, file_reader

DEFAULT_PUSH_CONCURRENCY = 3
HASH_BLOCK = 4 << 20


class PushProgress(Protocol):
    """What a model push reports while it runs (progress bars, a log, a test recorder)."""

    def started(self, ref: Reference, files: Sequence[LocalFile]) -> None: ...
    def hashed(self, file: LocalFile, nbytes: int) -> None: ...  # nbytes more were hashed
    def pushing(self, file: LocalFile, position: int) -> None: ...  # bytes sent or held
    def finished(self, file: LocalFile, existed: bool) -> None: ...


class _SilentProgress:
    def started(self, ref: Reference, files: Sequence[LocalFile]) -> None:
        pass

    def hashed(self, file: LocalFile, nbytes: int) -> None:
        pass

    def pushing(self, file: LocalFile, position: int) -> None:
        pass

    def finished(self, file: LocalFile, existed: bool) -> None:
        pass


@dataclass
class ModelPushResult:
    reference: Reference
    digest: Digest | None = None  # the manifest's
    artifact: ModelArtifact | None = field(default=None, repr=False)
    files: int = 0
    bytes_total: int = 0  # the files' bytes
    bytes_uploaded: int = 0  # of them, put into the registry by this push
    bytes_skipped: int = 0  # of them, already there (or the same bytes as another file)
    bytes_sent: int = 0  # body bytes sent, resends after failures included
    hidden: list[str] = field(default_factory=list)  # dot-entries left out
    seconds: float = 0.0

    @property
    def pinned(self) -> str:
        """``REF@sha256:...``: the reference with the manifest's digest."""
        assert self.digest is not None
        return str(self.reference.with_digest(self.digest))


def hash_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> tuple[Digest, int]:
    """(sha256 digest, size) of a file, read once in :data:`HASH_BLOCK` blocks (blocking);
    ``on_bytes(n)`` after each block. A file that cannot be read is a :class:`ModelDirError`."""
    hasher = hashlib.sha256()
    buf = bytearray(HASH_BLOCK)
    view = memoryview(buf)
    size = 0
    try:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                hasher.update(view[:n])
                size += n
                if on_bytes is not None:
                    on_bytes(n)
    except OSError as e:
        raise ModelDirError(f"cannot read {path}: {e.strerror or e}") from None
    return Digest("sha256", hasher.hexdigest()), size


class ModelPusher:
    """Pushes model directories through a :class:`RegistryClient`."""

    def __init__(
        self,
        client: RegistryClient,
        *,
        concurrency: int = DEFAULT_PUSH_CONCURRENCY,
        progress: PushProgress | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._client = client
        self._concurrency = concurrency
        self._progress = progress or _SilentProgress()

    async def push(
        self, directory: Path, ref: Reference, info: ModelInfo | None = None
    ) -> ModelPushResult:
        """Push ``directory`` as ``ref`` (a tag). ``info.name`` defaults to the directory's
        name."""
        started = time.monotonic()
        if ref.digest is not None:
            raise InvalidReference(
                f"push to a tag, not a digest ({ref}): the digest comes from the content"
            )
        model = await asyncio.to_thread(scan_model_dir, directory)
        if info is None or info.name is None:
            info = ModelInfo(name=model.name or None, format=info.format if info else None)
        result = ModelPushResult(ref, files=len(model.files), hidden=list(model.hidden))
        self._progress.started(ref, model.files)
        files = await self._push_files(ref, model.files, result)
        artifact = build_artifact(files, info)
        config = await self._client.push_blob(
            ref.registry,
            ref.repository,
            artifact.config_descriptor.digest,
            artifact.config_descriptor.size,
            bytes_reader(artifact.config),
            name="config",
        )
        result.bytes_sent += config.bytes_sent
        result.digest = await self._client.put_manifest(ref, artifact.manifest, artifact.media_type)
        result.artifact = artifact
        result.seconds = time.monotonic() - started
        return result

    async def _push_files(
        self, ref: Reference, files: Sequence[LocalFile], result: ModelPushResult
    ) -> list[ModelFile]:
        limit = asyncio.Semaphore(self._concurrency)
        loop = asyncio.get_running_loop()
        locks: dict[Digest, asyncio.Lock] = {}
        pushed: set[Digest] = set()
        out: list[ModelFile] = []

        async def one(file: LocalFile) -> None:
            async with limit:

                def hashed(n: int) -> None:
                    loop.call_soon_threadsafe(self._progress.hashed, file, n)

                digest, size = await asyncio.to_thread(hash_file, file.source, hashed)
                out.append(ModelFile(file.path, digest, size))
                result.bytes_total += size
                async with locks.setdefault(digest, asyncio.Lock()):
                    if digest in pushed:  # the same bytes as a file pushed already
                        result.bytes_skipped += size
                        self._progress.finished(file, True)
                        return
                    blob = await self._client.push_blob(
                        ref.registry,
                        ref.repository,
                        digest,
                        size,
                        file_reader(file.source),
                        name=file.path,
                        on_progress=lambda position: self._progress.pushing(file, position),
                    )
                    pushed.add(digest)
                result.bytes_sent += blob.bytes_sent
                result.bytes_uploaded += blob.uploaded
                result.bytes_skipped += size - blob.uploaded
                self._progress.finished(file, blob.existed)

        await run_all([asyncio.create_task(one(f)) for f in files])
        return out


__all__ = [
    "DEFAULT_PUSH_CONCURRENCY",
    "ModelPushResult",
    "ModelPusher",
    "PushProgress",
    "hash_file",
]
