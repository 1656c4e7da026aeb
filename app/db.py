"""The asyncpg pool, the named queries in sql/queries, and how an outage looks to callers.

Work code takes a `Database` and asks it for a connection; it never sees the web app, so a
worker process can open one of its own (`open_database`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosql
import asyncpg
import orjson

from app.errors import Conflict, DatabaseBusy, DatabaseTimeout, DatabaseUnavailable
from app.settings import Settings

if TYPE_CHECKING:
    from app.metrics import Metrics

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"

# Loaded once at import: the parsed text of sql/queries/*.sql, never changed after.
queries: Any = aiosql.from_path(SQL_DIR / "queries", "asyncpg")

# What a stopped, restarting or unreachable server looks like from asyncpg.
# Each means "try again shortly", so clients get 503, never 500.
# What work that needs a connection now and then takes: Database.connection, or a test's own.
Connect = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]

UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    asyncpg.PostgresConnectionError,  # class 08, ConnectionDoesNotExistError among them
    asyncpg.exceptions.OperatorInterventionError,  # admin/crash shutdown, cannot connect now
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionFailureError,
)


async def open_pool(settings: Settings) -> asyncpg.Pool:
    """A pool that opens connections on demand.

    It holds none at start, so the service comes up (and /readyz says why it
    is not ready) while PostgreSQL is still starting or is down.
    """
    assert settings.database_url, "DATABASE_URL must be set to open a pool"
    pool = asyncpg.create_pool(
        settings.database_url,
        min_size=0,
        max_size=settings.db_pool_max,
        timeout=settings.db_connect_timeout,
        command_timeout=settings.db_command_timeout,
        max_inactive_connection_lifetime=60.0,
        server_settings={"application_name": "monogram"},
        reset=keep_session,
        init=json_codec,
    )
    return await pool


async def json_codec(conn: asyncpg.Connection) -> None:
    """jsonb columns as Python values (media.renditions), not as text."""
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def keep_session(conn: asyncpg.Connection) -> None:
    """What a connection returned to the pool needs beyond asyncpg's own rollback: nothing.

    asyncpg rolls back an open transaction before calling this. Its default would then send
    `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` - a second round trip, and
    PostgreSQL CPU, on every request - to undo session state this service never creates on
    a pooled connection (tests/test_db.py holds the queries to that).
    """


@dataclass(frozen=True, slots=True)
class Database:
    """The pool, and how long a caller may wait for one of its connections."""

    pool: asyncpg.Pool
    acquire_timeout: float
    metrics: Metrics | None = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, or DatabaseBusy/DatabaseUnavailable quickly: never a hang.

        A statement that outruns DB_COMMAND_TIMEOUT surfaces as DatabaseTimeout (504).
        """
        try:
            if self.metrics is None:
                conn = await self.pool.acquire(timeout=self.acquire_timeout)
            else:
                async with self.metrics.waiting_for_pool():
                    conn = await self.pool.acquire(timeout=self.acquire_timeout)
        except TimeoutError:
            raise DatabaseBusy("every database connection is busy, try again shortly") from None
        except UNAVAILABLE_ERRORS as exc:
            raise DatabaseUnavailable("the database is unavailable, try again shortly") from exc
        try:
            yield conn
        except TimeoutError:
            raise DatabaseTimeout("the database did not answer in time, try again") from None
        except asyncpg.ForeignKeyViolationError:
            # A row this work refers to went away meanwhile: the caller's own account within
            # AUTH_CACHE_SECONDS of its deletion, or a post deleted while it was being liked.
            raise Conflict("something this request refers to no longer exists") from None
        except asyncpg.exceptions.InternalClientError as exc:
            # A server that ends the session between two statements can leave asyncpg
            # mid-protocol (MagicStack/asyncpg#1069): that connection must not be reused.
            conn.terminate()
            log.warning("database connection dropped mid-protocol: %s", exc)
            raise DatabaseUnavailable("the database is unavailable, try again shortly") from exc
        except asyncpg.InterfaceError as exc:
            # The same, seen one step later: a transaction's exit on a connection that the
            # server's shutdown closed under it. Any other InterfaceError is a bug: let it show.
            if not _is_gone(conn):
                raise
            log.warning("database connection closed mid-transaction: %s", exc)
            raise DatabaseUnavailable("the database is unavailable, try again shortly") from exc
        finally:
            await self.pool.release(conn)


def _is_gone(conn: asyncpg.Connection) -> bool:
    """Closed, or already detached by asyncpg because it was (asking then raises too)."""
    try:
        closed: bool = conn.is_closed()
    except asyncpg.InterfaceError:
        return True
    return closed


@asynccontextmanager
async def open_database(
    settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[Database]:
    """The service's database for as long as the block runs; the pool is closed after it."""
    pool = await open_pool(settings)
    log.info("database pool ready", extra={"pool_max": settings.db_pool_max})
    try:
        yield Database(pool, settings.db_acquire_timeout, metrics)
    finally:
        await pool.close()
