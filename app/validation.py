"""Reading and checking what clients send: JSON bodies, path ids, query parameters."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from app.errors import BadRequest, Invalid, NotFound, UnsupportedMediaType

MAX_ID = 2**63 - 1
# Control characters (Unicode Cc: C0, DEL and C1) a text field may carry. NUL never: PostgreSQL
# text cannot hold it.
NO_CONTROLS = ""
NEWLINES = "\t\n\r"
ANY_CONTROL_BUT_NUL = "".join(chr(c) for c in (*range(1, 0x20), *range(0x7F, 0xA0)))
# Zero-width joiners that scripts and emoji sequences need, between two visible characters.
_JOINERS = {"\u200c", "\u200d"}


async def json_object(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    """The body as a JSON object whose keys are all in `allowed`.

    The body is capped by the app's client_max_size (413 past it). Unknown
    fields are refused rather than ignored, so a misspelt field never
    silently does nothing.
    """
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send the body as application/json")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Invalid(f"unknown field: {', '.join(unknown)}")
    return body


def text_field(
    body: Mapping[str, Any],
    name: str,
    *,
    min_length: int = 0,
    max_length: int,
    required: bool = True,
    controls: str = NO_CONTROLS,
) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise Invalid(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise Invalid(f"{name} must be a string")
    if not min_length <= len(value) <= max_length:
        raise Invalid(f"{name} must be {min_length} to {max_length} characters")
    if "\x00" in value:
        raise Invalid(f"{name} must not contain NUL characters")
    if any(unicodedata.category(c) == "Cc" and c not in controls for c in value):
        raise Invalid(f"{name} must not contain control characters")
    return value


def visible_name(value: str, name: str) -> str:
    """A name shown to others: no invisible format characters that could disguise it.

    Refused: bidi overrides and isolates, zero-width spaces, soft hyphens and other format
    characters (Unicode Cf), and line or paragraph separators. A zero-width joiner or non-joiner
    stays where a script or an emoji needs it: between two visible characters.
    """
    for at, char in enumerate(value):
        category = unicodedata.category(char)
        if category in {"Zl", "Zp"}:
            raise Invalid(f"{name} must be one line")
        if category != "Cf":
            continue
        between_visible = (
            char in _JOINERS
            and 0 < at < len(value) - 1
            and not _invisible(value[at - 1])
            and not _invisible(value[at + 1])
        )
        if not between_visible:
            raise Invalid(f"{name} must not contain invisible or direction-changing characters")
    return value


def _invisible(char: str) -> bool:
    return unicodedata.category(char) in {"Cf", "Cc", "Zs", "Zl", "Zp"}


def is_ascii_digits(text: str) -> bool:
    """0-9 only: str.isdigit() also says yes to "³" and "٣", which int() then refuses."""
    return text.isascii() and text.isdigit()


def path_id(request: web.Request, name: str) -> int:
    """A positive 64-bit id from the path; anything else names nothing, so 404."""
    raw = request.match_info[name]
    if not is_ascii_digits(raw) or len(raw) > 19 or not 0 < int(raw) <= MAX_ID:
        raise NotFound(f"no such {name.removesuffix('_id')}")
    return int(raw)


def page_limit(request: web.Request, default: int = 20, maximum: int = 100) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    if not is_ascii_digits(raw) or len(raw) > 4 or not 1 <= int(raw) <= maximum:
        raise BadRequest(f"limit must be a whole number from 1 to {maximum}")
    return int(raw)


# Usernames are stored and compared lower-case.
USERNAME = re.compile(r"[a-z0-9_.]{3,30}")


def path_username(request: web.Request) -> str:
    """The username in the path, lower-case; one that cannot exist names nothing, so 404."""
    username = request.match_info["username"].lower()
    if not USERNAME.fullmatch(username):
        raise NotFound(f"no user named {username[:64]}")
    return username
