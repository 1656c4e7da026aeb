"""Posts: creating one from an uploaded image, reading one or a user's, liking it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app import db
from app.cursors import Cursors
from app.db import Database
from app.delivery import ImageUrls
from app.errors import Conflict, Forbidden, MediaNotReady, NotFound
from app.fanout import FanOut

MAX_CAPTION = 2200
MAX_ALT_TEXT = 1500


def post_body(row: Mapping[str, Any], urls: ImageUrls) -> dict[str, Any]:
    """A post as the API shows it, from a row of the post or feed queries."""
    return {
        "id": row["post_id"],
        "author": {
            "id": row["author_id"],
            "username": row["username"],
            "display_name": row["display_name"],
        },
        "caption": row["caption"],
        "alt_text": row["alt_text"],
        "image_url": urls(row["original_key"]),
        "thumbnail_url": urls(row["thumbnail_key"]),
        "width": row["width"],
        "height": row["height"],
        "thumbnail_width": row["thumbnail_width"],
        "thumbnail_height": row["thumbnail_height"],
        "blurhash": row["blurhash"],
        "like_count": row["like_count"],
        "liked_by_me": row["liked_by_me"],
        "created_at": row["created_at"],
    }


async def create_post(
    database: Database,
    urls: ImageUrls,
    author_id: int,
    media_id: int,
    caption: str,
    alt_text: str = "",
    fan_out: FanOut | None = None,
) -> dict[str, Any]:
    """A new post of the author's own upload, which no other post uses; with `fan_out`
    (push, hybrid), a job that writes it into the followers' timelines, unless it is pulled."""
    async with database.connection() as conn, conn.transaction():
        media = await db.queries.media_owner(conn, media_id=media_id)
        if media is None:
            raise NotFound(f"no upload with id {media_id}")
        if media["user_id"] != author_id:
            raise Forbidden("that upload belongs to someone else")
        if media["status"] == "processing":
            raise MediaNotReady("that upload is still being processed: post it once it is ready")
        if media["status"] == "failed":
            raise MediaNotReady(f"that upload could not be processed ({media['failure']})")
        fanned_out = True if fan_out is None else await fan_out.decide(conn, author_id)
        post_id = await db.queries.create_post(
            conn,
            author_id=author_id,
            media_id=media_id,
            caption=caption,
            alt_text=alt_text,
            fanned_out=fanned_out,
        )
        if post_id is None:
            raise Conflict("that upload already has a post")
        row = await db.queries.post(conn, post_id=post_id, viewer_id=author_id)
    if fan_out is not None and fanned_out:
        await fan_out.request(post_id)
    return post_body(row, urls)


async def get_post(
    database: Database, urls: ImageUrls, post_id: int, viewer_id: int
) -> dict[str, Any]:
    async with database.connection() as conn:
        row = await db.queries.post(conn, post_id=post_id, viewer_id=viewer_id)
    if row is None:
        raise NotFound(f"no post with id {post_id}")
    return post_body(row, urls)


async def author_posts(
    database: Database,
    urls: ImageUrls,
    cursors: Cursors,
    username: str,
    viewer_id: int,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """One page of a user's posts, newest first, after the post the cursor names."""
    before = cursors.decode_post_position("posts", cursor)
    async with database.connection() as conn:
        # One row more than asked tells whether another page exists.
        rows = [
            row
            async for row in db.queries.author_posts(
                conn,
                username=username,
                viewer_id=viewer_id,
                before_time=before[0],
                before_id=before[1],
                page_size=limit + 1,
            )
        ]
        if not rows and await db.queries.user_id(conn, username=username) is None:
            raise NotFound(f"no user named {username}")
    more = len(rows) > limit
    return {
        "items": [post_body(row, urls) for row in rows[:limit]],
        "next_cursor": cursors.encode_post_position("posts", rows[limit - 1]) if more else None,
    }


async def set_like(database: Database, user_id: int, post_id: int, liked: bool) -> dict[str, Any]:
    """Likes or unlikes the post (each is idempotent); its like count after."""
    query = db.queries.like if liked else db.queries.unlike
    async with database.connection() as conn:
        row = await query(conn, user_id=user_id, post_id=post_id)
    if row is None:
        raise NotFound(f"no post with id {post_id}")
    return {"post_id": post_id, "like_count": row["like_count"], "liked": liked}
