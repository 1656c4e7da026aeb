"""The asyncpg pool, the named queries in sql/queries, and how an outage looks to callers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosql
import asyncpg
from aiohttp import web

from app.errors import DatabaseBusy, DatabaseTimeout, DatabaseUnavailable
from app.keys import DB_POOL, METRICS, SETTINGS
from app.settings import Settings

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"

# Loaded once at import: the parsed text of sql/queries/*.sql, never changed after.
queries: Any = aiosql.from_path(SQL_DIR / "queries", "asyncpg")

# What a stopped, restarting or unreachable server looks like from asyncpg.
# Each means "try again shortly", so clients get 503, never 500.
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
    )
    return await pool


async def keep_session(conn: asyncpg.Connection) -> None:
    """What a connection returned to the pool needs beyond asyncpg's own rollback: nothing.

    asyncpg rolls back an open transaction before calling this. Its default would then send
    `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` - a second round trip, and
    PostgreSQL CPU, on every request - to undo session state this service never creates on
    a pooled connection (tests/test_db.py holds the queries to that).
    """


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[DB_POOL] = await open_pool(settings)
    log.info("database pool ready", extra={"pool_max": settings.db_pool_max})
    yield
    await app[DB_POOL].close()


@asynccontextmanager
async def connection(app: web.Application) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection, or DatabaseBusy/DatabaseUnavailable quickly: never a hang.

    A statement that outruns DB_COMMAND_TIMEOUT surfaces as DatabaseTimeout (504).
    """
    pool = app[DB_POOL]
    try:
        async with app[METRICS].waiting_for_pool():
            conn = await pool.acquire(timeout=app[SETTINGS].db_acquire_timeout)
    except TimeoutError:
        raise DatabaseBusy("every database connection is busy, try again shortly") from None
    except UNAVAILABLE_ERRORS as exc:
        raise DatabaseUnavailable("the database is unavailable, try again shortly") from exc
    try:
        yield conn
    except TimeoutError:
        raise DatabaseTimeout("the database did not answer in time, try again") from None
    except asyncpg.exceptions.InternalClientError as exc:
        # A server that ends the session between two statements can leave asyncpg
        # mid-protocol (MagicStack/asyncpg#1069): that connection must not be reused.
        conn.terminate()
        log.warning("database connection dropped mid-protocol: %s", exc)
        raise DatabaseUnavailable("the database is unavailable, try again shortly") from exc
    finally:
        await pool.release(conn)
