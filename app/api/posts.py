"""Handlers for posts and likes; the work is in app/posts.py."""

from __future__ import annotations

from aiohttp import web

from app import deletes, posts
from app.api.responses import json_response
from app.errors import Invalid
from app.keys import CURSORS, DATABASE, FANOUT, IMAGE_URLS, STORAGE, USER_ID
from app.validation import NEWLINES, json_object, page_limit, path_id, path_username, text_field

CREATE_FIELDS = frozenset({"media_id", "caption", "alt_text"})


async def create_post(request: web.Request) -> web.Response:
    body = await json_object(request, CREATE_FIELDS)
    media_id = body.get("media_id")
    if not isinstance(media_id, int) or isinstance(media_id, bool) or not 0 < media_id < 2**63:
        raise Invalid("media_id must be the id of an upload")
    caption = text_field(
        body, "caption", max_length=posts.MAX_CAPTION, required=False, controls=NEWLINES
    )
    alt_text = text_field(
        body, "alt_text", max_length=posts.MAX_ALT_TEXT, required=False, controls=NEWLINES
    )
    post = await posts.create_post(
        request.app[DATABASE],
        request.app[IMAGE_URLS],
        request[USER_ID],
        media_id,
        caption or "",
        alt_text or "",
        request.app[FANOUT],
    )
    return json_response(post, status=201)


async def get_post(request: web.Request) -> web.Response:
    post_id = path_id(request, "post_id")
    app = request.app
    post = await posts.get_post(app[DATABASE], app[IMAGE_URLS], post_id, request[USER_ID])
    return json_response(post)


async def delete_post(request: web.Request) -> web.Response:
    app = request.app
    post_id = path_id(request, "post_id")
    await deletes.delete_post(app[DATABASE], app[STORAGE], request[USER_ID], post_id)
    return web.Response(status=204)


async def user_posts(request: web.Request) -> web.Response:
    page = await posts.author_posts(
        request.app[DATABASE],
        request.app[IMAGE_URLS],
        request.app[CURSORS],
        path_username(request),
        request[USER_ID],
        page_limit(request),
        request.query.get("cursor"),
    )
    return json_response(page)


async def like(request: web.Request) -> web.Response:
    return await _set_like(request, liked=True)


async def unlike(request: web.Request) -> web.Response:
    return await _set_like(request, liked=False)


async def _set_like(request: web.Request, *, liked: bool) -> web.Response:
    post_id = path_id(request, "post_id")
    state = await posts.set_like(request.app[DATABASE], request[USER_ID], post_id, liked)
    return json_response(state)
