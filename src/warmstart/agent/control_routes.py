"""The agent's control routes: peers, status, health, metrics, pre-warm, pins and the piece
tracker. Their bodies are ``warmstart.agent.api``'s (shared with ``warmstart.agent.client``);
errors are raised, and answered by the middleware (``warmstart.agent.middleware``).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from warmstart.agent.api import (
    Health,
    PeerDiscovery,
    PeersRequest,
    PeersResponse,
    PrewarmRequest,
    PrewarmResponse,
    RequestInvalid,
    UnpinRequest,
    UnpinResponse,
    parse_request,
)
from warmstart.agent.errors import denied, oci_error
from warmstart.agent.middleware import bad_request, error_response
from warmstart.agent.paths import BadRequest, choose_registry
from warmstart.agent.peer_set import PeerSet
from warmstart.agent.state import AgentState, client_identity, state_of
from warmstart.agent.status import status_body
from warmstart.aio import read_to_end
from warmstart.fetch.interfaces import PEER_TOKEN_HEADER
from warmstart.oci import Digest
from warmstart.store import StoreError

log = logging.getLogger(__name__)

CONTROL_AUTH = 'Bearer realm="warmstart"'
MAX_CONTROL_BODY = 1 << 20


def _authorized(request: web.Request, token: str | None) -> bool:
    """Control writes need the cluster's shared secret when one is configured."""
    if not token:
        return True
    given = request.headers.get(PEER_TOKEN_HEADER)
    auth = request.headers.get("Authorization", "")
    if given is None and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _unauthorized() -> web.Response:
    return error_response(
        oci_error(
            "UNAUTHORIZED",
            f"this route needs the peer token ({PEER_TOKEN_HEADER} or Authorization: Bearer)",
            headers={"WWW-Authenticate": CONTROL_AUTH},
        )
    )


async def _json_body(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_CONTROL_BODY:
        raise ValueError("request body too large")
    raw = await read_to_end(request.content, MAX_CONTROL_BODY)
    if raw is None:
        raise ValueError("request body too large")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"body is not JSON: {e}") from None


def _request_invalid(error: RequestInvalid) -> web.Response:
    return error_response(oci_error(error.code, str(error), status=400))


_Body = TypeVar("_Body", bound=BaseModel)


async def _control_write(
    request: web.Request, state: AgentState, model: type[_Body]
) -> _Body | web.Response:
    """A control write's body parsed as ``model``, or the answer refusing it (no peer token,
    a body that is not JSON or does not fit ``model``)."""
    if not _authorized(request, state.parts.config.peer_token):
        return _unauthorized()
    try:
        return parse_request(model, await _json_body(request))
    except RequestInvalid as e:
        return _request_invalid(e)
    except ValueError as e:
        return bad_request(str(e))


def _peers_answer(peers: PeerSet) -> web.Response:
    answer = PeersResponse.model_validate(
        {"peers": list(peers.urls), "self": peers.self_url, "version": peers.version}
    )
    return web.json_response(answer.to_json())


async def peers_get(request: web.Request) -> web.StreamResponse:
    return _peers_answer(state_of(request).parts.peers)


