"""Clean-up runs by itself: uploads no post uses are deleted after the retention, orphans are
swept, one process at a time, with metrics; and a user cannot pile up unposted uploads."""

from __future__ import annotations

import asyncio
import datetime as dt
import re

import asyncpg

from app.keys import DATABASE, METRICS, QUEUE, STORAGE
from app.main import create_app
from app.settings import Settings
from app.sweep import delete_unposted, find_orphans, run_due_sweeps
from tests.helpers import (
    CORPUS,
    AiohttpClient,
    Client,
    assert_error_shape,
    bucket_keys,
    media_rows,
    sign_up,
    upload,
    upload_photo,
)


async def age_media(dsn: str, by: dt.timedelta) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("UPDATE media SET created_at = created_at - $1::interval", by)
    finally:
        await conn.close()


PHOTO = (CORPUS / "sample.jpg").read_bytes()


def media_keys(rows: list[asyncpg.Record]) -> set[str]:
    return {
        row[k] for row in rows for k in ("original_key", "thumbnail_key", "source_key") if row[k]
    }


async def test_uploads_no_post_uses_are_capped_per_user(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings.with_overrides(max_unposted_media=2)))
    ada = await sign_up(client, "ada")
    first = await upload_photo(client, ada)
    await upload_photo(client, ada)
    refused = await upload(client, ada, PHOTO)
    assert refused.status == 409
    assert_error_shape(await refused.json(), "unposted_limit")

    post = await client.post("/v1/posts", json={"media_id": first["media_id"]}, headers=ada.auth)
    assert post.status == 201
    await upload_photo(client, ada)  # one slot free again
    other = await sign_up(client, "other")
    await upload_photo(client, other)  # the cap is per user


async def test_old_unposted_media_go_rows_first_then_objects_and_posted_ones_stay(
    client: Client, clean_database: str
) -> None:
    ada = await sign_up(client, "ada")
    posted = await upload_photo(client, ada)
    response = await client.post(
        "/v1/posts", json={"media_id": posted["media_id"]}, headers=ada.auth
    )
    assert response.status == 201
    await upload_photo(client, ada)
    await age_media(clean_database, dt.timedelta(days=2))
    await upload_photo(client, ada)  # uploaded after the others aged: inside the retention

    deleted = await delete_unposted(
        client.app[DATABASE].connection, client.app[STORAGE], retention=86400
    )

    assert deleted == 1
    rows = await media_rows(clean_database)
    assert len(rows) == 2
    assert sorted(await bucket_keys(client)) == sorted(media_keys(rows))


async def test_the_orphan_sweep_leaves_objects_queued_for_deletion_to_their_delete(
    client: Client, clean_database: str
) -> None:
    """A delete's objects are queued with its rows gone: not orphans, though no row names them.

    Counting them as orphans would race the delete (and the unposted sweep) that owns them.
    """
    storage = client.app[STORAGE]
    for key in ("media/1/queued.jpg", "media/1/orphan.jpg"):
        await storage.client.put_object(Bucket=storage.bucket, Key=key, Body=b"x")
    conn = await asyncpg.connect(clean_database)
    try:
        await conn.execute(
            "INSERT INTO object_deletions (object_key) VALUES ('media/1/queued.jpg')"
        )
        assert await find_orphans(conn, storage, dt.timedelta(0)) == ["media/1/orphan.jpg"]
    finally:
        await conn.close()


async def test_the_scheduled_sweeps_run_in_one_process_at_a_time_and_are_counted(
    client: Client, clean_database: str, settings: Settings
) -> None:
    ada = await sign_up(client, "ada")
    await upload_photo(client, ada)
    await age_media(clean_database, dt.timedelta(days=2))
    storage = client.app[STORAGE]
    await storage.client.put_object(Bucket=storage.bucket, Key="media/lost/orphan.jpg", Body=b"x")
    metrics = client.app[METRICS]

    # Two processes wake together: one claims each sweep, the other skips it.
    immediately = dt.timedelta(0)
    await asyncio.gather(
        *(
            run_due_sweeps(
                client.app[DATABASE].connection,
                storage,
                client.app[QUEUE],
                settings,
                metrics,
                immediately,
            )
            for _ in range(2)
        )
    )
    assert await media_rows(clean_database) == []
    assert await bucket_keys(client) == []
    text = await (await client.get("/metrics")).text()
    assert _value(text, 'monogram_sweep_runs_total{result="ok",sweep="unposted"}') == 1
    assert _value(text, 'monogram_sweep_runs_total{result="ok",sweep="orphans"}') == 1
    assert _value(text, 'monogram_sweep_deleted_total{sweep="unposted"}') == 1
    assert _value(text, 'monogram_sweep_deleted_total{sweep="orphans"}') == 1

    # Within the interval, nobody runs them again.
    await run_due_sweeps(
        client.app[DATABASE].connection, storage, client.app[QUEUE], settings, metrics, immediately
    )
    text = await (await client.get("/metrics")).text()
    assert _value(text, 'monogram_sweep_runs_total{result="ok",sweep="unposted"}') == 1


async def test_the_service_sweeps_on_its_own_schedule(
    aiohttp_client: AiohttpClient, settings: Settings, clean_database: str
) -> None:
    quick = settings.with_overrides(sweep_interval=0.5, unposted_media_retention=1.0)
    client = await aiohttp_client(create_app(quick))
    ada = await sign_up(client, "ada")
    await upload_photo(client, ada)
    for _ in range(100):
        if not await media_rows(clean_database):
            break
        await asyncio.sleep(0.1)
    assert await media_rows(clean_database) == []
    assert await bucket_keys(client) == []


def _value(exposition: str, series: str) -> float:
    found = re.search(rf"^{re.escape(series)} (\S+)$", exposition, flags=re.MULTILINE)
    assert found, f"{series} not in /metrics"
    return float(found.group(1))
