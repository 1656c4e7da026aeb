"""Opaque, tamper-checked pagination cursors.

A cursor is the position of the last item a client saw (e.g. its id, or its
time and id), signed so that a client can neither forge nor alter one.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson

from app.errors import InvalidCursor
from app.validation import MAX_ID

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MICROSECOND = dt.timedelta(microseconds=1)
# (created_at, post_id) of a listing's first page: after every post there is.
NEWEST = (dt.datetime.max.replace(tzinfo=dt.UTC), MAX_ID)

MAX_CURSOR_LENGTH = 512
_MAC_BYTES = 16


class Cursors:
    def __init__(self, secret: str) -> None:
        # A key of its own, derived so that a cursor can never pass for a token.
        self._key = hmac.digest(secret.encode(), b"monogram pagination cursor v1", "sha256")

    def encode(self, kind: str, *position: Any) -> str:
        payload = orjson.dumps([kind, *position])
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(self, kind: str, cursor: str, arity: int) -> list[Any]:
        """The position stored by `encode(kind, ...)`, or InvalidCursor."""
        if len(cursor) > MAX_CURSOR_LENGTH or cursor.count(".") != 1:
            raise InvalidCursor("the cursor is not one this API handed out")
        encoded_payload, encoded_mac = cursor.split(".")
        try:
            payload, mac = _unb64(encoded_payload), _unb64(encoded_mac)
        except ValueError:
            raise InvalidCursor("the cursor is not one this API handed out") from None
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidCursor("the cursor is not one this API handed out")
        values = orjson.loads(payload)
        if not isinstance(values, list) or len(values) != arity + 1 or values[0] != kind:
            raise InvalidCursor("the cursor belongs to another listing")
        return values[1:]

    def encode_post_position(self, kind: str, row: Mapping[str, Any]) -> str:
        """A cursor after this post, in a listing newest first by (created_at, post_id)."""
        micros = (row["created_at"] - EPOCH) // MICROSECOND
        return self.encode(kind, micros, row["post_id"])

    def decode_post_position(self, kind: str, cursor: str | None) -> tuple[dt.datetime, int]:
        """(created_at, post_id) of the last post the client saw; NEWEST with no cursor."""
        if cursor is None:
            return NEWEST
        micros, post_id = self.decode(kind, cursor, arity=2)
        if not (isinstance(micros, int) and isinstance(post_id, int) and 0 < post_id <= MAX_ID):
            raise InvalidCursor("the cursor is not one this API handed out")
        try:
            return EPOCH + micros * MICROSECOND, post_id
        except OverflowError:
            raise InvalidCursor("the cursor is not one this API handed out") from None

    def _mac(self, payload: bytes) -> bytes:
        return hmac.digest(self._key, payload, hashlib.sha256)[:_MAC_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
