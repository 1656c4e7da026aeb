"""Reading and checking what clients send: JSON bodies, path ids, query parameters."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from app.errors import BadRequest, Invalid, NotFound, UnsupportedMediaType

MAX_ID = 2**63 - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
    allow_control: bool = False,
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
    if not allow_control and _CONTROL.search(value):
        raise Invalid(f"{name} must not contain control characters")
    return value


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
