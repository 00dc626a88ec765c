from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_log import AccessLogger

from warmstart.agent.httplog import CLIENT_GONE, MAX_REASON, AgentAccessLogger, ServerLog
from warmstart.registry.errors import one_line


def test_a_parse_error_goes_to_debug_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    log = ServerLog(logging.getLogger("t.http"))
    with caplog.at_level(logging.DEBUG, logger="t.http"):
        log.exception("Error handling request from %s", "127.0.0.1", exc_info=BadHttpMessage("x"))
    (record,) = caplog.records
    assert record.levelno == logging.DEBUG and record.exc_info is None
    assert "127.0.0.1" in record.getMessage()


def test_other_errors_keep_their_traceback_at_error(caplog: pytest.LogCaptureFixture) -> None:
    log = ServerLog(logging.getLogger("t.http"))
    try:
        raise RuntimeError("boom")
    except RuntimeError as e:
        with caplog.at_level(logging.DEBUG, logger="t.http"):
            log.exception("Error handling request from %s", "127.0.0.1", exc_info=e)
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None


def test_one_line() -> None:
    assert one_line("a\n  b\r\n c", MAX_REASON) == "a b c"
    assert len(one_line("x" * 1000, MAX_REASON)) == 200


def test_a_request_whose_client_went_away_is_left_out_of_the_access_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The handler layer already logged its one line (with the bytes sent)."""
    access = AgentAccessLogger(logging.getLogger("t.access"), AccessLogger.LOG_FORMAT)
    gone = make_mocked_request("GET", "/v2/a/blobs/x")
    gone[CLIENT_GONE] = True
    kept = make_mocked_request("GET", "/v2/a/blobs/y")
    with caplog.at_level(logging.DEBUG, logger="t.access"):
        access.log(gone, web.Response(status=200), 0.1)
        access.log(kept, web.Response(status=200), 0.1)
    (record,) = caplog.records
    assert "/v2/a/blobs/y" in record.getMessage()
