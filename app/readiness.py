"""What /readyz reports: whether PostgreSQL and S3 answer, asked once for every probe that
arrives while the question is out.

Balancers, orchestrators and dashboards probe every process, often at the same moment. Each
probe asking on its own would open as many connections as there are probes: on a cold pool
under load, that stampede is what times out, and the process is reported not ready while it
serves requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from app import db
from app.db import Database
from app.storage import Storage

Checks = dict[str, str]  # "postgresql" and "s3": "ok", or what went wrong in a few words


class Readiness:
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._asking: asyncio.Task[Checks] | None = None

    async def checks(self, database: Database, storage: Storage) -> Checks:
        """The answer of the checks under way, or of new ones if none are."""
        if self._asking is None:
            self._asking = asyncio.create_task(self._ask(database, storage))
            self._asking.add_done_callback(self._asked)
        # A probe that goes away leaves the checks running for the others.
        return await asyncio.shield(self._asking)

    def _asked(self, _: asyncio.Task[Checks]) -> None:
        self._asking = None  # the only task: a new one starts only once this is None

    async def _ask(self, database: Database, storage: Storage) -> Checks:
        postgresql, s3 = await asyncio.gather(
            _probe(_check_database(database), self._timeout),
            _probe(storage.check(), self._timeout),
        )
        return {"postgresql": postgresql, "s3": s3}


async def _check_database(database: Database) -> None:
    pool = database.pool
    if pool.get_size() >= pool.get_max_size() and pool.get_idle_size() == 0:
        # Every connection is open and at work, so the server answers. Waiting for one
        # would fail this check under load: a balancer would then take every process out
        # of rotation at once, and hold requests instead of letting them be shed here.
        return
    async with database.connection() as conn:
        await db.queries.ping(conn)


async def _probe(check: Awaitable[None], seconds: float) -> str:
    """ "ok", or what went wrong in a few words (never a message that could hold a secret)."""
    try:
        async with asyncio.timeout(seconds):
            await check
    except TimeoutError:
        return f"no answer within {seconds:g}s"
    except Exception as exc:
        return f"failed: {type(exc).__name__}"
    return "ok"
