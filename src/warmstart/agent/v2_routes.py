"""The ``/v2/`` routes: the read side of the OCI Distribution API as a pull-through mirror.

Manifests and blobs (GET, HEAD, Range, a peer's piece request); where bytes come from is the
:class:`~warmstart.fetch.interfaces.Fetcher`'s business. Errors are raised, and answered by the
middleware (``warmstart.agent.middleware``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import IO, Any

from aiohttp import web

from warmstart.agent.errors import oci_error, unsupported
from warmstart.agent.linking import ImageLinker
from warmstart.agent.middleware import API_VERSION_HEADER, JSON_TYPE, bad_request, error_response
from warmstart.agent.paths import (
    BadRequest,
    Kind,
    V2Target,
    choose_registry,
    merge_accept,
    parse_v2_path,
)
from warmstart.agent.ranges import RangeKind, evaluate_range
from warmstart.agent.sending import StreamFailed, send_file, send_stream
from warmstart.agent.state import ROUTE, AgentState, client_identity, state_of
from warmstart.fetch.interfaces import PIECE_HEADER, BlobResult, ManifestResult, PieceBusyError
from warmstart.oci import Digest, ImageManifest, OCIError
from warmstart.oci.manifest import parse_manifest
from warmstart.store import StoreError

log = logging.getLogger(__name__)

OCTET_STREAM = "application/octet-stream"
CONTAINERD_AGENT = "containerd/"  # in containerd's User-Agent (ctr, the CRI plugin)


def _etag(digest: Digest) -> str:
    return f'"{digest}"'


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
            request.query.getall("ns", []),
            state.parts.config.upstreams,
            state.parts.config.default_upstream,
        )
    except BadRequest as e:
        return error_response(e.response)
    if target.kind is Kind.MANIFEST:
        return await _manifest(request, state, registry, target)
    if request.method == "HEAD":
        return await _blob_head(request, state, registry, target)
    return await _blob_get(request, state, registry, target)


async def _manifest(
    request: web.Request, state: AgentState, registry: str, target: V2Target
) -> web.StreamResponse:
    accept = merge_accept(request.headers.getall("Accept", []))
    result = await state.parts.fetcher.get_manifest(
        registry, target.name, target.reference, accept, client_identity(request)
    )
    actual = Digest.of(result.body, result.digest.algorithm)
    wanted = target.digest or result.digest
    if actual != result.digest or actual != wanted:
        log.error("manifest %s@%s: served bytes hash to %s", target.name, wanted, actual)
        return error_response(
            oci_error("UNKNOWN", f"manifest bytes do not match digest {wanted}", status=502)
        )
    state.parts.metrics.lookup("manifest", result.source)
    linker = state.parts.linker
    if request.method == "GET" and linker is not None:
        await _link_for_containerd(request, linker, state, registry, target, result)
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
    state.parts.metrics.served(result.source, len(result.body))
    return web.Response(status=200, body=result.body, headers=headers)


async def _link_for_containerd(
    request: web.Request,
    linker: ImageLinker,
    state: AgentState,
    registry: str,
    target: V2Target,
    result: ManifestResult,
) -> None:
    """containerd's next step after this manifest is a writer per blob: put the image's blobs
    in its content store first (fetching the missing ones), so it transfers none of them."""
    client = client_identity(request)
    if client.peer is not None or CONTAINERD_AGENT not in request.headers.get("User-Agent", ""):
        return
    try:
        manifest = parse_manifest(result.body, result.media_type)
    except OCIError:
        return  # not ours to judge here: the client reads it
    if not isinstance(manifest, ImageManifest):
        return  # an index: containerd asks for the platform's manifest next
    try:
        report = await linker.prepare(
            registry, target.name, manifest, client, state.parts.config.link_wait
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
    assert target.digest is not None  # blob paths always name one
    size = await state.parts.fetcher.stat_blob(
        registry, target.name, target.digest, client_identity(request)
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
    server = state.parts.piece_server()
    ranges = request.headers.getall("Range", [])
    if server is None or len(ranges) != 1:
        return error_response(oci_error("BLOB_UNKNOWN", "no pieces here", status=404))
    if not state.uploads.take():
        state.parts.metrics.piece_uploads_refused.inc()
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
                    registry, target.name, digest, start, end, client_identity(request)
                )
            except PieceBusyError as e:
                state.parts.metrics.piece_uploads_refused.inc()
                return error_response(
                    oci_error("UNAVAILABLE", str(e), headers={"Retry-After": RETRY_BUSY})
                )
            if result.path is not None:
                fobj = await _open_stored(result)
                if fobj is None:
                    return error_response(oci_error("BLOB_UNKNOWN", "evicted", status=404))
        except ValueError:
            return bad_request(f"a piece request needs one byte range, not {ranges[0][:100]!r}")
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
                state.parts.metrics.peer_served("piece", n)

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
    assert target.digest is not None  # blob paths always name one
    digest = target.digest
    client = client_identity(request)
    if client.peer is not None and request.headers.get(PIECE_HEADER):
        return await _piece_get(request, state, registry, target)
    fobj: IO[bytes] | None = None
    for _attempt in range(2):  # a stored file can be evicted between lookup and open
        result = await state.parts.fetcher.get_blob(registry, target.name, digest, client)
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
        state.parts.metrics.lookup("blob", result.source)
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
            state.parts.metrics.served(result.source, n)
            if client.peer is not None:
                state.parts.metrics.peer_served("blob", n)

        state.parts.metrics.responses_in_flight.inc()
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
            state.parts.metrics.responses_in_flight.dec()
    finally:
        if fobj is not None:
            fobj.close()
