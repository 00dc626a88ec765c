"""Content digests as the OCI image spec defines them (``algorithm:encoded``).

Only ``sha256`` and ``sha512`` are accepted; anything else (wrong length, upper-case hex,
path separators) is rejected, so a digest can safely become a file name.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from warmstart.oci.errors import InvalidDigest

_ENCODED_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")
_HEX_RE = re.compile(r"^[a-f0-9]+$")


@dataclass(frozen=True, order=True)
class Digest:
    """A validated content digest such as ``sha256:e3b0...``."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: object) -> Digest:
        if not isinstance(text, str) or len(text) > 200:
            raise InvalidDigest(f"invalid digest: {str(text)[:80]!r}")
        m = _DIGEST_RE.match(text)
        if not m:
            raise InvalidDigest(f"invalid digest: {text!r} (expected 'sha256:<64 hex>')")
        algorithm, encoded = m.group(1), m.group(2)
        if algorithm not in _ENCODED_LENGTH:
            raise InvalidDigest(f"unsupported digest algorithm {algorithm!r} in {text!r}")
        want = _ENCODED_LENGTH[algorithm]
        if len(encoded) != want or not _HEX_RE.match(encoded):
            raise InvalidDigest(
                f"invalid digest {text!r}: {algorithm} needs {want} lower-case hex characters"
            )
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> hashlib._Hash:
        """A fresh hash object of this digest's algorithm."""
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def short(self) -> str:
        return self.hex[:12]


def is_digest(text: str) -> bool:
    try:
        Digest.parse(text)
    except InvalidDigest:
        return False
    return True
