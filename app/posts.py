"""Posts: creating one from an uploaded image, reading one, liking it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app import db
from app.db import Database
from app.errors import Conflict, Forbidden, NotFound
from app.storage import Storage

MAX_CAPTION = 2200


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


async def create_post(
    database: Database, storage: Storage, author_id: int, media_id: int, caption: str
) -> dict[str, Any]:
    """A new post of the author's own upload, which no other post uses."""
    async with database.connection() as conn:
        media = await db.queries.media_owner(conn, media_id=media_id)
        if media is None:
            raise NotFound(f"no upload with id {media_id}")
        if media["user_id"] != author_id:
            raise Forbidden("that upload belongs to someone else")
        post_id = await db.queries.create_post(
            conn,
            author_id=author_id,
            media_id=media_id,
            caption=caption,
            image_url=storage.public_url(media["original_key"]),
            thumbnail_url=storage.public_url(media["thumbnail_key"]),
        )
        if post_id is None:
            raise Conflict("that upload already has a post")
        row = await db.queries.post(conn, post_id=post_id, viewer_id=author_id)
    return post_body(row)


async def get_post(database: Database, post_id: int, viewer_id: int) -> dict[str, Any]:
    async with database.connection() as conn:
        row = await db.queries.post(conn, post_id=post_id, viewer_id=viewer_id)
    if row is None:
        raise NotFound(f"no post with id {post_id}")
    return post_body(row)


async def set_like(database: Database, user_id: int, post_id: int, liked: bool) -> dict[str, Any]:
    """Likes or unlikes the post (each is idempotent); its like count after."""
    query = db.queries.like if liked else db.queries.unlike
    async with database.connection() as conn:
        row = await query(conn, user_id=user_id, post_id=post_id)
    if row is None:
        raise NotFound(f"no post with id {post_id}")
    return {"post_id": post_id, "like_count": row["like_count"], "liked": liked}
