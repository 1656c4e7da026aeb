"""Schema migrations: numbered plain SQL files in sql/migrations, each applied once, in order."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from app.db import SQL_DIR, queries

log = logging.getLogger(__name__)

MIGRATIONS_DIR = SQL_DIR / "migrations"
_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_some_name.sql")
        migrations.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a number in {directory}")
    return migrations


async def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration; return the names of those applied now."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await _migrate(conn, discover(directory))
    finally:
        await conn.close()


async def _migrate(conn: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
    # Lock first: CREATE TABLE IF NOT EXISTS itself races between processes.
    await queries.lock_migrations(conn)
    try:
        await queries.create_migrations_table(conn)
        applied = {row["version"]: row async for row in queries.applied_migrations(conn)}
        done = []
        for migration in migrations:
            previous = applied.get(migration.version)
            if previous is not None:
                if previous["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} was edited after it "
                        "was applied; add a new migration instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await queries.record_migration(
                    conn,
                    version=migration.version,
                    name=migration.name,
                    checksum=migration.checksum,
                )
            label = f"{migration.version:04d}_{migration.name}"
            log.info("applied migration %s", label)
            done.append(label)
        return done
    finally:
        await queries.unlock_migrations(conn)
