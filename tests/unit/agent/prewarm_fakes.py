"""An in-memory Fetcher and a fake ``ctr`` executable for the pre-warm unit tests."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from warmstart.fetch.interfaces import BlobResult, ClientIdentity, ManifestResult, NotFoundError
from warmstart.oci import Digest
from warmstart.oci import mediatypes as mt
from warmstart.store import ContentStore


def blob(data: bytes) -> tuple[Digest, bytes]:
    return Digest.of(data), data


@dataclass
class FakeImage:
    manifest: bytes
    digest: Digest
    blobs: dict[Digest, bytes]


def make_image(
    layers: Sequence[bytes], *, config_type: str = mt.OCI_CONFIG, arch: str = "amd64"
) -> FakeImage:
    config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {}}).encode()
    blobs = dict([blob(config), *(blob(layer) for layer in layers)])
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {
                "mediaType": config_type,
                "digest": str(Digest.of(config)),
                "size": len(config),
            },
            "layers": [
                {"mediaType": mt.OCI_LAYER, "digest": str(Digest.of(x)), "size": len(x)}
                for x in layers
            ],
        }
    ).encode()
    return FakeImage(manifest, Digest.of(manifest), blobs)


def make_index(images: dict[str, FakeImage]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": str(img.digest),
                    "size": len(img.manifest),
                    "platform": {"os": p.split("/")[0], "architecture": p.split("/")[1]},
                }
                for p, img in images.items()
            ],
        }
    ).encode()


@dataclass
class FakeFetcher:
    """Serves manifests and blobs; like the tiered fetcher, it keeps what it streams."""

    store: ContentStore | None
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # ref/digest -> body
    blobs: dict[Digest, bytes] = field(default_factory=dict)
    mode: str = "stream"  # stream | path | short | forget
    blob_calls: list[Digest] = field(default_factory=list)
    manifest_calls: list[tuple[str, str, str]] = field(default_factory=list)

    def add_image(self, repo_ref: str, image: FakeImage) -> None:
        self.manifests[repo_ref] = (image.manifest, mt.OCI_MANIFEST)
        self.manifests[str(image.digest)] = (image.manifest, mt.OCI_MANIFEST)
        self.blobs.update(image.blobs)

    async def get_manifest(
        self,
        registry: str,
        repository: str,
        reference: str,
        accept: Sequence[str],
        client: ClientIdentity,
    ) -> ManifestResult:
        self.manifest_calls.append((registry, repository, reference))
        try:
            body, media_type = self.manifests[reference]
        except KeyError:
            raise NotFoundError(f"manifest {reference} unknown") from None
        return ManifestResult(Digest.of(body), media_type, body, "upstream")

    async def get_blob(
        self, registry: str, repository: str, digest: Digest, client: ClientIdentity
    ) -> BlobResult:
        self.blob_calls.append(digest)
        data = self.blobs[digest]
        if self.mode == "path":
            assert self.store is not None
            self.store.put_bytes(digest, data)
            return BlobResult(digest, len(data), "peer", path=self.store.blob_path(digest))

        async def stream(start: int) -> AsyncGenerator[bytes, None]:
            end = len(data) // 2 if self.mode == "short" else len(data)
            for i in range(start, end, 7):
                yield data[i : min(i + 7, end)]
            if self.mode == "stream" and self.store is not None:
                self.store.put_bytes(digest, data)

        return BlobResult(digest, len(data), "upstream", open_stream=stream)

    async def stat_blob(
        self, registry: str, repository: str, digest: Digest, client: ClientIdentity
    ) -> int:
        return len(self.blobs[digest])


FAKE_CTR = r'''#!{python}
"""A stand-in for ctr: records each call; images pull / images check per $FAKE_CTR_MODE."""
import json, os, sys
from pathlib import Path
log = Path(os.environ["FAKE_CTR_LOG"])
args = sys.argv[1:]
calls = json.loads(log.read_text()) if log.exists() else []
entry = {{"args": args}}
if "--hosts-dir" in args:
    hosts = Path(args[args.index("--hosts-dir") + 1])
    entry["hosts"] = {{str(p.relative_to(hosts)): p.read_text() for p in hosts.rglob("hosts.toml")}}
calls.append(entry)
log.write_text(json.dumps(calls))
mode = os.environ.get("FAKE_CTR_MODE", "ok")
ref = args[-1]
if "pull" in args:
    if mode == "pull-fails":
        sys.stderr.write("unpacking...\nctr: failed to resolve reference: 503 Service Unavailable\n")
        sys.exit(1)
    pulls = sum(1 for c in calls if "pull" in c["args"])
    if mode == "eof-always" or (mode == "eof-once" and pulls == 1):
        sys.stderr.write("ctr: failed to read expected number of bytes: unexpected EOF\n")
        sys.exit(1)
    Path(os.environ["FAKE_CTR_LOG"] + ".ref").write_text(ref)
    print("done")
    sys.exit(0)
if "check" in args:
    state = Path(os.environ["FAKE_CTR_LOG"] + ".ref")
    print("REF TYPE DIGEST STATUS SIZE UNPACKED ")
    if state.exists():
        unpacked = "false" if mode == "not-unpacked" else "true"
        digest = os.environ["FAKE_CTR_DIGEST"]
        print(f"{{state.read_text()}} application/vnd.oci.image.manifest.v1+json {{digest}} "
              f"complete (3/3) 3.8 MiB/3.8 MiB {{unpacked}}")
    sys.exit(0)
if args[4:6] == ["images", "tag"]:
    sys.exit(1 if mode == "tag-fails" else 0)
sys.exit(2)
'''


def write_fake_ctr(directory: Path) -> Path:
    path = directory / "fake-ctr"
    path.write_text(FAKE_CTR.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def ctr_calls(log: Path) -> list[dict]:
    return json.loads(log.read_text()) if log.exists() else []
