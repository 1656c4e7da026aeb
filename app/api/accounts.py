"""Handlers for sign-up, tokens, profiles and following; the work is in app/users.py."""

from __future__ import annotations

import re

from aiohttp import web

from app import users
from app.api.responses import json_response
from app.auth import public
from app.errors import Invalid, NotFound
from app.keys import (
    CLIENT_ADDRESS,
    CURSORS,
    DATABASE,
    PASSWORDS,
    THROTTLES,
    TOKEN_KEYS,
    TOKENS,
    USER_ID,
)
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
    app = request.app
    user = await users.create_user(app[DATABASE], app[PASSWORDS], username, password, display_name)
    return json_response(user, status=201)


@public
async def token(request: web.Request) -> web.Response:
    body = await json_object(request, LOGIN_FIELDS)
    username = (text_field(body, "username", max_length=64) or "").lower()
    password = text_field(body, "password", max_length=128, controls=ANY_CONTROL_BUT_NUL) or ""
    app = request.app
    app[THROTTLES].login(request[CLIENT_ADDRESS], username)
    issued = await users.issue_token(
        app[DATABASE], app[PASSWORDS], app[TOKENS], app[TOKEN_KEYS], username, password
    )
    response = json_response(issued)
    response.headers["Cache-Control"] = "no-store"  # a bearer token: no cache may keep it
    return response


async def revoke_tokens(request: web.Request) -> web.Response:
    await users.revoke_tokens(request.app[DATABASE], request.app[TOKEN_KEYS], request[USER_ID])
    return web.Response(status=204)


async def get_user(request: web.Request) -> web.Response:
    return json_response(await users.profile(request.app[DATABASE], _path_username(request)))


async def follow(request: web.Request) -> web.Response:
    await users.follow(request.app[DATABASE], request[USER_ID], path_id(request, "user_id"))
    return web.Response(status=204)


async def unfollow(request: web.Request) -> web.Response:
    await users.unfollow(request.app[DATABASE], request[USER_ID], path_id(request, "user_id"))
    return web.Response(status=204)


async def followers(request: web.Request) -> web.Response:
    return await _follow_page(request, "followers")


async def following(request: web.Request) -> web.Response:
    return await _follow_page(request, "following")


async def _follow_page(request: web.Request, direction: users.Direction) -> web.Response:
    page = await users.follow_page(
        request.app[DATABASE],
        request.app[CURSORS],
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