async def peers_put(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    wanted = await _control_write(request, state, PeersRequest)
    if isinstance(wanted, web.Response):
        return wanted
    try:
        urls = state.parts.peers.replace(wanted.peers)
    except ValueError as e:
        return bad_request(str(e))
    log.info("peers replaced: %s", ", ".join(urls) or "none")
    return _peers_answer(state.parts.peers)


async def status(request: web.Request) -> web.StreamResponse:
    parts = state_of(request).parts
    store, config = parts.store, parts.config
    hot: set[str] = set()
    hot_images: list[tuple[str, str]] = []
    if parts.hot is not None:
        try:
            hot_images = list(await parts.hot.hot_images())
            hot = {name for pair in hot_images for name in pair if name}
        except Exception as e:  # containerd unreachable: report warm/partial only
            log.warning("cannot list hot images: %s", e)
    changed_at = parts.peers.changed_at
    body = status_body(
        node_id=config.node_id,
        advertise_url=config.advertise_url,
        store_root=str(store.root),
        usage=store.usage(),
        shared=sum(store.shared_blobs().values()),
        model_extracted=store.model_usage(),
        budget=store.budget,
        images=store.images(),
        hot=hot,
        hot_images=hot_images,
        peers=parts.peers.urls,
        upstreams=config.upstreams,
        default_upstream=config.default_upstream,
        peer_source=(
            parts.peer_source(changed_at)
            if parts.peer_source is not None
            else PeerDiscovery(kind="static", changed_at=changed_at)
        ),
        node_setup=parts.node_setup,
        models_root=store.layout.models_root,
    )
    return web.json_response(body.to_json())


def _health(state: AgentState) -> Health:
    try:
        state.parts.store.usage()
    except StoreError as e:
        return Health(ok=False, message=f"store unavailable: {e}")
    return Health(ok=True, message="ok")


async def healthz(request: web.Request) -> web.StreamResponse:
    health = _health(state_of(request))
    return web.Response(status=health.status, text=health.text())


async def metrics(request: web.Request) -> web.StreamResponse:
    parts = state_of(request).parts
    store = parts.store
    with contextlib.suppress(StoreError):
        shared = sum(store.shared_blobs().values())
        parts.metrics.set_store(store.usage(), store.budget, shared, store.model_usage())
    body, content_type = parts.metrics.render()
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp


async def prewarm(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    wanted = await _control_write(request, state, PrewarmRequest)
    if isinstance(wanted, web.Response):
        return wanted
    ref = wanted.reference
    if state.parts.config.upstream(ref.registry) is None:
        return error_response(denied(f"registry {ref.registry!r} is not configured on this agent"))
    if state.parts.prewarmer is None:
        return error_response(
            oci_error("UNSUPPORTED", "pre-warm is not available on this agent", status=501)
        )
    try:
        result = await state.parts.prewarmer.prewarm(
            ref, wanted.platform, wanted.hot, client=client_identity(request), model=wanted.model
        )
    except ValueError as e:  # an OCIError too: the request names no valid image
        return bad_request(str(e))
    if wanted.pin:
        _hold_pin(state, str(ref), wanted.holder or "", result)
    if result.model is not None:
        m = result.model
        state.parts.metrics.materialised(m.built, m.linked_bytes, m.extracted_bytes)
    return web.json_response(result.to_json())


def _hold_pin(state: AgentState, reference: str, holder: str, result: PrewarmResponse) -> None:
    """Pin the image or model by reference (and its top and platform manifests) for
    ``holder`` until that holder's POST /unpin."""
    digests = {Digest.parse(result.digest), Digest.parse(result.manifest_digest)}
    name = f"pinned:{reference}" + (f" by {holder}" if holder else "")
    pin = state.parts.store.pin(name, digests, reference)
    old = state.pins.pop((reference, holder), None)
    state.pins[(reference, holder)] = pin
    if old is not None:
        old.release()


async def unpin(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    wanted = await _control_write(request, state, UnpinRequest)
    if isinstance(wanted, web.Response):
        return wanted
    pin = state.pins.pop((str(wanted.reference), wanted.holder or ""), None)
    if pin is not None:
        pin.release()
    answer = UnpinResponse(reference=str(wanted.reference), released=pin is not None)
    return web.json_response(answer.to_json())


async def pieces(request: web.Request) -> web.StreamResponse:
    """``POST /pieces/<digest>?ns=<registry>``: the piece tracker (``warmstart.fetch.tracker``):
    a peer announces what it holds and gets the piece list and the holders."""
    state = state_of(request)
    server = state.parts.piece_server()
    if server is None:
        return error_response(oci_error("UNSUPPORTED", "no pieces on this agent", status=404))
    client = client_identity(request)
    if client.peer is None:
        return error_response(oci_error("DENIED", "the piece tracker is for peers", status=403))
    try:
        digest = Digest.parse(request.match_info["digest"])
        registry = choose_registry(
            request.query.getall("ns", []),
            state.parts.config.upstreams,
            state.parts.config.default_upstream,
        )
        body = await _json_body(request)
        answer = await server.pieces_request(registry, digest, body, client)
    except BadRequest as e:
        return error_response(e.response)
    except ValueError as e:  # an OCIError too: the request names no valid image
        return bad_request(str(e))
    return web.json_response(answer)
