"""The agent's control API, one schema: the bodies of ``POST /prewarm``, ``GET /status``,
``GET``/``PUT /peers`` and ``GET /healthz``.

The agent's handlers (``warmstart.agent.server``) read requests and write answers with these
models; the one client (``warmstart.agent.client.AgentClient``) writes requests and reads
answers with them. Pure: pydantic models and small helpers, no I/O.

Requests are strict (a JSON string is not a bool) and refuse unknown fields, so a misspelt
``"Hot"`` is an error rather than a silent warm-only pre-warm. Answers ignore fields they do not
know, so a client reads a newer agent's answer. A request that does not fit raises
:class:`RequestInvalid` with a one-line message and the OCI error code to answer it with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from warmstart.oci import OCIError, Platform, Reference
from warmstart.oci.tiers import StoredTier

INVALID_REQUEST = "INVALID_REQUEST"
NAME_INVALID = "NAME_INVALID"
MAX_ERROR_CHARS = 300

_REFERENCE_INVALID = "reference_invalid"


class RequestInvalid(ValueError):
    """A request body that does not fit its model; ``str()`` is one line, ``code`` the OCI
    error code (``NAME_INVALID`` for a malformed image reference, else ``INVALID_REQUEST``)."""

    def __init__(self, message: str, code: str = INVALID_REQUEST) -> None:
        super().__init__(message)
        self.code = code


# -- field types ------------------------------------------------------------------------------


def _reference(value: object) -> Reference:
    if isinstance(value, Reference):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "must be an image reference string")
    try:
        return Reference.parse(value)
    except OCIError as e:
        raise PydanticCustomError(_REFERENCE_INVALID, "{reason}", {"reason": str(e)}) from None


def _platform(value: object) -> Platform:
    if isinstance(value, Platform):
        return value.normalized()
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", 'must be a string such as "linux/amd64" or null')
    try:
        return Platform.parse(value).normalized()
    except OCIError as e:
        raise PydanticCustomError("platform_invalid", "{reason}", {"reason": str(e)}) from None


# An image reference, normalised (``busybox`` -> ``docker.io/library/busybox:latest``).
ImageReference = Annotated[
    Reference,
    PlainValidator(_reference),
    PlainSerializer(str),
    WithJsonSchema({"type": "string", "examples": ["registry.example/team/app:v1"]}),
]
# ``os/arch[/variant]``, normalised (``linux/arm64`` -> ``linux/arm64/v8``).
PlatformName = Annotated[
    Platform,
    PlainValidator(_platform),
    PlainSerializer(str),
    WithJsonSchema({"type": "string", "examples": ["linux/amd64"]}),
]


# Who holds a pin: ``endpoint/qwen3``, ``operator``; short, no spaces.
PinHolder = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:/@-]+$")]


def _collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


# pydantic's wording for the common mistakes, in the words of a JSON body.
_PLAIN = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "model_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "int_type": "must be a whole number",
}


def describe(error: ValidationError) -> str:
    """``field: problem; other: problem`` on one line."""
    parts = []
    for e in error.errors(include_url=False):
        where = ".".join(str(p) for p in e["loc"]) or "body"
        message = _PLAIN.get(e["type"], e["msg"])
        parts.append(f"{where}: {message}")
    return _collapse_whitespace("; ".join(parts))[: MAX_ERROR_CHARS * 2]


M = TypeVar("M", bound=BaseModel)


def parse_request(model: type[M], payload: object) -> M:
    """Validate a decoded JSON body; raise :class:`RequestInvalid` if it does not fit."""
    try:
        return model.model_validate(payload)
    except ValidationError as e:
        bad_name = any(err["type"] == _REFERENCE_INVALID for err in e.errors())
        raise RequestInvalid(describe(e), NAME_INVALID if bad_name else INVALID_REQUEST) from None


class _Body(BaseModel):
    def to_json(self) -> dict[str, Any]:
        """The JSON object sent on the wire."""
        return self.model_dump(mode="json", by_alias=True)


class _Request(_Body):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Answer(_Body):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


# -- POST /prewarm ----------------------------------------------------------------------------


class PrewarmRequest(_Request):
    """``{"reference": "...", "platform": "linux/amd64" | null, "hot": false, "pin": false}``.

    ``pin``: after the pre-warm the agent keeps the image pinned (never evicted) until
    ``POST /unpin`` names it or the agent restarts (the operator pins again on its next pass).
    """

    reference: ImageReference
    platform: PlatformName | None = None  # None: the index entry for the agent's own platform
    hot: bool = False  # image: also import into containerd, unpacked; model: materialise it
    pin: bool = False
    # A model (ModelPack, an ORAS artifact with titled layers, or a modelcar image: its
    # /models). Artifacts that are not container images are taken as models without it.
    model: bool = False
    # Who holds the pin: pins of different holders on one reference are separate (an
    # endpoint's and the operator's), and ``POST /unpin`` releases only its holder's.
    holder: PinHolder | None = None

    @classmethod
    def of(
        cls,
        reference: str,
        platform: str | None = None,
        hot: bool = False,
        pin: bool = False,
        model: bool = False,
        holder: str | None = None,
    ) -> Self:
        """From user input; :class:`RequestInvalid` (one line) if it does not fit."""
        body: dict[str, Any] = {"reference": reference, "platform": platform, "hot": hot}
        if pin:
            body["pin"] = True
        if model:
            body["model"] = True
        if holder is not None:
            body["holder"] = holder
        return parse_request(cls, body)

    def to_json(self) -> dict[str, Any]:
        """``pin``, ``model`` and ``holder`` only when set, so an agent that predates them
        still takes the request."""
        body = super().to_json()
        for key in ("pin", "model", "holder"):
            if not body.get(key):
                body.pop(key, None)
        return body


# -- POST /unpin ------------------------------------------------------------------------------


class UnpinRequest(_Request):
    """``{"reference": "...", "holder": "..."}``: release the pin a ``"pin": true`` pre-warm
    of that holder took (no holder: the pin taken without one)."""

    reference: ImageReference
    holder: PinHolder | None = None

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        if not body.get("holder"):
            body.pop("holder", None)
        return body


class UnpinResponse(_Answer):
    reference: str
    released: bool  # False: it was not pinned by a pre-warm on this agent


class LinkSummary(_Answer):
    """Blobs a hot pre-warm put into containerd's content store before its pull."""

    linked: int  # hard-linked (or copied) now
    linked_bytes: int
    present: int  # containerd had them already
    missing: int  # not in the agent's store (none after a pre-warm)
    seconds: float


