"""GET /metrics: the Prometheus exposition of app/metrics.py."""

from __future__ import annotations

import asyncio
import hmac

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from app.auth import public
from app.errors import Unauthorized
from app.keys import METRICS, SETTINGS


@public
async def serve_metrics(request: web.Request) -> web.Response:
    token = request.app[SETTINGS].metrics_token
    sent = request.headers.get("Authorization", "").encode()
    if token and not hmac.compare_digest(sent, f"Bearer {token}".encode()):  # no timing hints
        raise Unauthorized("GET /metrics needs the METRICS_TOKEN as a bearer token")
    body = await asyncio.get_running_loop().run_in_executor(None, request.app[METRICS].exposition)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
