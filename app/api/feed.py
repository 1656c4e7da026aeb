"""GET /v1/feed; the work is in app/feed.py."""

from __future__ import annotations

from aiohttp import web

from app import feed
from app.api.responses import json_response
from app.keys import CURSORS, DATABASE, IMAGE_URLS, METRICS, SETTINGS, TIMELINES, USER_ID
from app.validation import page_limit


async def get_feed(request: web.Request) -> web.Response:
    app = request.app
    page = await feed.feed_page(
        app[DATABASE],
        app[IMAGE_URLS],
        app[CURSORS],
        app[METRICS],
        request[USER_ID],
        page_limit(request),
        request.query.get("cursor"),
        app[SETTINGS].feed_query,
        app[TIMELINES],
    )
    return json_response(page)
