"""The schema: the seed's tables and indexes, applied once each, in order."""

from __future__ import annotations

import asyncio
import json
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


def _up_to_0007(folder: Path) -> Path:
    """A folder of the migrations before posts lost their URLs."""
    folder.mkdir()
    for migration in discover():
        if migration.version <= 7:
            (folder / f"{migration.version:04d}_{migration.name}.sql").write_text(migration.sql)
    return folder


OLD_BASE = "http://old-origin.example/monogram"


async def _user_on_0007(dsn: str, tmp_path: Path) -> int:
    """Migrates to 0007 and makes a user; its id."""
    await migrate(dsn, _up_to_0007(tmp_path / "migrations"))
    conn = await asyncpg.connect(dsn)
    try:
        user_id: int = await conn.fetchval(
            "INSERT INTO users (username, password_hash) VALUES ('ada', 'x') RETURNING user_id"
        )
    finally:
        await conn.close()
    return user_id


async def _old_post(conn: asyncpg.Connection, user_id: int, name: str, base: str) -> int:
    """A post as 0001-0007 stored it: its URLs written in its row."""
    media_id = await conn.fetchval(
        "INSERT INTO media (user_id, original_key, thumbnail_key, content_type, width, height,"
        " bytes) VALUES ($1, $2, $3, 'image/jpeg', 4, 3, 1) RETURNING media_id",
        user_id,
        f"media/{user_id}/{name}.jpg",
        f"media/{user_id}/{name}_thumb.jpg",
    )
    post_id: int = await conn.fetchval(
        "INSERT INTO posts (author_id, media_id, image_url, thumbnail_url)"
        " VALUES ($1, $2, $3, $4) RETURNING post_id",
        user_id,
        media_id,
        f"{base}/media/{user_id}/{name}.jpg",
        f"{base}/media/{user_id}/{name}_thumb.jpg",
    )
    return post_id


async def test_posts_keep_their_images_when_their_urls_become_keys(
    fresh_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    dsn = fresh_postgres.dsn
    ada = await _user_on_0007(dsn, tmp_path)
    conn = await asyncpg.connect(dsn)
    try:
        posts = [await _old_post(conn, ada, f"photo{i}", OLD_BASE) for i in range(3)]
        await conn.execute(
            "INSERT INTO upload_idempotency (user_id, idempotency_key, body_sha256, media_id,"
            " response) SELECT $1, 'k', '\\x00', media_id, jsonb_build_object('media_id',"
            " media_id, 'original_url', $2 || '/' || original_key, 'thumbnail_url',"
            " $2 || '/' || thumbnail_key) FROM media ORDER BY media_id LIMIT 1",
            ada,
            OLD_BASE,
        )
    finally:
        await conn.close()

    assert (await migrate(dsn))[0] == "0008_image_keys_only"

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT p.post_id, m.original_key, m.thumbnail_key FROM posts p"
            " JOIN media m USING (media_id) ORDER BY p.post_id"
        )
        response = await conn.fetchval("SELECT response FROM upload_idempotency")
    finally:
        await conn.close()
    assert [r["post_id"] for r in rows] == posts
    assert [r["original_key"] for r in rows] == [f"media/{ada}/photo{i}.jpg" for i in range(3)]
    assert [r["thumbnail_key"] for r in rows] == [
        f"media/{ada}/photo{i}_thumb.jpg" for i in range(3)
    ]
    recorded = json.loads(response)
    assert "original_url" not in recorded
    assert recorded["original_key"] == f"media/{ada}/photo0.jpg"
    assert recorded["thumbnail_key"] == f"media/{ada}/photo0_thumb.jpg"


async def test_a_post_whose_url_names_other_keys_stops_the_migration_with_nothing_lost(
    fresh_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    dsn = fresh_postgres.dsn
    ada = await _user_on_0007(dsn, tmp_path)
    conn = await asyncpg.connect(dsn)
    try:
        post = await _old_post(conn, ada, "photo", OLD_BASE)
        await conn.execute(
            "UPDATE posts SET image_url = 'https://elsewhere.example/other.jpg' WHERE post_id = $1",
            post,
        )
    finally:
        await conn.close()

    with pytest.raises(asyncpg.RaiseError, match="1 posts have image URLs"):
        await migrate(dsn)

    conn = await asyncpg.connect(dsn)
    try:
        kept = await conn.fetchval("SELECT image_url FROM posts WHERE post_id = $1", post)
        applied = await conn.fetchval("SELECT max(version) FROM schema_migrations")
    finally:
        await conn.close()
    assert kept == "https://elsewhere.example/other.jpg"
    assert applied == 7