class ContainerdImport(_Answer):
    """The hot part of a pre-warm: ``ctr images pull`` through the agent, then checked."""

    namespace: str
    reference: str
    digest: str
    unpacked: bool
    tag_moved: bool  # the tag points elsewhere now than when the pre-warm resolved it
    link: LinkSummary | None = None  # None: the agent does not link into containerd
    pull_seconds: float  # the ctr pull, unpack included
    pull_attempts: int = 1  # a pull that broke mid-body is tried again (up to 3 times)
    unpack_seconds: float  # the unpack, as ctr reported it
    seconds: float  # link + pull + check


class ModelMaterialisation(_Answer):
    """The hot part of a model's pre-warm: its read-only directory on the node."""

    path: str  # <store>/models/sha256/<manifest hex>: mount it read-only at /opt/ml/model
    reference_path: str  # <store>/models/by-ref/<reference>: a stable symlink to ``path``
    files: int
    linked_bytes: int  # raw layers: hard links to the store's blobs (no copy)
    extracted_bytes: int  # tar layers, extracted once
    seconds: float
    built: bool  # False: it was materialised already


class PrewarmResponse(_Answer):
    reference: str
    digest: str  # what the reference resolved to (an index or a manifest)
    manifest_digest: str  # the image manifest (the platform's, for an index)
    platform: str | None
    blobs: int
    bytes: int
    sources: dict[str, int]  # bytes by where they came from: local, peer, upstream
    warm_seconds: float  # every blob in the agent's store
    seconds: float  # the whole pre-warm
    hot: bool
    containerd: ContainerdImport | None = None  # only with ``hot``, for an image
    model_format: str | None = None  # a model: modelpack, artifact or modelcar
    model: ModelMaterialisation | None = None  # only with ``hot``, for a model


# -- GET /status ------------------------------------------------------------------------------


class StoreStatus(_Answer):
    root: str
    usage: int  # bytes of every stored blob
    shared: int = 0  # of those, bytes containerd links too (one copy on disk, not budgeted)
    model_extracted: int = 0  # bytes extracted from tar layers into model directories
    budget: int | None


