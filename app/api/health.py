"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from aiohttp import web

from app import db
from app.api.responses import error_response, json_response
from app.auth import public
from app.db import Database
from app.keys import DATABASE, LIFECYCLE, SETTINGS, STORAGE


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
    timeout = request.app[SETTINGS].readiness_timeout
    postgresql, s3 = await asyncio.gather(
        _probe(_check_database(request.app[DATABASE]), timeout),
        _probe(request.app[STORAGE].check(), timeout),
    )
    checks = {"postgresql": postgresql, "s3": s3}
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


async def _check_database(database: Database) -> None:
    pool = database.pool
    if pool.get_size() >= pool.get_max_size() and pool.get_idle_size() == 0:
        # Every connection is open and at work, so the server answers. Waiting for one
        # would fail this check under load: a balancer would then take every process out
        # of rotation at once, and hold requests instead of letting them be shed here.
        return
    async with database.connection() as conn:
        await db.queries.ping(conn)


async def _probe(check: Awaitable[None], seconds: float) -> str:
    """ "ok", or what went wrong in a few words (never a message that could hold a secret)."""
    try:
        async with asyncio.timeout(seconds):
            await check
    except TimeoutError:
        return f"no answer within {seconds:g}s"
    except Exception as exc:
        return f"failed: {type(exc).__name__}"
    return "ok"
