"""The pool hands every request a connection as clean as a new one, without a reset query."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import asyncpg
import pytest

from app.db import SQL_DIR, open_database, open_pool
from app.errors import DatabaseUnavailable
from app.settings import Settings

# Statements that leave state on a session past its transaction. A pooled connection that
# ran one would carry it to the next request, since release sends no RESET ALL.
SESSION_STATE = re.compile(
    r"^\s*(SET\b(?!\s+LOCAL\b)|RESET\b|LISTEN\b|DECLARE\b|PREPARE\b)|pg_advisory_lock|set_config\(",
    re.IGNORECASE | re.MULTILINE,
)
# The migrator takes its advisory lock on a connection of its own, never a pooled one.
OWN_CONNECTION = {"migrations.sql"}


def test_the_session_state_pattern_tells_session_from_transaction_settings() -> None:
    assert SESSION_STATE.search("SET statement_timeout = 0;")
    assert SESSION_STATE.search("SELECT 1;\n  RESET ALL;")
    assert SESSION_STATE.search("SELECT pg_advisory_lock(1);")
    assert not SESSION_STATE.search("SET LOCAL statement_timeout = 0;")
    assert not SESSION_STATE.search("UPDATE posts SET like_count = like_count + 1")


def test_no_pooled_query_leaves_session_state() -> None:
    files = sorted((SQL_DIR / "queries").glob("*.sql"))
    assert files
    for path in files:
        if path.name in OWN_CONNECTION:
            continue
        found = SESSION_STATE.findall(path.read_text())
        assert not found, f"{path.name} sets session state: {found}"


@pytest.fixture
async def pool(settings: Settings, clean_database: str) -> AsyncIterator[asyncpg.Pool]:
    """The service's pool, as `open_pool` makes it."""
    opened = await open_pool(settings.with_overrides(database_url=clean_database))
    yield opened
    await opened.close()


async def test_a_connection_released_mid_transaction_comes_back_rolled_back(
    pool: asyncpg.Pool,
) -> None:
    conn = await pool.acquire()
    backend = conn.get_server_pid()
    # A request cancelled mid-transaction (its deadline, a dropped client) leaves this.
    await conn.execute("BEGIN")
    await conn.execute("CREATE TABLE released_mid_transaction (x int)")
    await conn.execute("INSERT INTO released_mid_transaction VALUES (1)")
    await pool.release(conn)

    async with pool.acquire() as again:
        assert again.get_server_pid() == backend, "the pool opened a new connection"
        assert not again.is_in_transaction()
        assert await again.fetchval("SELECT to_regclass('released_mid_transaction')") is None


async def test_a_connection_is_reused_without_a_second_round_trip(
    pool: asyncpg.Pool, clean_database: str
) -> None:
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")
        backend = conn.get_server_pid()
    async with pool.acquire() as conn:
        # pg_stat_activity keeps each backend's last statement: with the default reset,
        # that would be asyncpg's RESET ALL script, not the request's own query.
        observer = await asyncpg.connect(clean_database)
        try:
            last = await observer.fetchval(
                "SELECT query FROM pg_stat_activity WHERE pid = $1", backend
            )
        finally:
            await observer.close()
        assert conn.get_server_pid() == backend
        assert last == "SELECT 1"


async def test_a_connection_killed_under_a_transaction_is_503_and_the_pool_goes_on(
    settings: Settings,
) -> None:
    """A server shutdown ends sessions mid-transaction; asyncpg then detaches the pooled
    connection itself, so even asking whether it is closed raises (seen in a PostgreSQL
    restart under load). The caller must hear DatabaseUnavailable, not a 500."""
    async with open_database(settings) as database:
        with pytest.raises(DatabaseUnavailable):
            async with database.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        async with database.connection() as conn:
            assert await conn.fetchval("SELECT 1") == 1
