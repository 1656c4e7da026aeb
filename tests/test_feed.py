"""The pull-model feed: the right posts, in order, paged without gaps, at a bounded cost."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from app import db
from app.devstack.postgres import EmbeddedPostgres
from app.feed import NEWEST, feed_rows
from app.keys import CURSORS, TOKENS
from app.main import create_app
from app.migrations import migrate
from app.settings import Settings
from bench.explain import explain, sql_of
from tests.helpers import (
    AiohttpClient,
    Client,
    assert_error_shape,
    feed_pages,
    free_port,
    insert_posts,
    make_users,
    publish,
    sign_up,
)


@pytest.fixture(params=["pull", "push", "hybrid"])
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """Every test of the feed's answers runs in each FEED_MODE: the same pages in all three.
    (Nothing here runs the fan-out: a timeline is built from the pull query when first read,
    and the posts of these tests are all there by then.)"""
    if request.param == "pull":
        return settings
    redis_url: str = request.getfixturevalue("redis_url")
    return settings.with_overrides(feed_mode=request.param, redis_url=redis_url)


def flat(pages: list[list[int]]) -> list[int]:
    return [post_id for page in pages for post_id in page]


async def test_the_feed_holds_followed_accounts_posts_newest_first(
    client: Client, clean_database: str
) -> None:
    reader, followed, stranger = [
        await sign_up(client, n) for n in ("reader", "followed", "stranger")
    ]
    await client.put(f"/v1/following/{followed.id}", headers=reader.auth)
    mine = await publish(client, followed, "hello")
    await publish(client, stranger, "not followed")
    await publish(client, reader, "my own")

    response = await client.get("/v1/feed", headers=reader.auth)
    assert response.status == 200
    body = await response.json()
    assert body["next_cursor"] is None
    assert body["items"] == [mine]  # the same post object as everywhere else


async def test_order_is_newest_first_with_ties_broken_by_id(
    client: Client, clean_database: str
) -> None:
    reader = await sign_up(client, "reader")
    authors = [await sign_up(client, f"author{i}") for i in range(3)]
    now = dt.datetime.now(dt.UTC)
    expected: list[tuple[dt.datetime, int]] = []
    for i, author in enumerate(authors):
        await client.put(f"/v1/following/{author.id}", headers=reader.auth)
        times = [now - dt.timedelta(minutes=m) for m in (i, 5, 5, 9 + i)]  # shared instants
        expected += zip(times, await insert_posts(clean_database, author.id, times), strict=True)
    order = [post_id for _, post_id in sorted(expected, reverse=True)]
    assert flat(await feed_pages(client, reader, limit=5)) == order
    assert flat(await feed_pages(client, reader, limit=1)) == order
    assert flat(await feed_pages(client, reader, limit=100)) == order


async def test_feed_query_seed_serves_the_seeds_join_with_the_same_json_and_cursor(
    aiohttp_client: AiohttpClient, client: Client, settings: Settings, clean_database: str
) -> None:
    # The seed's JOIN is a pull query: its pages against this mode's.
    seed_settings = settings.with_overrides(feed_query="seed", feed_mode="pull")
    seed = await aiohttp_client(create_app(seed_settings))
    reader = await sign_up(client, "reader")
    now = dt.datetime.now(dt.UTC)
    for i, author in enumerate([await sign_up(client, f"author{i}") for i in range(3)]):
        await client.put(f"/v1/following/{author.id}", headers=reader.auth)
        times = [now - dt.timedelta(minutes=m) for m in (i, 5, 5, 9 + i)]  # shared instants
        await insert_posts(clean_database, author.id, times)
    liked = (await (await client.get("/v1/feed?limit=1", headers=reader.auth)).json())["items"]
    await client.put(f"/v1/posts/{liked[0]['id']}/like", headers=reader.auth)

    async def pages(app_client: Client, limit: int) -> list[dict[str, Any]]:
        found, cursor = [], None
        while True:
            params = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
            response = await app_client.get("/v1/feed", params=params, headers=reader.auth)
            assert response.status == 200
            body = await response.json()
            found.append(body)
            cursor = body["next_cursor"]
            if cursor is None:
                return found

    for limit in (1, 5, 100):
        assert await pages(seed, limit) == await pages(client, limit)
    metrics = await (await seed.get("/metrics")).text()
    assert 'monogram_feed_query_duration_seconds_count{query="seed",strategy="seed-join"}' in (
        metrics
    )
    assert 'query="monogram"' not in metrics


async def test_paging_while_new_posts_arrive_sees_every_older_post_exactly_once(
    client: Client, clean_database: str
) -> None:
    reader = await sign_up(client, "reader")
    authors = await make_users(client.app[TOKENS], clean_database, 6, prefix="author")
    now = dt.datetime.now(dt.UTC)
    older: list[int] = []
    for i, author in enumerate(authors):
        await client.put(f"/v1/following/{author.id}", headers=reader.auth)
        times = [now - dt.timedelta(seconds=7 * k + i) for k in range(10)]
        older += await insert_posts(clean_database, author.id, times)

    async def someone_posts() -> None:
        await insert_posts(clean_database, authors[0].id, [dt.datetime.now(dt.UTC)])

    seen = flat(await feed_pages(client, reader, limit=7, between=someone_posts))
    assert sorted(seen) == sorted(older)  # every older post, once, and none of the new ones


async def test_an_empty_feed(client: Client) -> None:
    loner = await sign_up(client, "loner")
    body = await (await client.get("/v1/feed", headers=loner.auth)).json()
    assert body == {"items": [], "next_cursor": None}


async def test_bad_limits_and_cursors_are_400(client: Client, clean_database: str) -> None:
    reader = await sign_up(client, "reader")
    for limit in ["0", "101", "x", "-5"]:
        response = await client.get("/v1/feed", params={"limit": limit}, headers=reader.auth)
        assert response.status == 400
        assert_error_shape(await response.json(), "bad_request")
    foreign = client.app[CURSORS].encode("followers", 5)  # a cursor of another listing
    for cursor in ["junk", foreign, foreign + "x"]:
        response = await client.get("/v1/feed", params={"cursor": cursor}, headers=reader.auth)
        assert response.status == 400
        assert_error_shape(await response.json(), "invalid_cursor")


# --- the grid: F in {10, 200, 1000, 5000} x {active, quiet} -------------------------------

ACTIVE_AUTHORS = 6000  # users 1..6000 posted 30 times each in the last ten days
QUIET_AUTHORS = 6000  # users 6001..12000 posted twice, half a year ago
GRID = [(f, kind) for f in (10, 200, 1000, 5000) for kind in ("active", "quiet")]
# Strategy 1's window of newest posts, as its SQL writes it (the only numeric LIMIT there).
(PROBE_ROWS,) = map(int, re.findall(r"LIMIT (\d+)", str(db.queries.feed_recent.sql)))


@pytest.fixture(scope="module")
def grid_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedPostgres(
        tmp_path_factory.mktemp("feedgrid") / "data", free_port(), durable=False
    )
    server.start()
    try:
        asyncio.run(_load_grid(server.dsn))
        yield server.dsn
    finally:
        server.stop()


async def _load_grid(dsn: str) -> None:
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        authors = ACTIVE_AUTHORS + QUIET_AUTHORS
        await conn.execute(
            "INSERT INTO users (username, password_hash)"
            " SELECT 'user' || i, 'x' FROM generate_series(1, $1::int) i",
            authors + len(GRID),
        )
        await conn.execute(
            "CREATE TEMP TABLE gen AS"
            " SELECT row_number() OVER () AS n, a AS author,"
            "        CASE WHEN a <= $1 THEN now() - random() * interval '10 days'"
            "             ELSE now() - interval '180 days' - random() * interval '20 days'"
            "        END AS created_at"
            " FROM generate_series(1, $2::int) a"
            " CROSS JOIN LATERAL generate_series(1, CASE WHEN a <= $1 THEN 30 ELSE 2 END)",
            ACTIVE_AUTHORS,
            authors,
        )
        await conn.execute(
            "INSERT INTO media (media_id, user_id, original_key, thumbnail_key, content_type,"
            "                   width, height, bytes) OVERRIDING SYSTEM VALUE"
            " SELECT n, author, 'o' || n, 't' || n, 'image/jpeg', 4, 3, 1 FROM gen;"
            " INSERT INTO posts (post_id, author_id, media_id, created_at) OVERRIDING SYSTEM VALUE"
            " SELECT n, author, n, created_at FROM gen"
        )
        for i, (f, kind) in enumerate(GRID):
            viewer = ACTIVE_AUTHORS + QUIET_AUTHORS + 1 + i
            first = 1 if kind == "active" else ACTIVE_AUTHORS + 1
            await conn.execute(
                "INSERT INTO follows (follower_id, followee_id)"
                " SELECT $1, g FROM generate_series($2::bigint, $3::bigint) g",
                viewer,
                first,
                first + f - 1,
            )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def grid_report() -> Iterator[list[str]]:
    lines: list[str] = []
    yield lines
    report = "\n".join(
        ["", "feed query vs the seed's literal JOIN (EXPLAIN ANALYZE, 192k posts):", *lines]
    )
    print(report)


def feed_params(viewer: int, before: tuple[dt.datetime, int] = NEWEST) -> dict[str, Any]:
    return {"user_id": viewer, "before_time": before[0], "before_id": before[1], "page_size": 20}


@pytest.fixture
async def grid_conn(grid_database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(grid_database)
    yield conn
    await conn.close()


@pytest.mark.slow
@pytest.mark.parametrize(("followed", "kind"), GRID)
async def test_the_feed_reads_a_bounded_number_of_rows_at_every_point_of_the_grid(
    grid_conn: asyncpg.Connection, grid_report: list[str], followed: int, kind: str
) -> None:
    viewer = ACTIVE_AUTHORS + QUIET_AUTHORS + 1 + GRID.index((followed, kind))
    page = 20
    rows, strategy = await feed_rows(grid_conn, viewer, NEWEST, page)
    seed_sql, seed_args = sql_of("feed_seed_literal", user_id=viewer)
    literal = [r["post_id"] for r in await grid_conn.fetch(seed_sql, *seed_args)]
    assert [r["post_id"] for r in rows] == literal  # the seed's page (no ties at random times)

    # What the service ran: strategy 1, and strategy 2 when strategy 1 fell short.
    params = feed_params(viewer)
    our_rows, our_ms = await explain(grid_conn, *sql_of("feed_recent", **params))
    if strategy == "per-followee":
        fallback_rows, fallback_ms = await explain(grid_conn, *sql_of("feed_page", **params))
        our_rows, our_ms = our_rows + fallback_rows, our_ms + fallback_ms
    seed_rows, seed_ms = await explain(grid_conn, seed_sql, seed_args)
    if followed == 5000:  # the plans themselves, at the largest F
        answering = "feed_recent" if strategy == "recent" else "feed_page"
        sql, args = sql_of(answering, **params)
        plan = await grid_conn.fetch(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {sql}", *args)
        grid_report.append(f"  plan of {answering} at F={followed} {kind}:")
        grid_report.extend(f"    {row[0]}" for row in plan)
    grid_report.append(
        f"  F={followed:>5} {kind:>6}: {strategy:>12} {our_ms:6.2f} ms, {our_rows:>5} post rows;"
        f" seed's JOIN {seed_ms:7.2f} ms, {seed_rows:>6} rows ({seed_ms / our_ms:6.1f}x)"
    )
    # The probe reads at most PROBE_ROWS posts; the fallback one per followed account, then
    # at most a page from each of at most a page of them. Never most of the table, never all
    # the posts of many followed accounts.
    per_followee = followed + page * min(followed, page)
    assert our_rows <= PROBE_ROWS + page + per_followee
    assert our_rows < (ACTIVE_AUTHORS * 30 + QUIET_AUTHORS * 2) / 20
    if kind == "active" and followed >= page:
        assert our_rows < followed * 30 / 5


async def test_the_page_after_a_cursor_matches_the_literal_query_below_it(
    grid_conn: asyncpg.Connection,
) -> None:
    for followed, kind in [(200, "active"), (1000, "quiet"), (5000, "active")]:
        viewer = ACTIVE_AUTHORS + QUIET_AUTHORS + 1 + GRID.index((followed, kind))
        first, _ = await feed_rows(grid_conn, viewer, NEWEST, 20)
        last = first[-1]
        second, _ = await feed_rows(grid_conn, viewer, (last["created_at"], last["post_id"]), 20)
        expected = await grid_conn.fetch(
            "SELECT p.post_id FROM posts p JOIN follows f ON p.author_id = f.followee_id"
            " WHERE f.follower_id = $1 AND (p.created_at, p.post_id) < ($2, $3)"
            " ORDER BY p.created_at DESC, p.post_id DESC LIMIT 20",
            viewer,
            last["created_at"],
            last["post_id"],
        )
        assert [r["post_id"] for r in second] == [r["post_id"] for r in expected]
        assert not {r["post_id"] for r in first} & {r["post_id"] for r in second}


async def test_each_connection_plans_the_recent_feed_once_whatever_the_cursor(
    grid_conn: asyncpg.Connection,
) -> None:
    # Active viewers (strategy 1 answers) and quiet ones (it falls short), first pages and
    # pages below a cursor, page sizes from 1 to 101: one plan fits them all.
    viewers = [
        ACTIVE_AUTHORS + QUIET_AUTHORS + 1 + GRID.index(point)
        for point in [(200, "active"), (1000, "quiet"), (5000, "active"), (10, "quiet")]
    ]
    for call in range(24):
        viewer = viewers[call % len(viewers)]
        rows, _ = await feed_rows(grid_conn, viewer, NEWEST, 1 + call * 4 % 101)
        if rows:
            await feed_rows(grid_conn, viewer, (rows[-1]["created_at"], rows[-1]["post_id"]), 21)
    plans = {
        row["statement"]: row
        for row in await grid_conn.fetch(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
        )
    }
    # feed-page is left to PostgreSQL: its best plan depends on how many accounts the viewer
    # follows, which the statistics know per viewer.
    (used,) = [row for text, row in plans.items() if text == str(db.queries.feed_recent.sql)]
    # PostgreSQL tries five custom plans before it compares them with the generic one.
    assert used["custom_plans"] <= 5, dict(used)
    assert used["generic_plans"] > 0, dict(used)
