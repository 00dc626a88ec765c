"""Image references, parsed the way containerd and docker normalise them.

``busybox`` -> ``docker.io/library/busybox:latest``; ``localhost:5000/a/b@sha256:...``;
``[::1]:5000/x:tag``. Repository names follow the distribution spec grammar, so a name that
passes here never contains ``..``, empty path components or upper-case letters. The registry is
named by :func:`~warmstart.oci.registry_name.canonical_registry` (lower case; every name of Docker
Hub is ``docker.io``), as everywhere else in warmstart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from warmstart.oci.digest import Digest
from warmstart.oci.errors import InvalidDigest, InvalidReference
from warmstart.oci.registry_name import DOCKER_HUB, canonical_registry

DEFAULT_REGISTRY = DOCKER_HUB
DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 255

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])"
_DOMAIN_RE = re.compile(rf"^{_HOST}(?::[0-9]{{1,5}})?$", re.ASCII)


def validate_repository(name: str) -> str:
    """Return ``name`` if it is a valid repository path (without registry), else raise."""
    if not isinstance(name, str) or not name:
        raise InvalidReference("invalid repository name: empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidReference(f"invalid repository name: longer than {MAX_NAME_LENGTH} characters")
    if not _REPOSITORY_RE.match(name):
        raise InvalidReference(
            f"invalid repository name {name[:100]!r}: use lower-case letters, digits and "
            "separators ('.', '_', '__', '-') between '/'-separated components"
        )
    return name


def validate_tag(tag: str) -> str:
    if not isinstance(tag, str) or not _TAG_RE.match(tag):
        raise InvalidReference(
            f"invalid tag {str(tag)[:100]!r}: up to 128 of [A-Za-z0-9_.-], not starting with . or -"
        )
    return tag


def validate_registry(host: str) -> str:
    if not isinstance(host, str) or not _DOMAIN_RE.match(host) or len(host) > 255:
        raise InvalidReference(f"invalid registry host {str(host)[:100]!r}")
    port = host.rsplit(":", 1)[1] if ":" in host and not host.endswith("]") else None
    if port is not None and not host.startswith("[") and not (0 < int(port) < 65536):
        raise InvalidReference(f"invalid registry port in {host!r}")
    return host


@dataclass(frozen=True)
class Reference:
    """A fully-qualified image reference. At least one of ``tag`` and ``digest`` is set."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        return parse_reference(text)

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/`` in the API: the digest if known, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or DEFAULT_TAG

    def with_digest(self, digest: Digest) -> Reference:
        return replace(self, digest=digest)

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out


def _split_domain(remainder: str) -> tuple[str, str]:
    first, sep, rest = remainder.partition("/")
    is_domain = sep and (
        "." in first or ":" in first or first == "localhost" or first.lower() != first
    )
    if not is_domain:
        return DEFAULT_REGISTRY, remainder
    return canonical_registry(first), rest


def parse_reference(text: str) -> Reference:
    """Parse and normalise an image reference; raise :class:`InvalidReference` if malformed."""
    if not isinstance(text, str):
        raise InvalidReference("invalid reference: not a string")
    original = text
    if not text or len(text) > 1024 or any(c.isspace() for c in text):
        raise InvalidReference(
            f"invalid reference {original[:100]!r}: empty, too long or has spaces"
        )
    digest: Digest | None = None
    if "@" in text:
        text, _, digest_text = text.partition("@")
        try:
            digest = Digest.parse(digest_text)
        except InvalidDigest as e:
            raise InvalidReference(f"invalid reference {original!r}: {e}") from None
    registry, remainder = _split_domain(text)
    tag: str | None = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        try:
            validate_tag(tag)
        except InvalidReference as e:
            raise InvalidReference(f"invalid reference {original!r}: {e}") from None
    try:
        validate_registry(registry)
        if registry == DEFAULT_REGISTRY and "/" not in remainder:
            remainder = f"library/{remainder}"
        validate_repository(remainder)
    except InvalidReference as e:
        raise InvalidReference(f"invalid reference {original!r}: {e}") from None
    if len(f"{registry}/{remainder}") > MAX_NAME_LENGTH:
        raise InvalidReference(f"invalid reference {original!r}: name longer than 255 characters")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry=registry, repository=remainder, tag=tag, digest=digest)
