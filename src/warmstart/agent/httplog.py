"""How the agent's HTTP server logs: one access line per request, also for requests aiohttp
could not parse.

aiohttp answers a malformed request (garbage, a bad header, an overlong request line, TLS on
the plain port) with 400 and logs a full traceback at ERROR for each one, so a burst of
garbage floods the log. Here such a request is one WARNING access line that says why it was
refused (:class:`AgentAccessLogger`), and the server logger (:class:`ServerLog`) keeps its
tracebacks for real failures only.

A client that went away before its answer was complete is one INFO line from the handler layer
(with the bytes sent); the handler marks the request (:data:`CLIENT_GONE`) and the access log
leaves it out, so it stays one line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_log import AccessLogger

from warmstart.registry.errors import one_line

MAX_REASON = 200
# Set on a request whose client went away (already logged by the handler layer).
_REQUEST_KEY = getattr(web, "RequestKey", None)
CLIENT_GONE: Any = (
    _REQUEST_KEY("warmstart_client_gone", bool) if _REQUEST_KEY else "warmstart_client_gone"
)


def unparsed(request: web.BaseRequest) -> bool:
    """Whether aiohttp's parser refused this request (its placeholder message stands in)."""
    return getattr(request, "_message", None) is web_protocol.ERROR


class AgentAccessLogger(AccessLogger):
    """aiohttp's access log, except that a request the parser refused is logged at WARNING with
    the parser's reason instead of ``"UNKNOWN / HTTP/1.0" 400``."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if request.get(CLIENT_GONE):
            return  # its one line is already out
        if not unparsed(request):
            super().log(request, response, time)
            return
        text = getattr(response, "text", None) if isinstance(response, web.Response) else None
        reason = one_line(text or "", MAX_REASON) or "malformed request"
        self.logger.warning(
            "%s bad request refused with %d: %s", request.remote, response.status, reason
        )


class ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The logger aiohttp's request handler reports errors to: a request it could not parse
    (already in the access log, see :class:`AgentAccessLogger`) goes to DEBUG without a
    traceback; every other error keeps its traceback at ERROR."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return msg, kwargs

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        error = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(error, HttpProcessingError):
            self.logger.debug(
                "%s: %s", str(msg) % args if args else msg, one_line(str(error), MAX_REASON)
            )
            return
        self.logger.error(msg, *args, exc_info=exc_info, **kwargs)


__all__ = ["CLIENT_GONE", "MAX_REASON", "AgentAccessLogger", "ServerLog", "unparsed"]
