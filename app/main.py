"""The application factory: routes, middlewares, and every resource's lifetime."""

from __future__ import annotations

import asyncio
import logging
import socket

from aiohttp import web

from app.admission import Admission, admission_middleware
from app.api.middlewares import no_sniffing, request_id_middleware
from app.api.responses import error_middleware
from app.api.routes import routes
from app.auth import TokenKeys, Tokens, auth_middleware
from app.clients import client_address_middleware
from app.cursors import Cursors
from app.deadlines import deadline_middleware
from app.delivery import ImageUrls
from app.keys import (
    ADMISSION,
    CURSORS,
    IMAGE_URLS,
    LIFECYCLE,
    METRICS,
    RATE_LIMITER,
    READINESS,
    SETTINGS,
    THROTTLES,
    TOKEN_KEYS,
    TOKENS,
    UPLOAD_BUDGET,
)
from app.lifecycle import (
    Lifecycle,
    close_connection_while_draining,
    in_flight_middleware,
    serve_until_signalled,
)
from app.memory import tune_allocator
from app.metrics import Metrics, metrics_middleware
from app.ratelimit import (
    AccountThrottles,
    RateLimiter,
    add_rate_limit_headers,
    rate_limit_middleware,
)
from app.readiness import Readiness
from app.resources import (
    admission_ctx,
    database_ctx,
    feed_ctx,
    images_ctx,
    memory_ctx,
    metrics_ctx,
    passwords_ctx,
    queue_ctx,
    storage_ctx,
    sweeps_ctx,
)
from app.settings import Settings, SettingsError, redact_url
from app.uploads import ByteBudget

log = logging.getLogger(__name__)

# Larger bodies never reach a handler; the upload route streams with its own cap.
JSON_BODY_LIMIT = 64 * 1024


def create_app(settings: Settings) -> web.Application:
    if not settings.jwt_secret:
        raise SettingsError("JWT_SECRET is not set: `make run` makes one, `serve` needs it")
    app = web.Application(
        # Outermost first: every request is known to be in flight (for a graceful stop),
        # every response gets an id and is counted, every error gets one shape, then the
        # request is admitted in its class (or refused before any work), held to its deadline,
        # and the caller is identified and held to their rate.
        middlewares=[
            in_flight_middleware,
            request_id_middleware,
            client_address_middleware(settings.trusted_proxies),
            metrics_middleware,
            error_middleware,
            admission_middleware,
            deadline_middleware,
            auth_middleware,
            rate_limit_middleware,
        ],
        client_max_size=JSON_BODY_LIMIT,
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics(
        settings.prometheus_multiproc_dir, settings.service_instance or socket.gethostname()
    )
    app[LIFECYCLE] = Lifecycle()
    app[READINESS] = Readiness(settings.readiness_timeout)
    app[ADMISSION] = Admission(settings, app[METRICS])
    app.on_response_prepare.append(close_connection_while_draining)
    app.on_response_prepare.append(no_sniffing)
    app.on_response_prepare.append(add_rate_limit_headers)
    app[TOKENS] = Tokens(settings)
    app[TOKEN_KEYS] = TokenKeys(settings.auth_cache_seconds)
    app[CURSORS] = Cursors(settings.jwt_secret)
    app[IMAGE_URLS] = ImageUrls.of(settings)
    app[RATE_LIMITER] = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    app[THROTTLES] = AccountThrottles(settings)
    app[UPLOAD_BUDGET] = ByteBudget(settings.upload_memory_budget)
    # Opened in this order, closed in reverse (app/resources.py).
    app.cleanup_ctx.append(admission_ctx)
    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(metrics_ctx)
    app.cleanup_ctx.append(storage_ctx)
    app.cleanup_ctx.append(queue_ctx)
    app.cleanup_ctx.append(feed_ctx)
    app.cleanup_ctx.append(passwords_ctx)
    app.cleanup_ctx.append(images_ctx)
    app.cleanup_ctx.append(memory_ctx)
    app.cleanup_ctx.append(sweeps_ctx)
    app.router.add_routes(routes)
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
    if not settings.jwt_secret:
        raise SystemExit("JWT_SECRET is not set: give it 32+ random characters, or use `make run`")
    log.info(
        "starting",
        extra={
            "url": f"http://{settings.host}:{settings.port}",
            "database": redact_url(settings.database_url),
            "s3_endpoint": settings.s3_endpoint_url or "aws",
            "bucket": settings.s3_bucket,
        },
    )
    tune_allocator()
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(serve_until_signalled(create_app(settings), settings))
