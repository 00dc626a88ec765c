"""A manifest's answer, checked: its body read within the size limit, its digest verified
against the reference or the registry's ``Docker-Content-Digest``.
"""

from __future__ import annotations

from warmstart.oci.digest import Digest
from warmstart.oci.errors import InvalidDigest
from warmstart.oci.reference import Reference
from warmstart.registry.errors import DigestMismatch, ManifestTooLarge
from warmstart.registry.sending import read_at_most
from warmstart.registry.transport import Response


async def read_manifest_body(resp: Response, limit: int, what: str) -> bytes:
    """The body, but never more than ``limit + 1`` bytes read (to notice an overflow)."""
    length = resp.content_length
    if length is not None and length > limit:
        raise ManifestTooLarge(f"{what}: manifest is {length} bytes, over the {limit} byte limit")
    buf = await read_at_most(resp, limit + 1)
    if len(buf) > limit:
        raise ManifestTooLarge(f"{what}: manifest is over the {limit} byte limit")
    return buf


def manifest_digest(ref: Reference, header: str | None, body: bytes, what: str) -> Digest:
    if ref.digest is not None:
        actual = Digest.of(body, ref.digest.algorithm)
        if actual != ref.digest:
            raise DigestMismatch(
                f"{what}: manifest content hashes to {actual}",
                expected=str(ref.digest),
                actual=str(actual),
            )
        return ref.digest
    if header:
        try:
            claimed = Digest.parse(header.strip())
        except InvalidDigest:
            claimed = None  # unsupported algorithm: fall back to our own sha256
        if claimed is not None:
            actual = Digest.of(body, claimed.algorithm)
            if actual != claimed:
                raise DigestMismatch(
                    f"{what}: registry says {claimed} but the content hashes to {actual}",
                    expected=str(claimed),
                    actual=str(actual),
                )
            return claimed
    return Digest.of(body)


__all__ = ["manifest_digest", "read_manifest_body"]
