"""The agent's HTTP routes: the read side of the OCI Distribution API as a pull-through mirror
(``v2_routes``), plus peers, status, health, metrics, pre-warm, pins and the piece tracker
(``control_routes``), behind one middleware (``middleware``: metrics, and every error answered
once from what it carries).

Handlers only parse and answer; where bytes come from is the :class:`Fetcher`'s business
(``warmstart.fetch.interfaces``). Pure rules live beside them: ``paths`` (routes, names, ``?ns=``,
Accept), ``ranges`` (Range), ``errors`` (OCI error bodies), ``status``, and ``api`` (the bodies
of the control routes, shared with ``warmstart.agent.client``).
"""

from __future__ import annotations

from aiohttp import web

from warmstart.agent.control_routes import (
    healthz,
    metrics,
    peers_get,
    peers_put,
    pieces,
    prewarm,
    status,
    unpin,
)
from warmstart.agent.v2_routes import v2_dispatch, v2_root


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
