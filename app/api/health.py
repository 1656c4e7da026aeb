"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from aiohttp import web

from app.api.responses import error_response, json_response
from app.auth import public
from app.keys import DATABASE, LIFECYCLE, READINESS, STORAGE


@public
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@public
async def readyz(request: web.Request) -> web.Response:
    if request.app[LIFECYCLE].draining:
        return error_response(
            503,
            "draining",
            "shutting down: finishing the requests in flight",
            headers={"Retry-After": "1"},
        )
    checks = await request.app[READINESS].checks(request.app[DATABASE], request.app[STORAGE])
    failed = [name for name, outcome in checks.items() if outcome != "ok"]
    if not failed:
        return json_response({"status": "ready", "checks": checks})
    return error_response(
        503,
        "not_ready",
        f"not ready: {' and '.join(failed)} unavailable",
        headers={"Retry-After": "1"},
        extra={"checks": checks},
    )
