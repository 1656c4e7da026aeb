"""Every typed key the application and its requests carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from app.settings import Settings

if TYPE_CHECKING:
    from app.storage import Storage

SETTINGS = web.AppKey("settings", Settings)
DB_POOL = web.AppKey("db_pool", asyncpg.Pool)
STORAGE: web.AppKey[Storage] = web.AppKey("storage")

REQUEST_ID = web.RequestKey("request_id", str)
# perf_counter() when the request reached the app: uvloop's clock only has milliseconds.
REQUEST_STARTED = web.RequestKey("request_started", float)
