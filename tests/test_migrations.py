"""The schema: the seed's tables and indexes, applied once each, in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from app.devstack.postgres import EmbeddedPostgres
from app.migrations import MigrationError, discover, migrate


async def index_definitions(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        )
    finally:
        await conn.close()
    return {row["indexname"]: row["indexdef"].split(" USING ", 1)[1] for row in rows}


async def test_the_seeds_indexes_exist_exactly(clean_database: str) -> None:
    indexes = await index_definitions(clean_database)
    assert indexes["idx_posts_author_time"] == "btree (author_id, created_at DESC)"
    assert indexes["idx_posts_created"] == "btree (created_at DESC)"
    assert indexes["idx_follows_follower"] == "btree (follower_id)"
    assert indexes["idx_follows_followee"] == "btree (followee_id)"
    assert indexes["follows_follower_followee_key"] == "btree (follower_id, followee_id)"
    assert indexes["idx_media_user"] == "btree (user_id, created_at DESC)"
    assert indexes["users_username_key"] == "btree (username)"
    assert indexes["likes_pkey"] == "btree (user_id, post_id)"
    for table, key in [
        ("users", "user_id"),
        ("posts", "post_id"),
        ("follows", "follow_id"),
        ("media", "media_id"),
    ]:
        assert indexes[f"{table}_pkey"] == f"btree ({key})"


async def test_constraints_keep_bad_rows_out(clean_database: str) -> None:
    conn = await asyncpg.connect(clean_database)
    try:
        alice = await conn.fetchval(
            "INSERT INTO users (username, password_hash) VALUES ('alice', 'x') RETURNING user_id"
        )
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO users (username, password_hash) VALUES ('alice', 'y')")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO users (username, password_hash) VALUES ('Alice', 'y')")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO follows (follower_id, followee_id) VALUES ($1, $1)", alice
            )
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute("INSERT INTO likes (user_id, post_id) VALUES ($1, 999)", alice)
        with pytest.raises(asyncpg.NotNullViolationError):
            await conn.execute("INSERT INTO users (username) VALUES ('bob')")
    finally:
        await conn.close()


async def test_a_second_run_applies_nothing(clean_database: str) -> None:
    assert await migrate(clean_database) == []


async def test_concurrent_migrators_apply_each_migration_once(
    fresh_postgres: EmbeddedPostgres,
) -> None:
    results = await asyncio.gather(*(migrate(fresh_postgres.dsn) for _ in range(3)))
    applied = sorted(name for result in results for name in result)
    assert applied == [f"{m.version:04d}_{m.name}" for m in discover()]
    conn = await asyncpg.connect(fresh_postgres.dsn)
    try:
        versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [row["version"] for row in versions] == [m.version for m in discover()]


async def test_migrations_run_in_number_order_and_an_edited_one_is_refused(
    fresh_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0002_second.sql").write_text("INSERT INTO log VALUES ('second');")
    (folder / "0001_first.sql").write_text(
        "CREATE TABLE log (entry text); INSERT INTO log VALUES ('first');"
    )
    assert await migrate(fresh_postgres.dsn, folder) == ["0001_first", "0002_second"]

    (folder / "0003_third.sql").write_text("INSERT INTO log VALUES ('third');")
    assert await migrate(fresh_postgres.dsn, folder) == ["0003_third"]

    conn = await asyncpg.connect(fresh_postgres.dsn)
    try:
        assert [r["entry"] for r in await conn.fetch("SELECT entry FROM log")] == [
            "first",
            "second",
            "third",
        ]
    finally:
        await conn.close()

    (folder / "0002_second.sql").write_text("INSERT INTO log VALUES ('changed');")
    with pytest.raises(MigrationError, match=r"0002_second was edited"):
        await migrate(fresh_postgres.dsn, folder)


async def test_a_failing_migration_leaves_no_trace(
    fresh_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_broken.sql").write_text("CREATE TABLE half (x int); SELECT no_such_function();")
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await migrate(fresh_postgres.dsn, folder)
    conn = await asyncpg.connect(fresh_postgres.dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('half')") is None
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0
    finally:
        await conn.close()


def test_badly_named_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "add_users.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_some_name\.sql"):
        discover(tmp_path)
