"""The agent's HTTP routes: the read side of the OCI Distribution API as a pull-through mirror,
plus peers, status, health, metrics and pre-warm.

Handlers only parse and answer; where bytes come from is the :class:`Fetcher`'s business
(``warmstart.fetch.api``). Pure rules live beside this module: ``paths`` (routes, names,
``?ns=``, Accept), ``ranges`` (Range), ``errors`` (OCI error bodies), ``status``, and ``api``
(the bodies of the control routes, shared with ``warmstart.agent.client``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, Any

import aiohttp
from aiohttp import web

from warmstart.agent.api import (
    Health,
    NodeSetup,
    PeerSource,
    PeersRequest,
    PeersResponse,
    PrewarmRequest,
    PrewarmResponse,
    RequestInvalid,
    UnpinRequest,
    UnpinResponse,
    parse_request,
)
from warmstart.agent.config import AgentConfig
from warmstart.agent.errors import ErrorResponse, denied, error_answer, oci_error, unsupported
from warmstart.agent.hooks import HotImages, Prewarmer
from warmstart.agent.httplog import CLIENT_GONE
from warmstart.agent.import_grants import IMPORT_HEADER, ImportGrants
from warmstart.agent.linking import ImageLinker
from warmstart.agent.metrics import AgentMetrics
from warmstart.agent.paths import (
    BadRequest,
    Kind,
    V2Target,
    choose_registry,
    merge_accept,
    parse_v2_path,
)
from warmstart.agent.peer_set import PeerSet
from warmstart.agent.ranges import RangeKind, evaluate_range
from warmstart.agent.sending import (
    ClientGone,
    StreamFailed,
    TransferAborted,
    abort_connection,
    send_file,
    send_stream,
)
from warmstart.agent.status import status_body
from warmstart.containerd.content_link import LinkSetup
from warmstart.errors import WarmstartError, one_line
from warmstart.fetch.api import (
    PEER_HEADER,
    PEER_TOKEN_HEADER,
    PIECE_HEADER,
    BlobResult,
    ClientIdentity,
    Fetcher,
    ManifestResult,
    PieceBusyError,
    PieceServer,
)
from warmstart.fetch.pieces import UploadSlots
from warmstart.oci import Digest, ImageManifest, OCIError
from warmstart.oci.manifest import parse_manifest
from warmstart.store import ContentStore, StoreError
from warmstart.store.pins import Pin

log = logging.getLogger(__name__)

API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}
OCTET_STREAM = "application/octet-stream"
CONTAINERD_AGENT = "containerd/"  # in containerd's User-Agent (ctr, the CRI plugin)
JSON_TYPE = "application/json"
CONTROL_AUTH = 'Bearer realm="warmstart"'
# What a not-found answers, by route (the distribution spec's codes); BLOB_UNKNOWN elsewhere.
NOT_FOUND_CODE = {"manifest": "MANIFEST_UNKNOWN", "prewarm": "MANIFEST_UNKNOWN"}
MAX_CONTROL_BODY = 1 << 20


@dataclass
class AgentState:
    """Everything the handlers share; one per application (no module-level state)."""

    config: AgentConfig
    peers: PeerSet
    metrics: AgentMetrics
    fetcher: Fetcher | None = None
    store: ContentStore | None = None
    prewarmer: Prewarmer | None = None
    hot: HotImages | None = None
    grants: ImportGrants = field(default_factory=ImportGrants)
    linker: ImageLinker | None = None  # links blobs into containerd's content store
    link_setup: LinkSetup | None = None
    node_setup: NodeSetup | None = None  # hosts.toml files and containerd's config_path
    peers_changed_at: float | None = None  # when the peer list last changed (epoch seconds)
    # Where the peer list comes from: the running Kubernetes follower reports it.
    peer_source: Callable[[float | None], PeerSource] | None = None
    # The tasks answering requests right now: a graceful stop waits for them, then cuts
    # those still running when the grace period ends.
    in_flight: set[asyncio.Task[Any]] = field(default_factory=set)
    # Pins taken by ``"pin": true`` pre-warms, by reference; released by POST /unpin.
    pins: dict[tuple[str, str], Pin] = field(default_factory=dict)  # (reference, holder)
    # Piece requests served at once (more are answered 503 + Retry-After).
    uploads: UploadSlots = field(default_factory=lambda: UploadSlots(2))

    def piece_server(self) -> PieceServer | None:
        """The fetcher's piece side, if it has one (the tiered fetcher does)."""
        return self.fetcher if isinstance(self.fetcher, PieceServer) else None

    def cut_in_flight(self) -> int:
        """Cancel every request still being answered; how many there were."""
        tasks = [t for t in self.in_flight if not t.done()]
        for task in tasks:
            task.cancel()
        return len(tasks)


