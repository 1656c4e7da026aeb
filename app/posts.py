"""Posts: creating one from an uploaded image, reading one, liking it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from app import db
from app.errors import AppError, Conflict, Invalid, NotFound
from app.http import json_response
from app.keys import STORAGE, USER_ID
from app.validation import NEWLINES, json_object, path_id, text_field

MAX_CAPTION = 2200
CREATE_FIELDS = frozenset({"media_id", "caption"})


class Forbidden(AppError):
    status = 403
    code = "forbidden"


def post_body(row: Mapping[str, Any]) -> dict[str, Any]:
    """A post as the API shows it, from a row of the post or feed queries."""
    return {
        "id": row["post_id"],
        "author": {
            "id": row["author_id"],
            "username": row["username"],
            "display_name": row["display_name"],
        },
        "caption": row["caption"],
        "image_url": row["image_url"],
        "thumbnail_url": row["thumbnail_url"],
        "width": row["width"],
        "height": row["height"],
        "like_count": row["like_count"],
        "liked_by_me": row["liked_by_me"],
        "created_at": row["created_at"],
    }


async def create_post(request: web.Request) -> web.Response:
    body = await json_object(request, CREATE_FIELDS)
    media_id = body.get("media_id")
    if not isinstance(media_id, int) or isinstance(media_id, bool) or not 0 < media_id < 2**63:
        raise Invalid("media_id must be the id of an upload")
    caption = text_field(body, "caption", max_length=MAX_CAPTION, required=False, controls=NEWLINES)
    user_id = request[USER_ID]
    storage = request.app[STORAGE]
    async with db.connection(request.app) as conn:
        media = await db.queries.media_owner(conn, media_id=media_id)
        if media is None:
            raise NotFound(f"no upload with id {media_id}")
        if media["user_id"] != user_id:
            raise Forbidden("that upload belongs to someone else")
        post_id = await db.queries.create_post(
            conn,
            author_id=user_id,
            media_id=media_id,
            caption=caption or "",
            image_url=storage.public_url(media["original_key"]),
            thumbnail_url=storage.public_url(media["thumbnail_key"]),
        )
        if post_id is None:
            raise Conflict("that upload already has a post")
        row = await db.queries.post(conn, post_id=post_id, viewer_id=user_id)
    return json_response(post_body(row), status=201)


async def get_post(request: web.Request) -> web.Response:
    post_id = path_id(request, "post_id")
    async with db.connection(request.app) as conn:
        row = await db.queries.post(conn, post_id=post_id, viewer_id=request[USER_ID])
    if row is None:
        raise NotFound(f"no post with id {post_id}")
    return json_response(post_body(row))


async def like(request: web.Request) -> web.Response:
    return await _set_like(request, liked=True)


async def unlike(request: web.Request) -> web.Response:
    return await _set_like(request, liked=False)


async def _set_like(request: web.Request, *, liked: bool) -> web.Response:
    post_id = path_id(request, "post_id")
    query = db.queries.like if liked else db.queries.unlike
    async with db.connection(request.app) as conn:
        row = await query(conn, user_id=request[USER_ID], post_id=post_id)
    if row is None:
        raise NotFound(f"no post with id {post_id}")
    return json_response({"post_id": post_id, "like_count": row["like_count"], "liked": liked})


routes = [
    web.post("/v1/posts", create_post),
    web.get("/v1/posts/{post_id}", get_post),
    web.put("/v1/posts/{post_id}/like", like),
    web.delete("/v1/posts/{post_id}/like", unlike),
]
