"""Download a model artifact from an OCI registry into the model directory before loading.

What KServe's storage initializer or SageMaker's model download do for a replica that has no
node agent: ``WARMSTART_MODEL_SOURCE`` names the artifact (``http[s]://HOST[:PORT]/REPO:TAG``
or ``.../REPO@sha256:HEX``); the replica (in its container, so over its node's network) fetches
the manifest, then every layer's blob, streaming each into ``<model dir>/<file path>`` while it
hashes it, and keeps a file only when its sha256 and size are the descriptor's. Raw layers only:
CNCF ModelPack ``*.raw`` layers (``org.cncf.model.filepath``) and ORAS-titled files
(``org.opencontainers.image.title``), which is what ``warmstart model push`` makes; a tar layer
is refused. Anonymous pulls only (a registry that answers 401 is an error). File names pass the
same rule as the agent's (:func:`check_path`: relative, no ``..``, no backslash or control
characters).

Standard library only: this module runs inside the example image.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
FILEPATH_ANNOTATIONS = ("org.cncf.model.filepath", "org.cnai.model.filepath")
TITLE_ANNOTATION = "org.opencontainers.image.title"
# ModelPack layers (and the older vnd.cnai drafts); ``.raw`` is the file's bytes as they are.
_MODELPACK_LAYER = re.compile(
    r"^application/vnd\.(?:cncf|cnai)\.model\.(weight|weight\.config|doc|code|dataset)\.v1\.(.+)$"
)
_TAR_SUFFIXES = ("tar", "tar+gzip", "tar+zstd", "tar.gzip", "tar+gz")
_SOURCE = re.compile(
    r"^(?P<scheme>https?)://(?P<host>[^/\s@]+)/(?P<repo>[a-z0-9]+(?:(?:[._]|__|-+|/)[a-z0-9]+)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
MAX_MANIFEST_BYTES = 4 << 20
MAX_PATH_CHARS = 4096
MAX_NAME_BYTES = 255
DEFAULT_THREADS = 4
DEFAULT_TIMEOUT = 60.0  # seconds per socket operation
CHUNK = 1 << 20

Opener = Callable[[urllib.request.Request, float], io.BufferedIOBase]


class DownloadError(Exception):
    """The artifact could not be downloaded; the message is one line."""


@dataclass(frozen=True)
class ModelSource:
    """Where the artifact is: ``scheme://host/repository`` and a tag or digest."""

    scheme: str
    host: str
    repository: str
    reference: str  # the tag, or ``sha256:<hex>``

    @property
    def by_digest(self) -> bool:
        return self.reference.startswith("sha256:")

    def url(self, kind: str, name: str) -> str:
        """``/v2/<repository>/<kind>/<name>`` on the registry (kind: manifests or blobs)."""
        return f"{self.scheme}://{self.host}/v2/{self.repository}/{kind}/{name}"

    def __str__(self) -> str:
        sep = "@" if self.by_digest else ":"
        return f"{self.scheme}://{self.host}/{self.repository}{sep}{self.reference}"


def parse_source(text: str) -> ModelSource:
    """``http[s]://HOST[:PORT]/REPO[:TAG][@sha256:HEX]`` (tag ``latest`` when neither)."""
    m = _SOURCE.match(text.strip())
    if m is None:
        raise DownloadError(
            f"model source {text[:200]!r} is not http[s]://HOST[:PORT]/REPOSITORY[:TAG]"
            "[@sha256:HEX]"
        )
    reference = m.group("digest") or m.group("tag") or "latest"
    return ModelSource(m.group("scheme"), m.group("host"), m.group("repo"), reference)


def check_path(name: object, what: str = "file name") -> str:
    """``name`` as a clean relative path (``./a//b`` -> ``a/b``), or :class:`DownloadError`:
    the agent's rule (``warmstart.oci.model_paths.safe_relative_path``), for a replica that
    cannot import it."""
    if not isinstance(name, str) or not name:
        raise DownloadError(f"{what} is empty")
    shown = repr(name[:80])
    if len(name) > MAX_PATH_CHARS:
        raise DownloadError(f"{what} {shown}... is longer than {MAX_PATH_CHARS} characters")
    if any(ord(c) < 0x20 or c == "\x7f" for c in name):
        raise DownloadError(f"{what} {shown} contains control characters")
    if "\\" in name:
        raise DownloadError(f"{what} {shown} contains a backslash")
    if name.startswith("/"):
        raise DownloadError(f"{what} {shown} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise DownloadError(f"{what} {shown} leaves the model directory ('..')")
    if not parts:
        raise DownloadError(f"{what} {shown} names no file")
    for part in parts:
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise DownloadError(f"{what} {shown} has a component over {MAX_NAME_BYTES} bytes")
    return "/".join(parts)


@dataclass(frozen=True)
class LayerFile:
    """One raw layer: the file it becomes, its blob and size."""

    path: str
    digest: str  # sha256:<hex>
    size: int


def _layer_name(index: int, layer: Mapping[str, Any]) -> str:
    media_type = str(layer.get("mediaType", ""))
    annotations = layer.get("annotations") or {}
    if not isinstance(annotations, Mapping):
        raise DownloadError(f"layers[{index}] has annotations that are not an object")
    packing = None
    match = _MODELPACK_LAYER.match(media_type)
    if match is not None:
        packing = match.group(2)
    if (packing is not None and packing != "raw") or media_type.endswith(_TAR_SUFFIXES):
        raise DownloadError(
            f"layers[{index}] is a {packing or 'tar'} layer ({media_type[:100]}): this "
            "downloader takes raw files only"
        )
    for key in (*FILEPATH_ANNOTATIONS, TITLE_ANNOTATION):
        if key in annotations:
            return check_path(annotations[key], f"layers[{index}] file path")
    raise DownloadError(
        f"layers[{index}] names no file ({FILEPATH_ANNOTATIONS[0]} or {TITLE_ANNOTATION})"
    )


def plan_files(manifest: Mapping[str, Any]) -> list[LayerFile]:
    """The files a model manifest's layers become (pure): raw layers named by their
    annotations; two layers may not claim one file."""
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        raise DownloadError("the manifest has no layers: there is no model in it")
    files: list[LayerFile] = []
    seen: set[str] = set()
    for i, layer in enumerate(layers):
        if not isinstance(layer, Mapping):
            raise DownloadError(f"layers[{i}] is not an object")
        path = _layer_name(i, layer)
        digest, size = layer.get("digest"), layer.get("size")
        if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise DownloadError(f"layers[{i}] has digest {str(digest)[:80]!r}, not sha256:<hex>")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise DownloadError(f"layers[{i}] has size {size!r}")
        # One name for two files, or a file where another layer needs a directory.
        if any(p == path or p.startswith(path + "/") or path.startswith(p + "/") for p in seen):
            raise DownloadError(f"layers[{i}]: two layers claim {path!r}")
        seen.add(path)
        files.append(LayerFile(path, digest, size))
    return files


@dataclass(frozen=True)
class DownloadReport:
    """What a download fetched and how long it took."""

    source: str
    files: int
    bytes: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        return (
            f"downloaded {self.files} files, {self.bytes} bytes from {self.source} in "
            f"{self.seconds:.2f} s ({self.mb_per_s:.0f} MB/s)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "files": self.files,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 4),
        }


def _urlopen(request: urllib.request.Request, timeout: float) -> io.BufferedIOBase:
    response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=timeout)
    return response