STATE = web.AppKey("warmstart_agent_state", AgentState)
# Which route answered, for the requests counter (a RequestKey where aiohttp has them).
_REQUEST_KEY = getattr(web, "RequestKey", None)
ROUTE: Any = _REQUEST_KEY("warmstart_route", str) if _REQUEST_KEY else "warmstart_route"


def state_of(request: web.Request) -> AgentState:
    return request.app[STATE]


# -- answers -------------------------------------------------------------------------------


def error_response(err: ErrorResponse) -> web.Response:
    headers = {**API_VERSION_HEADER, **err.headers, "Content-Type": JSON_TYPE}
    return web.Response(status=err.status, body=err.body(), headers=headers)


def _client_identity(request: web.Request) -> ClientIdentity:
    h = request.headers
    granted = state_of(request).grants.identity(h.get(IMPORT_HEADER))
    if granted is not None:
        return granted
    return ClientIdentity(
        authorization=h.get("Authorization"),
        peer=h.get(PEER_HEADER),
        peer_token=h.get(PEER_TOKEN_HEADER),
    )


def _etag(digest: Digest) -> str:
    return f'"{digest}"'


# -- middleware: metrics and last-resort errors ---------------------------------------------


def _response_started(request: web.Request) -> bool:
    """Whether any byte of a response went out on this request's connection."""
    writer = getattr(request, "writer", None)
    return bool(getattr(writer, "output_size", 0))


