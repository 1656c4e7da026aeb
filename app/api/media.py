"""POST /v1/media: the V0 upload, proxied through the service as the seed designs it."""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from app import deadlines, deletes, media
from app.api import multipart
from app.api.middlewares import request_id_for
from app.api.responses import json_response, render_error
from app.errors import AppError, BadRequest, ExpectationFailed
from app.keys import DATABASE, IMAGE_URLS, IMAGES, METRICS, SETTINGS, STORAGE, USER_ID
from app.validation import path_id

IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII


async def upload_media(request: web.Request) -> web.Response:
    app = request.app
    uploads_total = app[METRICS].uploads
    try:
        key = request.headers.get("Idempotency-Key")
        if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
            raise BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters")
        work = media.MediaWork(
            app[DATABASE], app[STORAGE], app[IMAGES], app[SETTINGS], app[IMAGE_URLS]
        )
        async with multipart.receive(request, app[IMAGES].reserved()) as upload:
            body = await media.create(work, request[USER_ID], upload, key)
    except AppError as exc:
        uploads_total.labels(exc.label).inc()
        raise
    except asyncio.CancelledError:
        if deadlines.expired():  # the deadline middleware answers 503 deadline_exceeded
            uploads_total.labels("deadline_exceeded").inc()
        raise
    except Exception:
        uploads_total.labels("error").inc()
        raise
    uploads_total.labels("created").inc()
    return json_response(body, status=201)


async def delete_media(request: web.Request) -> web.Response:
    app = request.app
    media_id = path_id(request, "media_id")
    await deletes.delete_media(app[DATABASE], app[STORAGE], request[USER_ID], media_id)
    return web.Response(status=204)


async def refuse_early(request: web.Request) -> web.Response | None:
    """Expect: 100-continue: refuse what would be refused anyway, before the body is sent:
    bad headers, and an upload the image workers could not take within its wait budget.

    aiohttp calls this before any middleware, so it answers in the error shape itself.
    """
    try:
        if request.headers.get("Expect", "").lower() != "100-continue":
            raise ExpectationFailed("only Expect: 100-continue is understood")
        multipart.check_headers(request)
        request.app[IMAGES].check_room()  # the body would wait past its budget for a worker
    except AppError as exc:
        response = render_error(exc)
        response.force_close()
        response.headers["X-Request-ID"] = request_id_for(request)
        return response
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the 100 is not part of the response
    return None
