"""Bearer tokens (JWT, HS256) and the middleware that requires one on every non-public route."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import jwt
from aiohttp import web
from aiohttp.typedefs import Handler

from app.errors import InvalidToken, Unauthorized
from app.keys import TOKENS, USER_ID
from app.settings import Settings
from app.validation import is_ascii_digits

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud"]
# Longer than any token this service issues; longer ones are refused unread.
MAX_TOKEN_LENGTH = 1024

_PUBLIC = "__monogram_public__"
F = TypeVar("F", bound=Callable[..., Any])


class TokenExpired(InvalidToken):
    code = "token_expired"


class Tokens:
    def __init__(self, settings: Settings) -> None:
        assert settings.jwt_secret, "JWT_SECRET must be set"
        self._secret = settings.jwt_secret
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway
        self.ttl = settings.jwt_ttl

    def issue(self, user_id: int) -> str:
        now = int(time.time())
        claims = {
            "sub": str(user_id),
            "iat": now,
            "exp": now + self.ttl,
            "iss": self._issuer,
            "aud": self._audience,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def user_id(self, token: str) -> int:
        """The user a valid token speaks for; InvalidToken otherwise."""
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
        subject = claims["sub"]
        if not (isinstance(subject, str) and is_ascii_digits(subject) and len(subject) <= 19):
            raise InvalidToken("the access token is not valid")
        return int(subject)


def public(handler: F) -> F:
    """Marks a handler that answers without a token."""
    setattr(handler, _PUBLIC, True)
    return handler


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    match_info = request.match_info
    # Unknown routes and wrong methods keep their 404/405; public routes need no token.
    if match_info.http_exception is None and not getattr(match_info.handler, _PUBLIC, False):
        request[USER_ID] = request.app[TOKENS].user_id(_bearer_token(request))
    return await handler(request)


def _bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization")
    if header is None:
        raise Unauthorized("this needs an access token: Authorization: Bearer <token>")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("the Authorization header must be: Bearer <token>")
    return token.strip()
