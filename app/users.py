"""Accounts and the follow graph: the work behind the account handlers."""

from __future__ import annotations

import logging
from typing import Any, Literal

from app import db, fanout
from app.auth import TokenKeys, Tokens
from app.cursors import Cursors
from app.db import Database
from app.errors import Conflict, Invalid, NotFound, Unauthorized
from app.passwords import Passwords
from app.timelines import Timelines

log = logging.getLogger(__name__)

Direction = Literal["followers", "following"]


async def create_user(
    database: Database, passwords: Passwords, username: str, password: str, display_name: str
) -> dict[str, Any]:
    password_hash = await passwords.hash(password, "signup")
    async with database.connection() as conn:
        row = await db.queries.create_user(
            conn, username=username, display_name=display_name, password_hash=password_hash
        )
    if row is None:
        raise Conflict(f"the username {username} is taken")
    return dict(row)


async def issue_token(
    database: Database,
    passwords: Passwords,
    tokens: Tokens,
    token_keys: TokenKeys,
    username: str,
    password: str,
) -> dict[str, Any]:
    async with database.connection() as conn:
        row = await db.queries.credentials(conn, username=username)
    # An unknown user is checked against a decoy hash: both failures cost the same time.
    if not await passwords.verify(row["password_hash"] if row else None, password):
        raise Unauthorized("wrong username or password")
    assert row is not None
    if passwords.needs_rehash(row["password_hash"]):
        new_hash = await passwords.hash(password, "login")
        async with database.connection() as conn:
            await db.queries.update_password_hash(
                conn, user_id=row["user_id"], password_hash=new_hash
            )
    token_keys.remember(row["user_id"], row["token_key"])
    return {
        "access_token": tokens.issue(row["user_id"], row["token_key"]),
        "token_type": "Bearer",
        "expires_in": tokens.ttl,
    }


async def revoke_tokens(database: Database, token_keys: TokenKeys, user_id: int) -> None:
    """Every token of the account stops working, the caller's included."""
    async with database.connection() as conn:
        await db.queries.revoke_tokens(conn, user_id=user_id)
    token_keys.forget(user_id)


async def profile(database: Database, username: str, viewer_id: int) -> dict[str, Any]:
    """A user's profile with its counts, and whether the viewer and they follow each other."""
    async with database.connection() as conn:
        row = await db.queries.profile(conn, username=username, viewer_id=viewer_id)
    if row is None:
        raise NotFound(f"no user named {username}")
    return dict(row)


async def my_profile(database: Database, user_id: int) -> dict[str, Any]:
    async with database.connection() as conn:
        username = await db.queries.username(conn, user_id=user_id)
        row = await db.queries.profile(conn, username=username, viewer_id=user_id)
    if row is None:  # deleted between the token's check and now
        raise NotFound("this account no longer exists")
    return dict(row)


async def follow(
    database: Database, follower_id: int, followee_id: int, timelines: Timelines | None = None
) -> None:
    """Idempotent; with timelines (push, hybrid) the followee's posts join the follower's."""
    if follower_id == followee_id:
        raise Invalid("you cannot follow yourself")
    async with database.connection() as conn:
        exists = await db.queries.follow(conn, follower_id=follower_id, followee_id=followee_id)
    if not exists:
        raise NotFound(f"no user with id {followee_id}")
    await fanout.followed(database, timelines, follower_id, followee_id)


async def unfollow(
    database: Database, follower_id: int, followee_id: int, timelines: Timelines | None = None
) -> None:
    async with database.connection() as conn:
        exists = await db.queries.unfollow(conn, follower_id=follower_id, followee_id=followee_id)
    if not exists:
        raise NotFound(f"no user with id {followee_id}")
    await fanout.unfollowed(database, timelines, follower_id, followee_id)


async def follow_page(
    database: Database,
    cursors: Cursors,
    username: str,
    direction: Direction,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """One page of a user's followers or followed accounts, in user id order."""
    after_id = cursors.decode(direction, cursor, arity=1)[0] if cursor else 0
    page = db.queries.followers_page if direction == "followers" else db.queries.following_page
    async with database.connection() as conn:
        user_id = await db.queries.user_id(conn, username=username)
        if user_id is None:
            raise NotFound(f"no user named {username}")
        # One row more than asked tells whether another page exists.
        rows = [
            dict(row)
            async for row in page(conn, user_id=user_id, after_id=after_id, page_size=limit + 1)
        ]
    items = rows[:limit]
    more = len(rows) > limit
    return {
        "items": items,
        "next_cursor": cursors.encode(direction, items[-1]["id"]) if more else None,
    }
