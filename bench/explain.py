"""EXPLAIN ANALYZE of the named feed queries: how many post rows a plan really read."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from app import db


def posts_rows_read(plan: dict[str, Any]) -> int:
    """Rows produced by every scan of the posts table in a plan, all loops counted."""
    rows = 0
    if plan.get("Relation Name") == "posts":
        rows += int(plan["Actual Rows"]) * int(plan["Actual Loops"])
    for child in plan.get("Plans", []):
        rows += posts_rows_read(child)
    return rows


async def explain(conn: asyncpg.Connection, sql: str, args: list[Any]) -> tuple[int, float]:
    """(post rows read, execution ms) of one run of `sql`."""
    raw = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
    (result,) = json.loads(raw)
    return posts_rows_read(result["Plan"]), float(result["Execution Time"])


def sql_of(name: str, **params: Any) -> tuple[str, list[Any]]:
    """A named query's SQL, as the service runs it, and its parameters in $n order."""
    order = db.queries.driver_adapter.var_sorted[name]
    return str(getattr(db.queries, name).sql), [params[p] for p in order]
