"""Bearer tokens (JWT, HS256) and the middleware that requires one on every non-public route.

A token names its account's token key (`users.token_key`). The middleware checks that the
account still exists and still has that key, so a deleted account's tokens, and tokens revoked
with `DELETE /v1/auth/tokens`, stop working. Keys are kept in memory for AUTH_CACHE_SECONDS: the
process that revokes or deletes forgets at once, the others within that time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import jwt
from aiohttp import web
from aiohttp.typedefs import Handler

from app import db
from app.db import Connect
from app.errors import InvalidToken, TokenExpired, Unauthorized
from app.keys import DATABASE, TOKEN_KEYS, TOKENS, USER_ID
from app.settings import Settings
from app.validation import is_ascii_digits

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud", "key"]
# Accounts whose keys are remembered at most; the least recently checked are forgotten first.
MAX_REMEMBERED_KEYS = 100_000
# Longer than any token this service issues; longer ones are refused unread.
MAX_TOKEN_LENGTH = 1024

_PUBLIC = "__monogram_public__"
F = TypeVar("F", bound=Callable[..., Any])


class Tokens:
    def __init__(self, settings: Settings) -> None:
        assert settings.jwt_secret, "JWT_SECRET must be set"
        self._secret = settings.jwt_secret
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway
        self.ttl = settings.jwt_ttl

    def issue(self, user_id: int, token_key: uuid.UUID) -> str:
        now = int(time.time())
        claims = {
            "sub": str(user_id),
            "key": str(token_key),
            "iat": now,
            "exp": now + self.ttl,
            "iss": self._issuer,
            "aud": self._audience,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Bearer:
        """The account a validly signed token speaks for; InvalidToken otherwise."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("the access token is not valid")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                # Pinned: the token's own "alg" header is never trusted ("none", RS256 confusion).
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired("the access token has expired; get a new one") from None
        except jwt.PyJWTError:
            raise InvalidToken("the access token is not valid") from None
        subject, key = claims["sub"], claims["key"]
        if not (isinstance(subject, str) and is_ascii_digits(subject) and len(subject) <= 19):
            raise InvalidToken("the access token is not valid")
        try:
            return Bearer(int(subject), uuid.UUID(key))
        except (ValueError, TypeError, AttributeError):
            raise InvalidToken("the access token is not valid") from None


@dataclass(frozen=True, slots=True)
class Bearer:
    user_id: int
    token_key: uuid.UUID


class TokenKeys:
    """Each account's current token key, read from the database and remembered briefly."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._known: dict[int, tuple[uuid.UUID | None, float]] = {}  # user -> (key, read at)

    async def require(self, bearer: Bearer, connect: Connect) -> None:
        """Returns if the bearer's account exists and its tokens name its current key."""
        now = self._clock()
        known = self._known.get(bearer.user_id)
        if known is None or now - known[1] >= self._ttl:
            async with connect() as conn:
                key = await db.queries.token_key(conn, user_id=bearer.user_id)
            known = (key, now)
            self._remember(bearer.user_id, known)
        if known[0] is None:
            raise InvalidToken("this account no longer exists")
        if known[0] != bearer.token_key:
            raise InvalidToken("the access token was revoked; log in again")

    def remember(self, user_id: int, token_key: uuid.UUID) -> None:
        """Called at login, which has just read the key: the first request needs no read."""
        self._remember(user_id, (token_key, self._clock()))

    def forget(self, user_id: int) -> None:
        """Called where a key changes or an account goes: this process believes it at once."""
        self._known.pop(user_id, None)

    def _remember(self, user_id: int, known: tuple[uuid.UUID | None, float]) -> None:
        self._known.pop(user_id, None)
        self._known[user_id] = known  # dicts keep insertion order: oldest first
        while len(self._known) > MAX_REMEMBERED_KEYS:
            del self._known[next(iter(self._known))]


def public(handler: F) -> F:
    """Marks a handler that answers without a token."""
    setattr(handler, _PUBLIC, True)
    return handler


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    match_info = request.match_info
    # Unknown routes and wrong methods keep their 404/405; public routes need no token.
    if match_info.http_exception is None and not getattr(match_info.handler, _PUBLIC, False):
        bearer = request.app[TOKENS].verify(_bearer_token(request))
        await request.app[TOKEN_KEYS].require(bearer, request.app[DATABASE].connection)
        request[USER_ID] = bearer.user_id
    return await handler(request)


def _bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization")
    if header is None:
        raise Unauthorized("this needs an access token: Authorization: Bearer <token>")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("the Authorization header must be: Bearer <token>")
    return token.strip()