def _client_left(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _client_gone(
    request: web.Request, what: str, response: web.StreamResponse | None
) -> web.StreamResponse:
    """One INFO line for a client that went away; the answer aiohttp then finishes quietly on
    the closed connection (the access log leaves the request out)."""
    log.info("%s %s %s: %s", request.remote, request.method, request.path, what)
    request[CLIENT_GONE] = True
    return response if response is not None else web.Response(status=499, reason="Client Gone")


@web.middleware
async def observe(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    state = state_of(request)
    status: int | str = 500
    task = asyncio.current_task()
    if task is not None:
        state.in_flight.add(task)
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as e:
        status = e.status
        raise
    except TransferAborted as e:
        status = "aborted"
        state.metrics.aborted_responses.inc()
        log.warning("%s %s: connection aborted: %s", request.method, request.path, e)
        return e.response
    except ClientGone as e:  # normal: containerd cancels, kubelets time out
        status = "disconnected"
        return _client_gone(request, str(e), e.response)
    except asyncio.CancelledError:
        status = "disconnected"
        raise
    except Exception as e:
        if isinstance(e, ConnectionError) and _client_left(request):
            status = "disconnected"
            reason = one_line(getattr(e, "strerror", None) or e or type(e).__name__)
            return _client_gone(request, f"client went away ({reason})", None)
        answer = answer_for(e, route_of(request))
        if answer is None:
            log.exception("unexpected error answering %s %s", request.method, request.path_qs)
        if _response_started(request):
            # Part of an answer is out: another one on this connection would be read as its
            # body. Cut the connection instead.
            if answer is not None:
                log.warning("%s %s: failed mid-answer: %s", request.method, request.path, e)
            status = "aborted"
            abort_connection(request)
            raise
        if answer is None:
            answer = oci_error("UNKNOWN", "internal error in the agent", status=500)
        status = answer.status
        return error_response(answer)
    finally:
        if task is not None:
            state.in_flight.discard(task)
        state.metrics.request(route_of(request), request.method, status)


def route_of(request: web.Request) -> str:
    """Which route answers ``request`` (what the handler set, else the route's name)."""
    route = request.get(ROUTE)
    if route is None:
        route = request.match_info.route.name or "other"
    return str(route)


def answer_for(error: Exception, route: str) -> ErrorResponse | None:
    """The one place errors become answers: a :class:`WarmstartError` as it says, a network
    failure reaching a source as 503; None for anything else (a bug: logged, answered 500)."""
    if isinstance(error, WarmstartError):
        return error_answer(error, not_found=NOT_FOUND_CODE.get(route, "BLOB_UNKNOWN"))
    if isinstance(error, aiohttp.ClientError | TimeoutError | ConnectionError):
        reason = one_line(str(error) or type(error).__name__)
        return oci_error("UNAVAILABLE", f"no source could be reached: {reason}")
    return None


# -- /v2/ ------------------------------------------------------------------------------------


async def v2_root(request: web.Request) -> web.StreamResponse:
    request[ROUTE] = "v2"
    if request.method not in ("GET", "HEAD"):
        return error_response(unsupported(request.method))
    return web.Response(
        status=200, body=b"{}", headers={**API_VERSION_HEADER, "Content-Type": JSON_TYPE}
    )


async def v2_dispatch(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    request[ROUTE] = "v2_other"
    if request.method not in ("GET", "HEAD"):
        request[ROUTE] = "write"
        return error_response(unsupported(request.method))
    if request.match_info["tail"] == "":
        return await v2_root(request)
    try:
        target = parse_v2_path(request.match_info["tail"])
        request[ROUTE] = "manifest" if target.kind is Kind.MANIFEST else "blob"
        registry = choose_registry(
            request.query.getall("ns", []), state.config.upstreams, state.config.default_upstream
        )
    except BadRequest as e:
        return error_response(e.response)
    if state.fetcher is None:
        return error_response(oci_error("UNAVAILABLE", "the agent is starting"))
    if target.kind is Kind.MANIFEST:
        return await _manifest(request, state, registry, target)
    if request.method == "HEAD":
        return await _blob_head(request, state, registry, target)
    return await _blob_get(request, state, registry, target)


async def _manifest(
    request: web.Request, state: AgentState, registry: str, target: V2Target
) -> web.StreamResponse:
    assert state.fetcher is not None
    accept = merge_accept(request.headers.getall("Accept", []))
    result = await state.fetcher.get_manifest(
        registry, target.name, target.reference, accept, _client_identity(request)
    )
    actual = Digest.of(result.body, result.digest.algorithm)
    wanted = target.digest or result.digest
    if actual != result.digest or actual != wanted:
        log.error("manifest %s@%s: served bytes hash to %s", target.name, wanted, actual)
        return error_response(
            oci_error("UNKNOWN", f"manifest bytes do not match digest {wanted}", status=502)
        )
    state.metrics.lookup("manifest", result.source)
    if request.method == "GET" and state.linker is not None:
        await _link_for_containerd(request, state, registry, target, result)
    headers = {
        **API_VERSION_HEADER,
        "Content-Type": result.media_type,
        "Docker-Content-Digest": str(result.digest),
        "ETag": _etag(result.digest),
    }
    if request.method == "HEAD":
        resp = web.StreamResponse(status=200, headers=headers)
        resp.content_length = len(result.body)
        await resp.prepare(request)
        await resp.write_eof()
        return resp
    state.metrics.served(result.source, len(result.body))
    return web.Response(status=200, body=result.body, headers=headers)


async def _link_for_containerd(
    request: web.Request,
    state: AgentState,
    registry: str,
    target: V2Target,
    result: ManifestResult,
) -> None:
    """containerd's next step after this manifest is a writer per blob: put the image's blobs
    in its content store first (fetching the missing ones), so it transfers none of them."""
    assert state.linker is not None
    client = _client_identity(request)
    if client.peer is not None or CONTAINERD_AGENT not in request.headers.get("User-Agent", ""):
        return
    try:
        manifest = parse_manifest(result.body, result.media_type)
    except OCIError:
        return  # not ours to judge here: the client reads it
    if not isinstance(manifest, ImageManifest):
        return  # an index: containerd asks for the platform's manifest next
    try:
        report = await state.linker.prepare(
            registry, target.name, manifest, client, state.config.link_wait
        )
    except Exception as e:  # linking only saves work: never fail the answer
        log.warning("linking %s@%s into containerd failed: %s", target.name, result.digest, e)
        return
    log.info(
        "%s@%s for containerd: %d blob(s) linked, %d present, %d still arriving (%.2f s)",
        target.name,
        result.digest.short,
        report.linked,
        report.present,
        len(report.missing),
        report.seconds,
    )


def _blob_headers(digest: Digest) -> dict[str, str]:
    return {
        **API_VERSION_HEADER,
        "Content-Type": OCTET_STREAM,
        "Docker-Content-Digest": str(digest),
        "ETag": _etag(digest),
        "Accept-Ranges": "bytes",
    }


async def _blob_head(
    request: web.Request, state: AgentState, registry: str, target: V2Target
) -> web.StreamResponse:
    assert state.fetcher is not None and target.digest is not None
    size = await state.fetcher.stat_blob(
        registry, target.name, target.digest, _client_identity(request)
    )
    resp = web.StreamResponse(status=200, headers=_blob_headers(target.digest))
    resp.content_length = size
    await resp.prepare(request)
    await resp.write_eof()
    return resp


def _open(path: Any) -> IO[bytes]:
    return open(path, "rb")  # closed by the caller


async def _open_stored(result: BlobResult) -> IO[bytes] | None:
    """The stored file, checked against the announced size; None if it is gone (evicted)."""
    assert result.path is not None
    try:
        fobj = await asyncio.to_thread(_open, result.path)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fobj.fileno()).st_size
    except OSError:
        fobj.close()
        raise
    if size != result.size:
        fobj.close()
        raise StoreError(f"stored blob {result.digest} has {size} bytes, expected {result.size}")
    return fobj


RETRY_BUSY = "0.2"  # seconds a peer waits before asking a busy node for a piece again


async def _piece_get(
    request: web.Request, state: AgentState, registry: str, target: V2Target
) -> web.StreamResponse:
    """A peer's piece request: one ``Range`` of the blob, answered only from what this node
    holds verified, within its upload slots."""
    assert target.digest is not None
    request[ROUTE] = "piece"
    digest = target.digest
    server = state.piece_server()
    ranges = request.headers.getall("Range", [])
    if server is None or len(ranges) != 1:
        return error_response(oci_error("BLOB_UNKNOWN", "no pieces here", status=404))
    if not state.uploads.take():
        state.metrics.piece_uploads_refused.inc()
        return error_response(
            oci_error(
                "UNAVAILABLE",
                "every upload slot is busy: ask another holder",
                headers={"Retry-After": RETRY_BUSY},
            )
        )
    try:
        fobj: IO[bytes] | None = None
        try:
            # The range's end is checked against the blob's size once it is known.
            first, _, last = ranges[0].removeprefix("bytes=").partition("-")
            start, end = int(first), int(last) + 1
            if start < 0 or end <= start:
                raise ValueError(ranges[0])
            try:
                result = await server.get_piece(
                    registry, target.name, digest, start, end, _client_identity(request)
                )
            except PieceBusyError as e:
                state.metrics.piece_uploads_refused.inc()
                return error_response(
                    oci_error("UNAVAILABLE", str(e), headers={"Retry-After": RETRY_BUSY})
                )
            if result.path is not None:
                fobj = await _open_stored(result)
                if fobj is None:
                    return error_response(oci_error("BLOB_UNKNOWN", "evicted", status=404))
        except ValueError:
            return _bad_request(f"a piece request needs one byte range, not {ranges[0][:100]!r}")
        try:
            brange = evaluate_range(ranges[0], result.size)
            if brange.kind is not RangeKind.PARTIAL or brange.end + 1 != end:
                return error_response(
                    oci_error("RANGE_INVALID", f"{ranges[0][:100]!r} is no piece", status=416)
                )
            sent = 0

            def count(n: int) -> None:
                nonlocal sent
                sent += n
                state.metrics.peer_served("piece", n)

            headers = _blob_headers(digest)
            if fobj is not None:
                resp = await send_file(request, fobj, brange, headers, count)
            else:
                assert result.open_stream is not None
                try:
                    resp = await send_stream(request, result.open_stream, brange, headers, count)
                except StreamFailed as e:
                    raise e.error from None
            if sent == brange.length:
                server.piece_sent(digest, start)
            return resp
        finally:
            if fobj is not None:
                fobj.close()
    finally:
        state.uploads.give()


async def _blob_get(
    request: web.Request, state: AgentState, registry: str, target: V2Target
) -> web.StreamResponse:
    assert state.fetcher is not None and target.digest is not None
    digest = target.digest
    client = _client_identity(request)
    if client.peer is not None and request.headers.get(PIECE_HEADER):
        return await _piece_get(request, state, registry, target)
    fobj: IO[bytes] | None = None
    for _attempt in range(2):  # a stored file can be evicted between lookup and open
        result = await state.fetcher.get_blob(registry, target.name, digest, client)
        if result.digest != digest:
            return error_response(
                oci_error("UNKNOWN", f"fetcher answered {result.digest} for {digest}", status=502)
            )
        if result.path is None:
            break
        fobj = await _open_stored(result)
        if fobj is not None:
            break
    else:
        return error_response(oci_error("UNAVAILABLE", f"blob {digest} was evicted; retry"))
    try:
        ranges = request.headers.getall("Range", [])
        brange = evaluate_range(
            ranges[0] if len(ranges) == 1 else None,
            result.size,
            if_range=request.headers.get("If-Range"),
            etag=_etag(digest),
        )
        state.metrics.lookup("blob", result.source)
        headers = _blob_headers(digest)
        if brange.kind is RangeKind.UNSATISFIABLE:
            err = oci_error(
                "RANGE_INVALID",
                f"range {ranges[0][:100]!r} cannot be served from {result.size} bytes",
                headers={"Content-Range": brange.content_range or f"bytes */{result.size}"},
            )
            resp = error_response(err)
            resp.headers.update({k: v for k, v in headers.items() if k != "Content-Type"})
            return resp

        def count(n: int) -> None:
            state.metrics.served(result.source, n)
            if client.peer is not None:
                state.metrics.peer_served("blob", n)

        state.metrics.responses_in_flight.inc()
        try:
            if fobj is not None:
                return await send_file(request, fobj, brange, headers, count)
            if result.open_stream is not None:
                try:
                    return await send_stream(request, result.open_stream, brange, headers, count)
                except StreamFailed as e:
                    raise e.error from None
            return error_response(oci_error("UNKNOWN", f"no way to read blob {digest}", status=502))
        finally:
            state.metrics.responses_in_flight.dec()
    finally:
        if fobj is not None:
            fobj.close()


# -- control routes ------------------------------------------------------------------------


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


def _bad_request(message: str) -> web.Response:
    return error_response(oci_error("INVALID_REQUEST", message, status=400))


async def _json_body(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_CONTROL_BODY:
        raise ValueError("request body too large")
    raw = await request.content.read(MAX_CONTROL_BODY + 1)
    if len(raw) > MAX_CONTROL_BODY:
        raise ValueError("request body too large")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"body is not JSON: {e}") from None


def _request_invalid(error: RequestInvalid) -> web.Response:
    return error_response(oci_error(error.code, str(error), status=400))


def _peers_answer(peers: PeerSet) -> web.Response:
    answer = PeersResponse(peers=list(peers.urls), self_url=peers.self_url, version=peers.version)
    return web.json_response(answer.to_json())


async def peers_get(request: web.Request) -> web.StreamResponse:
    return _peers_answer(state_of(request).peers)


async def peers_put(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    if not _authorized(request, state.config.peer_token):
        return _unauthorized()
    try:
        wanted = parse_request(PeersRequest, await _json_body(request))
        urls = state.peers.replace(wanted.peers)
    except RequestInvalid as e:
        return _request_invalid(e)
    except ValueError as e:
        return _bad_request(str(e))
    log.info("peers replaced: %s", ", ".join(urls) or "none")
    return _peers_answer(state.peers)


async def status(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    store = state.store
    hot: set[str] = set()
    hot_images: list[tuple[str, str]] = []
    if state.hot is not None:
        try:
            hot_images = list(await state.hot.hot_images())
            hot = {name for pair in hot_images for name in pair if name}
        except Exception as e:  # containerd unreachable: report warm/partial only
            log.warning("cannot list hot images: %s", e)
    images = store.images() if store is not None else []
    usage = store.usage() if store is not None else 0
    shared = sum(store.shared_blobs().values()) if store is not None else 0
    model_extracted = store.model_usage() if store is not None else 0
    body = status_body(
        node_id=state.config.node_id,
        advertise_url=state.config.advertise_url,
        store_root=str(store.root) if store is not None else "",
        usage=usage,
        shared=shared,
        model_extracted=model_extracted,
        budget=store.budget if store is not None else state.config.budget,
        images=images,
        hot=hot,
        hot_images=hot_images,
        peers=state.peers.urls,
        upstreams=state.config.upstreams,
        default_upstream=state.config.default_upstream,
        peer_source=(
            state.peer_source(state.peers_changed_at)
            if state.peer_source is not None
            else PeerSource(kind="static", changed_at=state.peers_changed_at)
        ),
        node_setup=state.node_setup,
        models_root=store.layout.models_root if store is not None else None,
    )
    return web.json_response(body.to_json())


def _health(state: AgentState) -> Health:
    if state.fetcher is None:
        return Health(ok=False, message="starting")
    if state.store is not None:
        try:
            state.store.usage()
        except StoreError as e:
            return Health(ok=False, message=f"store unavailable: {e}")
    return Health(ok=True, message="ok")


async def healthz(request: web.Request) -> web.StreamResponse:
    health = _health(state_of(request))
    return web.Response(status=health.status, text=health.text())


async def metrics(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    if state.store is not None:
        with contextlib.suppress(StoreError):
            shared = sum(state.store.shared_blobs().values())
            state.metrics.set_store(
                state.store.usage(), state.store.budget, shared, state.store.model_usage()
            )
    body, content_type = state.metrics.render()
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp


async def prewarm(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    if not _authorized(request, state.config.peer_token):
        return _unauthorized()
    try:
        wanted = parse_request(PrewarmRequest, await _json_body(request))
    except RequestInvalid as e:
        return _request_invalid(e)
    except ValueError as e:
        return _bad_request(str(e))
    ref = wanted.reference
    if state.config.upstream(ref.registry) is None:
        return error_response(denied(f"registry {ref.registry!r} is not configured on this agent"))
    if state.prewarmer is None:
        return error_response(
            oci_error("UNSUPPORTED", "pre-warm is not available on this agent", status=501)
        )
    try:
        result = await state.prewarmer.prewarm(
            ref, wanted.platform, wanted.hot, client=_client_identity(request), model=wanted.model
        )
    except ValueError as e:  # an OCIError too: the request names no valid image
        return _bad_request(str(e))
    if wanted.pin and state.store is not None:
        _hold_pin(state, str(ref), wanted.holder or "", result)
    if result.model is not None:
        m = result.model
        state.metrics.materialised(m.built, m.linked_bytes, m.extracted_bytes)
    return web.json_response(result.to_json())


def _hold_pin(state: AgentState, reference: str, holder: str, result: PrewarmResponse) -> None:
    """Pin the image or model by reference (and its top and platform manifests) for
    ``holder`` until that holder's POST /unpin."""
    assert state.store is not None
    digests = {Digest.parse(result.digest), Digest.parse(result.manifest_digest)}
    name = f"pinned:{reference}" + (f" by {holder}" if holder else "")
    pin = state.store.pin(name, digests, reference)
    old = state.pins.pop((reference, holder), None)
    state.pins[(reference, holder)] = pin
    if old is not None:
        old.release()


async def unpin(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    if not _authorized(request, state.config.peer_token):
        return _unauthorized()
    try:
        wanted = parse_request(UnpinRequest, await _json_body(request))
    except RequestInvalid as e:
        return _request_invalid(e)
    except ValueError as e:
        return _bad_request(str(e))
    pin = state.pins.pop((str(wanted.reference), wanted.holder or ""), None)
    if pin is not None:
        pin.release()
    answer = UnpinResponse(reference=str(wanted.reference), released=pin is not None)
    return web.json_response(answer.to_json())


async def pieces(request: web.Request) -> web.StreamResponse:
    """``POST /pieces/<digest>?ns=<registry>``: the piece tracker (``warmstart.fetch.tracker``):
    a peer announces what it holds and gets the piece list and the holders."""
    state = state_of(request)
    server = state.piece_server()
    if server is None:
        return error_response(oci_error("UNSUPPORTED", "no pieces on this agent", status=404))
    client = _client_identity(request)
    if client.peer is None:
        return error_response(oci_error("DENIED", "the piece tracker is for peers", status=403))
    try:
        digest = Digest.parse(request.match_info["digest"])
        registry = choose_registry(
            request.query.getall("ns", []), state.config.upstreams, state.config.default_upstream
        )
        body = await _json_body(request)
        answer = await server.pieces_request(registry, digest, body, client)
    except BadRequest as e:
        return error_response(e.response)
    except ValueError as e:  # an OCIError too: the request names no valid image
        return _bad_request(str(e))
    return web.json_response(answer)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_route("*", "/v2", v2_root, name="v2")
    r.add_route("*", "/v2/{tail:.*}", v2_dispatch, name="v2_tail")
    r.add_get("/peers", peers_get, name="peers")
    r.add_put("/peers", peers_put, name="peers_put")
    r.add_get("/status", status, name="status")
    r.add_get("/healthz", healthz, name="healthz")
    r.add_get("/metrics", metrics, name="metrics")
    r.add_post("/prewarm", prewarm, name="prewarm")
    r.add_post("/unpin", unpin, name="unpin")
    r.add_post("/pieces/{digest}", pieces, name="pieces")
