"""The agent's one middleware: request metrics, and the one place an error becomes an answer.

Handlers raise; :func:`observe` answers a :class:`~warmstart.errors.WarmstartError` with its
status, OCI code and one-line message (``warmstart.agent.errors``), a network failure reaching
a source as 503, anything else as a logged 500; and a client that went away as nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from warmstart.agent.errors import ErrorResponse, error_answer, oci_error
from warmstart.agent.httplog import CLIENT_GONE
from warmstart.agent.sending import ClientGone, TransferAborted, abort_connection
from warmstart.agent.state import route_of, state_of
from warmstart.errors import WarmstartError, one_line

log = logging.getLogger(__name__)

API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}
JSON_TYPE = "application/json"
# What a not-found answers, by route (the distribution spec's codes); BLOB_UNKNOWN elsewhere.
NOT_FOUND_CODE = {"manifest": "MANIFEST_UNKNOWN", "prewarm": "MANIFEST_UNKNOWN"}


def error_response(err: ErrorResponse) -> web.Response:
    headers = {**API_VERSION_HEADER, **err.headers, "Content-Type": JSON_TYPE}
    return web.Response(status=err.status, body=err.body(), headers=headers)


def bad_request(message: str) -> web.Response:
    return error_response(oci_error("INVALID_REQUEST", message, status=400))


def answer_for(error: Exception, route: str) -> ErrorResponse | None:
    """The one place errors become answers: a :class:`WarmstartError` as it says, a network
    failure reaching a source as 503; None for anything else (a bug: logged, answered 500)."""
    if isinstance(error, WarmstartError):
        return error_answer(error, not_found=NOT_FOUND_CODE.get(route, "BLOB_UNKNOWN"))
    if isinstance(error, aiohttp.ClientError | TimeoutError | ConnectionError):
        reason = one_line(str(error) or type(error).__name__)
        return oci_error("UNAVAILABLE", f"no source could be reached: {reason}")
    return None


def _response_started(request: web.Request) -> bool:
    """Whether any byte of a response went out on this request's connection."""
    return request.writer.output_size > 0


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
        state.parts.metrics.aborted_responses.inc()
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
            reason = one_line(e.strerror or e or type(e).__name__)
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
        state.parts.metrics.request(route_of(request), request.method, status)
