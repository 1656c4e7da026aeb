"""The service's memory: glibc tuned for 2 MB upload bodies, and given back when uploads stop."""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable
from functools import cache

from app.uploads import ByteBudget

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap, where freed memory is reused (glibc's maximum).
MMAP_THRESHOLD = 32 * 1024 * 1024
# Free memory the heap may keep at its top between uploads.
TRIM_THRESHOLD = 64 * 1024 * 1024
# How often to look whether uploads have stopped and their memory can be given back.
TRIM_INTERVAL = 5.0


@cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None  # not glibc: its defaults are someone else's
    return libc if hasattr(libc, "malloc_trim") else None


def tune_allocator() -> None:
    """Serve upload bodies from the heap, and keep some free memory there between uploads.

    By default glibc serves large blocks with mmap, and each fresh mapping costs a page fault
    per 4 kB: forcing every body into its own mapping (as Monogram once did, to give memory
    back at once) cost about 0.7 ms of CPU per 2 MB buffer, several milliseconds per upload.
    Here bodies come from the heap, where freed memory is reused; what a burst of uploads
    leaves is given back by `trim_when_idle` once the uploads stop.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)


def give_back_free_memory() -> None:
    """Return the heap's free pages to the system (glibc's malloc_trim)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


async def trim_when_idle(
    budget: ByteBudget, trims: list[Callable[[], None]], interval: float = TRIM_INTERVAL
) -> None:
    """After uploads, once none is held, give back the memory they used: the heap's free
    pages, and whatever else `trims` releases."""
    trimmed_at = budget.admitted
    while True:
        await asyncio.sleep(interval)
        if budget.in_use or budget.admitted == trimmed_at:
            continue  # uploads under way, or none since the last trim
        trimmed_at = budget.admitted
        for trim in trims:
            trim()
        give_back_free_memory()
        log.debug("gave back the memory of finished uploads")
