"""Parse what a client asks on ``/v2/``: route, repository, reference, registry (no I/O).

Repository names contain slashes, so a path is split on its *last* ``/manifests/`` or
``/blobs/``; the name is checked with the distribution grammar before anything else happens, so
``..``, ``%2e%2e``, NUL bytes or upper case never reach the store or a file name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from warmstart.agent.errors import ErrorResponse, denied, digest_invalid, name_invalid, oci_error
from warmstart.oci import Digest, InvalidDigest, InvalidReference, validate_repository, validate_tag
from warmstart.oci.registry_name import canonical_registry

MAX_ACCEPT_ENTRIES = 64


class Kind(Enum):
    MANIFEST = "manifests"
    BLOB = "blobs"


@dataclass(frozen=True)
class V2Target:
    """``/v2/<name>/manifests/<reference>`` or ``/v2/<name>/blobs/<digest>``, validated."""

    kind: Kind
    name: str
    reference: str  # a tag or a digest string (always a digest for blobs)
    digest: Digest | None  # set when reference is a digest

    @property
    def is_digest(self) -> bool:
        return self.digest is not None


class BadRequest(Exception):
    """The request is invalid; ``response`` says how to answer it."""

    def __init__(self, response: ErrorResponse) -> None:
        super().__init__(response.message)
        self.response = response


def parse_v2_path(tail: str) -> V2Target:
    """Parse what follows ``/v2/`` (already percent-decoded). Raise :class:`BadRequest`."""
    best: tuple[int, Kind] | None = None
    for kind in Kind:
        at = tail.rfind(f"/{kind.value}/")
        if at > 0 and (best is None or at > best[0]):
            best = (at, kind)
    if best is None:
        raise BadRequest(
            oci_error(
                "NOT_FOUND",
                "unknown route: this mirror serves /v2/<name>/manifests/<reference> and "
                "/v2/<name>/blobs/<digest>",
                status=404,
            )
        )
    at, kind = best
    name = tail[:at]
    reference = tail[at + len(kind.value) + 2 :]
    try:
        validate_repository(name)
    except InvalidReference as e:
        raise BadRequest(name_invalid(str(e), name)) from None
    if "/" in reference or not reference:
        # e.g. /v2/<name>/blobs/uploads/<id>: a push route; GETs on it find nothing here
        raise BadRequest(
            oci_error("NOT_FOUND", f"unknown route under /v2/{name}/{kind.value}/", status=404)
        )
    digest: Digest | None = None
    if kind is Kind.BLOB or ":" in reference:
        try:
            digest = Digest.parse(reference)
        except InvalidDigest as e:
            raise BadRequest(digest_invalid(str(e), reference)) from None
    else:
        try:
            validate_tag(reference)
        except InvalidReference as e:
            raise BadRequest(
                oci_error("TAG_INVALID", str(e), detail={"tag": reference[:256]})
            ) from None
    return V2Target(kind, name, reference, digest)


def merge_accept(values: Iterable[str]) -> list[str]:
    """Media types from one or several ``Accept`` headers, in order, without parameters or
    duplicates (``a, b;q=0.5`` + ``c`` -> ``[a, b, c]``). A registry behind a proxy that keeps
    only the first header answers 404 for OCI manifests."""
    out: list[str] = []
    for value in values:
        for item in value.split(","):
            media_type = item.split(";", 1)[0].strip().lower()
            if media_type and media_type not in out:
                out.append(media_type)
                if len(out) >= MAX_ACCEPT_ENTRIES:
                    return out
    return out


def choose_registry(
    ns_values: list[str], upstreams: Mapping[str, object], default: str | None
) -> str:
    """The registry a request is for: ``?ns=`` (containerd) or the default upstream.

    Only configured registries are served: the agent is never an open proxy. Raise
    :class:`BadRequest` (403 DENIED) otherwise.
    """
    distinct = {canonical_registry(v) for v in ns_values}
    if len(distinct) > 1:
        raise BadRequest(denied("several different ?ns= parameters"))
    if distinct:
        registry = distinct.pop()
        if registry not in upstreams:
            raise BadRequest(denied(f"registry {registry[:100]!r} is not configured on this agent"))
        return registry
    if default is None:
        raise BadRequest(
            denied("no ?ns= parameter and no default_upstream configured on this agent")
        )
    return default
