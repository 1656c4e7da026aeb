"""The orphan sweep: objects in the bucket that no media row refers to.

An upload deletes its objects when it fails after storing them; if that
delete fails too (S3 down at that moment, the process killed), the objects
stay behind. This finds them. Objects younger than `min_age` are skipped:
they may belong to an upload still in flight.
"""

from __future__ import annotations

import datetime as dt
import logging

import asyncpg
import orjson

from app import db
from app.settings import Settings
from app.storage import PUBLIC_PREFIX, Storage, s3_client

log = logging.getLogger(__name__)

PREFIXES = (PUBLIC_PREFIX, "sources/")


async def find_orphans(
    conn: asyncpg.Connection, storage: Storage, min_age: dt.timedelta
) -> list[str]:
    referenced: set[str] = set()
    async for row in db.queries.media_keys(conn):
        referenced.update(key for key in row.values() if key)
    cutoff = dt.datetime.now(dt.UTC) - min_age
    orphans = []
    paginator = storage.client.get_paginator("list_objects_v2")
    for prefix in PREFIXES:
        async for page in paginator.paginate(Bucket=storage.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if item["Key"] not in referenced and item["LastModified"] <= cutoff:
                    orphans.append(item["Key"])
    return orphans


async def sweep(settings: Settings, min_age: dt.timedelta, delete: bool) -> list[str]:
    """List (and with `delete`, remove) orphans; one JSON line each on stdout."""
    assert settings.database_url, "DATABASE_URL must be set"
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with s3_client(settings) as client:
            storage = Storage(client, settings.s3_bucket, settings.public_base_url)
            orphans = await find_orphans(conn, storage, min_age)
            for key in orphans:
                print(orjson.dumps({"orphan": key, "deleted": delete}).decode())
            if delete:
                for start in range(0, len(orphans), 1000):  # DeleteObjects takes 1000 at most
                    await storage.delete_all(orphans[start : start + 1000])
    finally:
        await conn.close()
    log.info("orphan sweep done", extra={"orphans": len(orphans), "deleted": delete})
    return orphans
