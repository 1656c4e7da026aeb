"""Handlers for sign-up, tokens, profiles and following; the work is in app/users.py."""

from __future__ import annotations

from aiohttp import web

from app import deletes, users
from app.api.responses import json_response
from app.auth import public
from app.errors import Invalid
from app.keys import (
    CLIENT_ADDRESS,
    CURSORS,
    DATABASE,
    PASSWORDS,
    STORAGE,
    THROTTLES,
    TIMELINES,
    TOKEN_KEYS,
    TOKENS,
    USER_ID,
)
from app.validation import (
    ANY_CONTROL_BUT_NUL,
    USERNAME,
    json_object,
    page_limit,
    path_id,
    path_username,
    text_field,
    visible_name,
)

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
    profile = await users.profile(request.app[DATABASE], path_username(request), request[USER_ID])
    return json_response(profile)


async def me(request: web.Request) -> web.Response:
    return json_response(await users.my_profile(request.app[DATABASE], request[USER_ID]))


async def delete_me(request: web.Request) -> web.Response:
    app = request.app
    await deletes.delete_account(app[DATABASE], app[STORAGE], app[TOKEN_KEYS], request[USER_ID])
    return web.Response(status=204)


async def follow(request: web.Request) -> web.Response:
    app = request.app
    await users.follow(app[DATABASE], request[USER_ID], path_id(request, "user_id"), app[TIMELINES])
    return web.Response(status=204)


async def unfollow(request: web.Request) -> web.Response:
    app = request.app
    followee = path_id(request, "user_id")
    await users.unfollow(app[DATABASE], request[USER_ID], followee, app[TIMELINES])
    return web.Response(status=204)


async def followers(request: web.Request) -> web.Response:
    return await _follow_page(request, "followers")


async def following(request: web.Request) -> web.Response:
    return await _follow_page(request, "following")


async def _follow_page(request: web.Request, direction: users.Direction) -> web.Response:
    page = await users.follow_page(
        request.app[DATABASE],
        request.app[CURSORS],
        path_username(request),
        direction,
        page_limit(request),
        request.query.get("cursor"),
    )
    return json_response(page)
