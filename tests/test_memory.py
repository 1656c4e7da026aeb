"""Giving back the memory of finished uploads (app/memory.py)."""

from __future__ import annotations

import asyncio

from app.memory import trim_when_idle
from app.uploads import ByteBudget


async def test_memory_is_given_back_once_after_uploads_and_never_during_one() -> None:
    budget = ByteBudget(1000)
    trims: list[str] = []
    task = asyncio.create_task(trim_when_idle(budget, [lambda: trims.append("trim")], 0.02))
    try:
        await asyncio.sleep(0.1)
        assert trims == [], "trimmed with no upload since the start"

        await budget.acquire(100, 1.0)  # an upload under way
        await asyncio.sleep(0.1)
        assert trims == [], "trimmed while an upload held memory"

        await budget.release(100)
        await asyncio.sleep(0.1)
        assert trims == ["trim"], "not trimmed, or trimmed again, after the upload ended"
    finally:
        task.cancel()
