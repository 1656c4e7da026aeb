"""Handlers for posts and likes; the work is in app/posts.py."""

from __future__ import annotations

from aiohttp import web

from app import posts
from app.api.responses import json_response
from app.errors import Invalid
from app.keys import DATABASE, STORAGE, USER_ID
from app.validation import NEWLINES, json_object, path_id, text_field

CREATE_FIELDS = frozenset({"media_id", "caption"})


async def create_post(request: web.Request) -> web.Response:
    body = await json_object(request, CREATE_FIELDS)
    media_id = body.get("media_id")
    if not isinstance(media_id, int) or isinstance(media_id, bool) or not 0 < media_id < 2**63:
        raise Invalid("media_id must be the id of an upload")
    caption = text_field(
        body, "caption", max_length=posts.MAX_CAPTION, required=False, controls=NEWLINES
    )
    post = await posts.create_post(
        request.app[DATABASE], request.app[STORAGE], request[USER_ID], media_id, caption or ""
    )
    return json_response(post, status=201)


async def get_post(request: web.Request) -> web.Response:
    post_id = path_id(request, "post_id")
    return json_response(await posts.get_post(request.app[DATABASE], post_id, request[USER_ID]))


async def like(request: web.Request) -> web.Response:
    return await _set_like(request, liked=True)


async def unlike(request: web.Request) -> web.Response:
    return await _set_like(request, liked=False)


async def _set_like(request: web.Request, *, liked: bool) -> web.Response:
    post_id = path_id(request, "post_id")
    state = await posts.set_like(request.app[DATABASE], request[USER_ID], post_id, liked)
    return json_response(state)
