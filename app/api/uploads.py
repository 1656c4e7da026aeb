"""V1 uploads: presign, complete, and the media's status; the work is in app/direct_uploads.py."""

from __future__ import annotations

from aiohttp import web

from app import direct_uploads
from app.api.responses import json_response
from app.errors import Invalid
from app.keys import DATABASE, IMAGE_URLS, QUEUE, SETTINGS, STORAGE, USER_ID
from app.validation import json_object, path_id

PRESIGN_FIELDS = frozenset({"content_type", "bytes"})


async def create_upload(request: web.Request) -> web.Response:
    body = await json_object(request, PRESIGN_FIELDS)
    content_type, size = body.get("content_type"), body.get("bytes")
    if not isinstance(content_type, str):
        raise Invalid("content_type must be image/jpeg, image/png or image/heic")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise Invalid("bytes must be the file's size, a positive integer")
    app = request.app
    form = await direct_uploads.presign(
        app[DATABASE], app[STORAGE], app[SETTINGS], request[USER_ID], content_type, size
    )
    return json_response(form, status=201)


async def complete_upload(request: web.Request) -> web.Response:
    app = request.app
    upload_id = path_id(request, "upload_id")
    _, media = await direct_uploads.complete(
        app[DATABASE],
        app[STORAGE],
        app[QUEUE],
        app[SETTINGS],
        app[IMAGE_URLS],
        request[USER_ID],
        upload_id,
    )
    # Accepted while a worker processes it; once it is ready (or failed), the final answer.
    return json_response(media, status=202 if media["status"] == "processing" else 200)


async def get_media(request: web.Request) -> web.Response:
    app = request.app
    media_id = path_id(request, "media_id")
    media = await direct_uploads.media_status(
        app[DATABASE], app[IMAGE_URLS], request[USER_ID], media_id
    )
    return json_response(media)
