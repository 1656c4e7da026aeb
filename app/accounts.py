"""HTTP handlers for sign-up, tokens, profiles and following."""

from __future__ import annotations

import re

from aiohttp import web

from app import users
from app.auth import public
from app.errors import Invalid, NotFound
from app.http import json_response
from app.keys import CLIENT_ADDRESS, THROTTLES, USER_ID
from app.validation import (
    ANY_CONTROL_BUT_NUL,
    json_object,
    page_limit,
    path_id,
    text_field,
    visible_name,
)

USERNAME = re.compile(r"[a-z0-9_.]{3,30}")
SIGN_UP_FIELDS = frozenset({"username", "password", "display_name"})
LOGIN_FIELDS = frozenset({"username", "password"})


def _username(value: str | None) -> str:
    """Usernames are case-insensitive: stored and compared lower-case."""
    username = (value or "").lower()
    if not USERNAME.fullmatch(username):
        raise Invalid("username must be 3 to 30 characters of a-z, 0-9, _ and .")
    return username


def _password(body: dict[str, object]) -> str:
    password = text_field(
        body, "password", min_length=8, max_length=128, controls=ANY_CONTROL_BUT_NUL
    )
    assert password is not None
    return password


@public
async def sign_up(request: web.Request) -> web.Response:
    body = await json_object(request, SIGN_UP_FIELDS)
    username = _username(text_field(body, "username", max_length=64))
    password = _password(body)
    display_name = text_field(body, "display_name", max_length=64, required=False)
    display_name = visible_name((display_name or "").strip(), "display_name") or username
    request.app[THROTTLES].signup(request[CLIENT_ADDRESS])
    user = await users.create_user(request.app, username, password, display_name)
    return json_response(user, status=201)


@public
async def token(request: web.Request) -> web.Response:
    body = await json_object(request, LOGIN_FIELDS)
    username = (text_field(body, "username", max_length=64) or "").lower()
    password = text_field(body, "password", max_length=128, controls=ANY_CONTROL_BUT_NUL) or ""
    request.app[THROTTLES].login(request[CLIENT_ADDRESS], username)
    response = json_response(await users.issue_token(request.app, username, password))
    response.headers["Cache-Control"] = "no-store"  # a bearer token: no cache may keep it
    return response


async def revoke_tokens(request: web.Request) -> web.Response:
    await users.revoke_tokens(request.app, request[USER_ID])
    return web.Response(status=204)


async def get_user(request: web.Request) -> web.Response:
    return json_response(await users.profile(request.app, _path_username(request)))


async def follow(request: web.Request) -> web.Response:
    await users.follow(request.app, request[USER_ID], path_id(request, "user_id"))
    return web.Response(status=204)


async def unfollow(request: web.Request) -> web.Response:
    await users.unfollow(request.app, request[USER_ID], path_id(request, "user_id"))
    return web.Response(status=204)


async def followers(request: web.Request) -> web.Response:
    return await _follow_page(request, "followers")


async def following(request: web.Request) -> web.Response:
    return await _follow_page(request, "following")


async def _follow_page(request: web.Request, direction: users.Direction) -> web.Response:
    page = await users.follow_page(
        request.app,
        _path_username(request),
        direction,
        page_limit(request),
        request.query.get("cursor"),
    )
    return json_response(page)


def _path_username(request: web.Request) -> str:
    username = request.match_info["username"].lower()
    if not USERNAME.fullmatch(username):
        raise NotFound(f"no user named {username[:64]}")
    return username


routes = [
    web.post("/v1/users", sign_up),
    web.post("/v1/auth/token", token),
    web.delete("/v1/auth/tokens", revoke_tokens),
    web.get("/v1/users/{username}", get_user),
    web.put("/v1/following/{user_id}", follow),
    web.delete("/v1/following/{user_id}", unfollow),
    web.get("/v1/users/{username}/followers", followers),
    web.get("/v1/users/{username}/following", following),
]