class ImageStatus(_Answer):
    reference: str
    digest: str
    size: int
    tier: StoredTier  # hot: unpacked in containerd; warm: every blob stored; partial: some
    pinned: bool
    platform: str | None
    last_used: float  # seconds since the epoch


class ModelStatus(_Answer):
    """A model on this node. ``tier``: hot (materialised: ``path`` is its directory), warm
    (every blob stored) or partial."""

    reference: str
    digest: str
    format: str  # modelpack, artifact or modelcar
    size: int
    tier: StoredTier
    path: str | None = None
    pinned: bool
    last_used: float


class PeerDiscovery(_Answer):
    """Where the peer list comes from: ``static`` (agent.toml, ``--peer``, ``PUT /peers``) or
    ``kubernetes`` (the ready endpoints of ``service`` in ``namespace``)."""

    kind: str = "static"
    service: str | None = None
    namespace: str | None = None
    synced: bool = False  # kubernetes: the EndpointSlices were listed at least once
    errors: int = 0  # kubernetes: failed list/watch attempts since start
    changed_at: float | None = None  # seconds since the epoch of the last change of the list


class NodeSetup(_Answer):
    """What the agent did to the node at start (``containerd_certs_dir``)."""

    certs_dir: str
    hosts_written: list[str]  # hosts.toml files written now (new or changed)
    hosts_unchanged: list[str] = []  # already as the agent would write them
    hosts_skipped: list[str] = []  # not warmstart's (no marker): left alone
    config_path_ok: bool  # containerd's CRI plugin reads hosts.toml from certs_dir
    message: str  # one line: what to fix, or "" when all is well


class StatusResponse(_Answer):
    node_id: str
    url: str
    store: StoreStatus
    images: list[ImageStatus]
    models: list[ModelStatus] = []
    peers: list[str]
    upstreams: list[str]
    default_upstream: str | None
    peer_source: PeerDiscovery = PeerDiscovery()
    node_setup: NodeSetup | None = None  # None: no containerd_certs_dir


# -- GET / PUT /peers -------------------------------------------------------------------------


class PeersRequest(_Request):
    """``{"peers": ["http://host:port", ...]}``: the whole new list."""

    peers: list[str]


class PeersResponse(_Answer):
    peers: list[str]
    self_url: str | None = Field(alias="self")  # this agent's advertised URL
    version: int  # incremented by every PUT


# -- GET /healthz -----------------------------------------------------------------------------


class Health(_Answer):
    """``/healthz`` answers 200 ``ok`` or 503 with the reason, as plain text (for probes)."""

    ok: bool
    message: str

    @property
    def status(self) -> int:
        return 200 if self.ok else 503

    def text(self) -> str:
        return self.message + "\n"

    @classmethod
    def from_answer(cls, status: int, text: str) -> Self:
        return cls(ok=status == 200, message=_collapse_whitespace(text) or f"HTTP {status}")


# -- error answers ----------------------------------------------------------------------------


def error_message(status: int, body: bytes) -> str:
    """One line from an agent's error answer (OCI ``errors`` list, ``{"error": ...}`` or text):
    ``HTTP 502: importing ... failed: ...``."""
    message = ""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, Mapping):
        errors = doc.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
            first = errors[0]
            message = str(first.get("message") or first.get("code") or "")
        elif isinstance(doc.get("error"), str):
            message = doc["error"]
        elif isinstance(doc.get("message"), str):
            message = doc["message"]
    if not message:
        message = body.decode("utf-8", "replace").strip()
    message = _collapse_whitespace(message)[:MAX_ERROR_CHARS]
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"


def error_code(body: bytes) -> str | None:
    """The OCI error code of an error answer, if it has one."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    errors = doc.get("errors") if isinstance(doc, Mapping) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        code = errors[0].get("code")
        return code if isinstance(code, str) else None
    return None


__all__ = [
    "INVALID_REQUEST",
    "NAME_INVALID",
    "ContainerdImport",
    "Health",
    "ImageReference",
    "ImageStatus",
    "LinkSummary",
    "ModelMaterialisation",
    "ModelStatus",
    "NodeSetup",
    "PeerDiscovery",
    "PeersRequest",
    "PeersResponse",
    "PlatformName",
    "PrewarmRequest",
    "PrewarmResponse",
    "RequestInvalid",
    "StatusResponse",
    "StoreStatus",
    "UnpinRequest",
    "UnpinResponse",
    "describe",
    "error_code",
    "error_message",
    "parse_request",
]
