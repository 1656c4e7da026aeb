"""argon2id password hashing on small thread pools, never on the event loop.

argon2-cffi releases the GIL while it hashes, so threads give real
parallelism. Logins and sign-ups each have a pool of their own, so a flood of
one cannot starve the other. Each pool is bounded, and so is the number of
requests that may wait for it: past that, they get 503 instead of piling up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from typing import Literal, ParamSpec, TypeVar

import argon2

from app.errors import Overloaded
from app.settings import Settings

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


Lane = Literal["login", "signup"]


class _Lane:
    """A thread pool and the slots of the requests hashing on it or waiting to."""

    def __init__(self, executor: ThreadPoolExecutor, slots: int) -> None:
        self.executor = executor
        self.slots = asyncio.Semaphore(slots)


class Passwords:
    def __init__(
        self, settings: Settings, login: ThreadPoolExecutor, signup: ThreadPoolExecutor
    ) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=settings.password_hash_time_cost,
            memory_cost=settings.password_hash_memory_kib,
            parallelism=2,
            type=argon2.Type.ID,
        )
        # Hashing and waiting to hash, together, per lane; one more is shed at once.
        self._lanes = {
            "login": _Lane(login, settings.password_hash_queue),
            "signup": _Lane(signup, settings.password_hash_queue),
        }
        # Checked when the user does not exist, so that a miss costs what a wrong password costs.
        self._decoy_hash = ""

    async def start(self) -> None:
        self._decoy_hash = await self.hash("decoy password, never anyone's", "signup")

    async def hash(self, password: str, lane: Lane) -> str:
        return await self._run(lane, self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True if the password matches; a missing hash costs the same and is False."""
        matched = await self._run(
            "login", self._verify, password_hash or self._decoy_hash, password
        )
        return matched and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except argon2.exceptions.VerificationError:
            return False
        except argon2.exceptions.InvalidHashError:
            log.error("a stored password hash is not an argon2 hash")
            return False

    async def _run(self, lane: Lane, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        chosen = self._lanes[lane]
        if chosen.slots.locked():
            what = "logins" if lane == "login" else "sign-ups"
            raise Overloaded(f"too many {what} at once, try again shortly")
        async with chosen.slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(chosen.executor, partial(work, *args, **kwargs))


@asynccontextmanager
async def open_passwords(settings: Settings) -> AsyncIterator[Passwords]:
    """The hashers for as long as the block runs, their decoy hash made before it starts."""
    workers = settings.password_hash_workers
    with (
        ThreadPoolExecutor(workers, thread_name_prefix="argon2-login") as login,
        ThreadPoolExecutor(workers, thread_name_prefix="argon2-signup") as signup,
    ):
        passwords = Passwords(settings, login, signup)
        await passwords.start()
        yield passwords
