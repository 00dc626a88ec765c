"""Build real OCI images with ``umoci`` and push them with ``skopeo`` to a test registry.

Layers are files of seeded random (incompressible) bytes, inserted with ``umoci insert`` with
fixed timestamps, so the same (seed, size) always gives the same layer digest: two images share a
layer exactly when they use the same :class:`Layer` seed and size. Everything returned is read
back from the registry (manifest GET with an Accept header), not computed locally.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .http_client import RegistryClient, RegistryLike, Response, sha256_digest
from .tools import require_tool

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_ACCEPT = f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"
INDEX_ACCEPT = f"{OCI_INDEX}, {DOCKER_LIST}"

FIXED_TIME = "2024-01-01T00:00:00Z"
_FIXED_EPOCH = 1704067200  # FIXED_TIME as a Unix timestamp
_SKOPEO_TIMEOUT = 120


@dataclass(frozen=True)
class Layer:
    """A layer holding one file of ``size`` seeded random bytes.

    The file is ``/<seed>.bin``; equal (seed, size) -> equal bytes -> equal layer digest.
    """

    size: int
    seed: str

    @property
    def filename(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]", "_", self.seed) + ".bin"


def payload(seed: str, size: int) -> bytes:
    """The (uncompressed) file content of ``Layer(size, seed)``."""
    return random.Random(seed).randbytes(size)


def _layers(layer_sizes: Sequence[int | Layer], seed: int | str) -> list[Layer]:
    return [
        item if isinstance(item, Layer) else Layer(int(item), f"{seed}-{i}")
        for i, item in enumerate(layer_sizes)
    ]


@dataclass(frozen=True)
class BuiltImage:
    reference: str  # "127.0.0.1:PORT/repo:tag" (or "...@sha256:..." for an index child)
    registry_host: str
    repository: str
    tag: str | None
    manifest_digest: str
    media_type: str
    manifest: bytes  # the manifest bytes exactly as the registry serves them
    config_digest: str
    config_size: int
    layer_digests: tuple[str, ...]
    layer_sizes: tuple[int, ...]  # blob (compressed) sizes, as in the manifest
    layer_media_types: tuple[str, ...]
    layers: tuple[Layer, ...]  # what was inserted (payload(seed, size) regenerates a file)
    architecture: str
    os: str

    @property
    def manifest_size(self) -> int:
        return len(self.manifest)

    @property
    def digest_reference(self) -> str:
        return f"{self.registry_host}/{self.repository}@{self.manifest_digest}"

    @property
    def blobs(self) -> dict[str, int]:
        """Config and layer blobs: digest -> size."""
        out = {self.config_digest: self.config_size}
        out.update(zip(self.layer_digests, self.layer_sizes, strict=True))
        return out

    @property
    def total_size(self) -> int:
        return self.manifest_size + sum(self.blobs.values())

    @property
    def platform(self) -> str:
        return f"{self.os}/{self.architecture}"


@dataclass(frozen=True)
class BuiltIndex:
    reference: str
    registry_host: str
    repository: str
    tag: str
    index_digest: str
    media_type: str
    index: bytes
    manifests: dict[str, BuiltImage] = field(default_factory=dict)  # "linux/amd64" -> image

    @property
    def platform_digests(self) -> dict[str, str]:
        return {p: img.manifest_digest for p, img in self.manifests.items()}


# -- running the tools ---------------------------------------------------------------------


def _run(args: Sequence[str | os.PathLike[str]], timeout: float = _SKOPEO_TIMEOUT) -> str:
    proc = subprocess.run(
        [str(a) for a in args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


def skopeo_dest_args(registry: RegistryLike, *, anonymous: bool = False) -> list[str]:
    """skopeo ``--dest-*`` options to reach ``registry``."""
    args: list[str] = []
    if registry.url.startswith("https://"):
        if registry.cert_dir is not None:
            args.append(f"--dest-cert-dir={registry.cert_dir}")
        else:
            args.append("--dest-tls-verify=false")
    else:
        args.append("--dest-tls-verify=false")
    if registry.username is not None and not anonymous:
        args.append(f"--dest-creds={registry.username}:{registry.password or ''}")
    else:
        args.append("--dest-no-creds")
    return args


def skopeo_src_args(registry: RegistryLike, *, anonymous: bool = False) -> list[str]:
    """The same as :func:`skopeo_dest_args` for the source side (``--src-*``)."""
    return [
        a.replace("--dest-", "--src-", 1) for a in skopeo_dest_args(registry, anonymous=anonymous)
    ]


def skopeo_args(registry: RegistryLike, *, anonymous: bool = False) -> list[str]:
    """Options for single-image commands (``skopeo inspect``): ``--cert-dir``/``--creds``..."""
    return [a.replace("--dest-", "--", 1) for a in skopeo_dest_args(registry, anonymous=anonymous)]


def _umoci_build(
    layout: Path, tag: str, layers: Sequence[Layer], arch: str, os_name: str, src: Path
) -> None:
    umoci = require_tool("umoci")
    _run([umoci, "new", "--image", f"{layout}:{tag}"])
    for layer in layers:
        file = src / layer.filename
        if not file.exists():
            file.write_bytes(payload(layer.seed, layer.size))
            file.chmod(0o644)
            os.utime(file, (_FIXED_EPOCH, _FIXED_EPOCH))
        _run(
            [
                umoci,
                "insert",
                "--image",
                f"{layout}:{tag}",
                "--history.created",
                FIXED_TIME,
                "--history.created_by",
                f"warmstart test layer {layer.seed} ({layer.size} bytes)",
                file,
                f"/{layer.filename}",
            ]
        )
    _run(
        [
            umoci,
            "config",
            "--image",
            f"{layout}:{tag}",
            "--no-history",
            "--created",
            FIXED_TIME,
            "--architecture",
            arch,
            "--os",
            os_name,
            "--config.cmd",
            "/bin/true",
        ]
    )


def _push(
    registry: RegistryLike, layout: Path, src_tag: str, dest: str, *, all_images: bool
) -> None:
    skopeo = require_tool("skopeo")
    args: list[str | os.PathLike[str]] = [skopeo, "--insecure-policy", "copy", "--quiet"]
    if all_images:
        args.append("--all")
    args += ["--preserve-digests", *skopeo_dest_args(registry)]
    args += [f"oci:{layout}:{src_tag}", f"docker://{dest}"]
    _run(args)


def _read_image(
    client: RegistryClient,
    registry: RegistryLike,
    repo: str,
    reference: str,
    layers: Sequence[Layer],
) -> BuiltImage:
    resp = client.get_manifest(repo, reference, IMAGE_ACCEPT)
    if resp.status != 200:
        raise RuntimeError(f"GET manifest {repo}:{reference} -> {resp.status} {resp.body[:300]!r}")
    digest = resp.header("Docker-Content-Digest") or ""
    if digest != sha256_digest(resp.body):
        raise RuntimeError(f"registry digest {digest} != sha256 of the manifest body")
    manifest = json.loads(resp.body)
    media_type = (resp.header("Content-Type") or "").split(";")[0].strip()
    config = json.loads(_ok(client.get_blob(repo, manifest["config"]["digest"])).body)
    is_tag = not reference.startswith("sha256:")
    return BuiltImage(
        reference=f"{registry.host}/{repo}{':' if is_tag else '@'}{reference}",
        registry_host=registry.host,
        repository=repo,
        tag=reference if is_tag else None,
        manifest_digest=digest,
        media_type=media_type,
        manifest=resp.body,
        config_digest=manifest["config"]["digest"],
        config_size=int(manifest["config"]["size"]),
        layer_digests=tuple(layer["digest"] for layer in manifest["layers"]),
        layer_sizes=tuple(int(layer["size"]) for layer in manifest["layers"]),
        layer_media_types=tuple(layer["mediaType"] for layer in manifest["layers"]),
        layers=tuple(layers),
        architecture=config["architecture"],
        os=config["os"],
    )


def _ok(resp: Response) -> Response:
    if resp.status != 200:
        raise RuntimeError(f"registry answered {resp.status}: {resp.body[:300]!r}")
    return resp


# -- public API -----------------------------------------------------------------------------


def build_image(
    registry: RegistryLike,
    repo: str,
    tag: str = "latest",
    layer_sizes: Sequence[int | Layer] = (4096,),
    *,
    arch: str = "amd64",
    os_name: str = "linux",
    seed: int | str = 0,
    workdir: Path | None = None,
) -> BuiltImage:
    """Build an image of ``len(layer_sizes)`` random-file layers and push it as ``repo:tag``.

    Ints in ``layer_sizes`` become ``Layer(size, f"{seed}-{i}")``; pass :class:`Layer` objects to
    share a layer between images. umoci gzips layers (random data grows by ~0.5%).
    """
    layers = _layers(layer_sizes, seed)
    with tempfile.TemporaryDirectory(prefix="warmstart-image-", dir=workdir) as tmp:
        layout, src = Path(tmp) / "oci", Path(tmp) / "src"
        src.mkdir()
        _run([require_tool("umoci"), "init", "--layout", layout])
        _umoci_build(layout, "build", layers, arch, os_name, src)
        _push(registry, layout, "build", f"{registry.host}/{repo}:{tag}", all_images=False)
    return _read_image(RegistryClient.for_registry(registry), registry, repo, tag, layers)


def build_index(
    registry: RegistryLike,
    repo: str,
    tag: str = "latest",
    arches: Sequence[str] = ("amd64", "arm64"),
    layer_sizes: Sequence[int | Layer] = (4096,),
    *,
    os_name: str = "linux",
    seed: int | str = 0,
    workdir: Path | None = None,
) -> BuiltIndex:
    """Push a multi-platform OCI image index (one umoci image per arch) as ``repo:tag``.

    Per-arch layers use seed ``f"{seed}-{arch}"`` (so they differ between platforms) unless
    :class:`Layer` objects are given.
    """
    built_layers: dict[str, list[Layer]] = {}
    with tempfile.TemporaryDirectory(prefix="warmstart-index-", dir=workdir) as tmp:
        layout, src = Path(tmp) / "oci", Path(tmp) / "src"
        src.mkdir()
        _run([require_tool("umoci"), "init", "--layout", layout])
        for arch in arches:
            built_layers[arch] = _layers(layer_sizes, f"{seed}-{arch}")
            _umoci_build(layout, f"build-{arch}", built_layers[arch], arch, os_name, src)
        layout_index = json.loads((layout / "index.json").read_text())
        by_ref = {
            d["annotations"]["org.opencontainers.image.ref.name"]: d
            for d in layout_index["manifests"]
        }
        children = []
        for arch in arches:
            desc = by_ref[f"build-{arch}"]
            children.append(
                {
                    "mediaType": desc["mediaType"],
                    "digest": desc["digest"],
                    "size": desc["size"],
                    "platform": {"architecture": arch, "os": os_name},
                }
            )
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children},
            separators=(",", ":"),
        ).encode()
        index_digest = sha256_digest(index)
        (layout / "blobs" / "sha256" / index_digest.split(":", 1)[1]).write_bytes(index)
        layout_index["manifests"].append(
            {
                "mediaType": OCI_INDEX,
                "digest": index_digest,
                "size": len(index),
                "annotations": {"org.opencontainers.image.ref.name": "index"},
            }
        )
        (layout / "index.json").write_text(json.dumps(layout_index))
        _push(registry, layout, "index", f"{registry.host}/{repo}:{tag}", all_images=True)

    client = RegistryClient.for_registry(registry)
    resp = _ok(client.get_manifest(repo, tag, INDEX_ACCEPT))
    digest = resp.header("Docker-Content-Digest") or ""
    if digest != sha256_digest(resp.body):
        raise RuntimeError(f"registry digest {digest} != sha256 of the index body")
    parsed = json.loads(resp.body)
    manifests: dict[str, BuiltImage] = {}
    for desc in parsed["manifests"]:
        arch = desc["platform"]["architecture"]
        img = _read_image(client, registry, repo, desc["digest"], built_layers[arch])
        manifests[f"{desc['platform']['os']}/{arch}"] = img
    return BuiltIndex(
        reference=f"{registry.host}/{repo}:{tag}",
        registry_host=registry.host,
        repository=repo,
        tag=tag,
        index_digest=digest,
        media_type=(resp.header("Content-Type") or "").split(";")[0].strip(),
        index=resp.body,
        manifests=manifests,
    )


def push_blob(registry: RegistryLike, repo: str, data: bytes) -> str:
    """Upload ``data`` as a blob (monolithic POST + PUT); returns its digest."""
    return RegistryClient.for_registry(registry).push_blob(repo, data)


def push_raw_manifest(
    registry: RegistryLike, repo: str, tag: str, body: bytes, media_type: str
) -> Response:
    """PUT ``body`` as manifest ``repo:tag`` with Content-Type ``media_type``.

    Returns the registry's answer without raising (tests of bad input inspect the status).
    """
    return RegistryClient.for_registry(registry).put_manifest(repo, tag, body, media_type)


class ImageBuilder:
    """The ``image_builder`` fixture: the functions above with a per-test scratch directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.built: list[BuiltImage | BuiltIndex] = []

    def build(
        self,
        registry: RegistryLike,
        repo: str,
        tag: str = "latest",
        layer_sizes: Sequence[int | Layer] = (4096,),
        *,
        arch: str = "amd64",
        os_name: str = "linux",
        seed: int | str = 0,
    ) -> BuiltImage:
        image = build_image(
            registry,
            repo,
            tag,
            layer_sizes,
            arch=arch,
            os_name=os_name,
            seed=seed,
            workdir=self.workdir,
        )
        self.built.append(image)
        return image

    def build_index(
        self,
        registry: RegistryLike,
        repo: str,
        tag: str = "latest",
        arches: Sequence[str] = ("amd64", "arm64"),
        layer_sizes: Sequence[int | Layer] = (4096,),
        *,
        os_name: str = "linux",
        seed: int | str = 0,
    ) -> BuiltIndex:
        index = build_index(
            registry,
            repo,
            tag,
            arches,
            layer_sizes,
            os_name=os_name,
            seed=seed,
            workdir=self.workdir,
        )
        self.built.append(index)
        return index

    def push_blob(self, registry: RegistryLike, repo: str, data: bytes) -> str:
        return push_blob(registry, repo, data)

    def push_raw_manifest(
        self, registry: RegistryLike, repo: str, tag: str, body: bytes, media_type: str
    ) -> Response:
        return push_raw_manifest(registry, repo, tag, body, media_type)

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
