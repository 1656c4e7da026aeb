"""Token buckets kept in this process's memory: per user, and per client and username for logins.

N service processes each keep their own buckets, so a user can make N times
the configured rate in all; a shared limit would need shared state (e.g. a
Redis script doing the same arithmetic), which this architecture does not have.

Every authenticated response says where the caller stands, in the common headers:
X-RateLimit-Limit (the bucket's size: requests at once), X-RateLimit-Remaining (what is left
of it) and X-RateLimit-Reset (seconds until it is full again).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from typing import NamedTuple

from aiohttp import web
from aiohttp.typedefs import Handler

from app.errors import RateLimited
from app.keys import RATE_LIMIT_HEADERS, RATE_LIMITER, USER_ID
from app.settings import Settings

# Buckets kept at most; idle (full) ones are dropped first when it is reached.
MAX_BUCKETS = 100_000


class Allowance(NamedTuple):
    wait: float  # 0.0 if the request may go ahead, else seconds until a token is available
    remaining: float  # tokens left in the bucket
    until_full: float  # seconds until the bucket is full again


class RateLimiter:
    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, when)

    def take(self, key: Hashable) -> float:
        """Spend one token: 0.0 if allowed, else the seconds until one is available."""
        return self.spend(key).wait

    def spend(self, key: Hashable) -> Allowance:
        """Spend one token if there is one; where the bucket stands after."""
        now = self._clock()
        tokens, then = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > MAX_BUCKETS:
            self._forget_idle(now)
        return Allowance(wait, tokens, (self.burst - tokens) / self.rate)

    def _forget_idle(self, now: float) -> None:
        refill_time = self.burst / self.rate
        idle = [key for key, (_, when) in self._buckets.items() if now - when >= refill_time]
        for key in idle:
            del self._buckets[key]
        if len(self._buckets) > MAX_BUCKETS:  # all busy: forget the least recent half
            by_age = sorted(self._buckets, key=lambda key: self._buckets[key][1])
            for key in by_age[: len(by_age) // 2]:
                del self._buckets[key]


class AccountThrottles:
    """Limits on logins and sign-ups, checked before any password is hashed.

    Per client address, so that one client cannot try passwords fast or fill the hashing pool;
    per username, so that many addresses together cannot try one account's password fast.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        def per_minute(limit: int) -> RateLimiter:
            return RateLimiter(limit / 60.0, limit, clock)

        self._login_by_address = per_minute(settings.login_limit_per_address)
        self._login_by_username = per_minute(settings.login_limit_per_username)
        self._signup_by_address = per_minute(settings.signup_limit_per_address)

    def login(self, address: str, username: str) -> None:
        _spend(self._login_by_address, address, "too many logins from your address")
        _spend(self._login_by_username, username, f"too many logins as {username}")

    def signup(self, address: str) -> None:
        _spend(self._signup_by_address, address, "too many sign-ups from your address")


def _spend(limiter: RateLimiter, key: Hashable, message: str) -> None:
    wait = limiter.take(key)
    if wait > 0:
        raise RateLimited(f"{message}, try again later", retry_after=max(1, math.ceil(wait)))


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    user_id = request.get(USER_ID)
    if user_id is not None:
        limiter = request.app[RATE_LIMITER]
        allowance = limiter.spend(user_id)
        request[RATE_LIMIT_HEADERS] = {
            "X-RateLimit-Limit": str(limiter.burst),
            "X-RateLimit-Remaining": str(math.floor(allowance.remaining)),
            "X-RateLimit-Reset": str(math.ceil(allowance.until_full)),
        }
        if allowance.wait > 0:
            retry_after = max(1, math.ceil(allowance.wait))
            raise RateLimited("too many requests, slow down", retry_after=retry_after)
    return await handler(request)


async def add_rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response to an authenticated request, errors (and 429s) included."""
    headers = request.get(RATE_LIMIT_HEADERS)
    if headers is not None:
        response.headers.update(headers)
