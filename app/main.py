"""The application factory: routes, middlewares, and every resource's lifetime."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from app import health
from app.db import database_ctx
from app.keys import SETTINGS
from app.logs import JsonAccessLogger
from app.middlewares import error_middleware, request_id_middleware
from app.settings import Settings, redact_url
from app.storage import storage_ctx

log = logging.getLogger(__name__)

# Larger bodies never reach a handler; the upload route streams with its own cap.
JSON_BODY_LIMIT = 64 * 1024


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware],
        client_max_size=JSON_BODY_LIMIT,
    )
    app[SETTINGS] = settings
    # Opened in this order, closed in reverse; a resource is closed only if it opened.
    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(storage_ctx)
    app.router.add_routes(
        [
            web.get("/healthz", health.healthz, allow_head=True),
            web.get("/readyz", health.readyz, allow_head=True),
        ]
    )
    return app


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def serve(settings: Settings) -> None:
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is not set: point it at PostgreSQL, or use `make run`")
    log.info(
        "starting",
        extra={
            "url": f"http://{settings.host}:{settings.port}",
            "database": redact_url(settings.database_url),
            "s3_endpoint": settings.s3_endpoint_url or "aws",
            "bucket": settings.s3_bucket,
        },
    )
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log_class=JsonAccessLogger,
        shutdown_timeout=settings.shutdown_timeout,
        loop=new_event_loop(),
        print=None,
    )
