"""Every typed key the application and its requests carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from app.settings import Settings

if TYPE_CHECKING:
    from app.admission import Admission
    from app.auth import TokenKeys, Tokens
    from app.cursors import Cursors
    from app.db import Database
    from app.delivery import ImageUrls
    from app.fanout import FanOut
    from app.images import ImagePool
    from app.lifecycle import Lifecycle
    from app.metrics import Metrics
    from app.passwords import Passwords
    from app.queue import JobQueue
    from app.ratelimit import AccountThrottles, RateLimiter
    from app.readiness import Readiness
    from app.storage import Storage
    from app.timelines import Timelines
    from app.uploads import ByteBudget

SETTINGS = web.AppKey("settings", Settings)
DATABASE: web.AppKey[Database] = web.AppKey("database")
STORAGE: web.AppKey[Storage] = web.AppKey("storage")
# Object key -> the URL clients fetch it from (IMAGE_BASE_URL), applied when a response is made.
IMAGE_URLS: web.AppKey[ImageUrls] = web.AppKey("image_urls")
QUEUE: web.AppKey[JobQueue] = web.AppKey("queue")
# FEED_MODE=push|hybrid: the readers' timelines, and the fan-out asked for by new posts; None
# in pull mode.
TIMELINES: web.AppKey[Timelines | None] = web.AppKey("timelines")
FANOUT: web.AppKey[FanOut | None] = web.AppKey("fanout")
PASSWORDS: web.AppKey[Passwords] = web.AppKey("passwords")
TOKENS: web.AppKey[Tokens] = web.AppKey("tokens")
TOKEN_KEYS: web.AppKey[TokenKeys] = web.AppKey("token_keys")
CURSORS: web.AppKey[Cursors] = web.AppKey("cursors")
RATE_LIMITER: web.AppKey[RateLimiter] = web.AppKey("rate_limiter")
THROTTLES: web.AppKey[AccountThrottles] = web.AppKey("throttles")
IMAGES: web.AppKey[ImagePool] = web.AppKey("images")
UPLOAD_BUDGET: web.AppKey[ByteBudget] = web.AppKey("upload_budget")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
# Overload: each route class's adaptive concurrency limit (app/admission.py).
ADMISSION: web.AppKey[Admission] = web.AppKey("admission")
LIFECYCLE: web.AppKey[Lifecycle] = web.AppKey("lifecycle")
# /readyz: the dependency checks under way, shared by the probes that arrive meanwhile.
READINESS: web.AppKey[Readiness] = web.AppKey("readiness")

REQUEST_ID = web.RequestKey("request_id", str)
# perf_counter() when the request reached the app: uvloop's clock only has milliseconds.
REQUEST_STARTED = web.RequestKey("request_started", float)
# The client's address: the peer, or what a trusted proxy forwarded (app/clients.py).
CLIENT_ADDRESS = web.RequestKey("client_address", str)
# The authenticated caller; absent on public routes.
USER_ID = web.RequestKey("user_id", int)
# The caller's rate-limit state, as the X-RateLimit-* headers every authenticated response carries.
RATE_LIMIT_HEADERS: web.RequestKey[dict[str, str]] = web.RequestKey("rate_limit_headers")