def _open(
    opener: Opener, url: str, accept: str | None, timeout: float, what: str
) -> io.BufferedIOBase:
    headers = {"User-Agent": "warmstart-model-server"}
    if accept:
        headers["Accept"] = accept
    try:
        return opener(urllib.request.Request(url, headers=headers), timeout)
    except urllib.error.HTTPError as e:
        e.close()
        hint = " (this downloader pulls anonymously)" if e.code in (401, 403) else ""
        raise DownloadError(f"{what}: HTTP {e.code} from {url}{hint}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"{what}: cannot reach {url}: {reason}") from None


def fetch_manifest(
    source: ModelSource, *, opener: Opener = _urlopen, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, Any]:
    """The artifact's manifest (checked against the digest when the source names one)."""
    with _open(opener, source.url("manifests", source.reference), MANIFEST_ACCEPT, timeout,
               "manifest") as response:  # fmt: skip
        body = response.read(MAX_MANIFEST_BYTES + 1)
    if len(body) > MAX_MANIFEST_BYTES:
        raise DownloadError(f"the manifest of {source} is over {MAX_MANIFEST_BYTES} bytes")
    if source.by_digest:
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        if actual != source.reference:
            raise DownloadError(f"the manifest of {source} has digest {actual}")
    try:
        manifest = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DownloadError(f"the manifest of {source} is not JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise DownloadError(f"the manifest of {source} is not a JSON object")
    if "manifests" in manifest:
        raise DownloadError(f"{source} is an index, not a model artifact's manifest")
    return manifest


def fetch_file(
    source: ModelSource,
    file: LayerFile,
    dest: Path,
    *,
    opener: Opener = _urlopen,
    timeout: float = DEFAULT_TIMEOUT,
    chunk: int = CHUNK,
) -> int:
    """Stream one blob into ``dest/<file.path>``, hashing it; kept only if it is the blob."""
    target = dest / file.path
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name[:64]}.", suffix=".part", dir=target.parent)
    hasher = hashlib.sha256()
    size = 0
    try:
        with (
            os.fdopen(fd, "wb") as out,
            _open(opener, source.url("blobs", file.digest), None, timeout, file.path) as body,
        ):
            buf = bytearray(chunk)
            view = memoryview(buf)
            while True:
                try:
                    n = body.readinto(buf)
                except OSError as e:
                    raise DownloadError(f"{file.path}: the transfer broke: {e}") from None
                if not n:
                    break
                size += n
                if size > file.size:
                    raise DownloadError(f"{file.path}: the registry sent more than {file.size} B")
                hasher.update(view[:n])
                out.write(view[:n])
        actual = "sha256:" + hasher.hexdigest()
        if size != file.size:
            raise DownloadError(f"{file.path}: got {size} of {file.size} bytes")
        if actual != file.digest:
            raise DownloadError(f"{file.path}: got sha256 {actual}, expected {file.digest}")
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return size


def download_model(
    source: ModelSource,
    dest: Path,
    *,
    threads: int = DEFAULT_THREADS,
    opener: Opener = _urlopen,
    timeout: float = DEFAULT_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
) -> DownloadReport:
    """The artifact's files into ``dest`` (created if needed), ``threads`` blobs at a time."""
    started = clock()
    files = plan_files(fetch_manifest(source, opener=opener, timeout=timeout))
    dest.mkdir(parents=True, exist_ok=True)
    # Largest first: with a few big shards and small configs, the link stays busy.
    ordered: Sequence[LayerFile] = sorted(files, key=lambda f: -f.size)
    with ThreadPoolExecutor(max(1, min(threads, len(ordered)))) as pool:
        sizes = list(
            pool.map(lambda f: fetch_file(source, f, dest, opener=opener, timeout=timeout), ordered)
        )
    return DownloadReport(str(source), len(files), sum(sizes), clock() - started)


__all__ = [
    "DownloadError",
    "DownloadReport",
    "LayerFile",
    "ModelSource",
    "check_path",
    "download_model",
    "fetch_file",
    "fetch_manifest",
    "parse_source",
    "plan_files",
]
