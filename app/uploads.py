"""An upload's bytes, and the budget of bytes all uploads of this process may hold at once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from app.errors import Overloaded

# Multipart framing around the file: boundaries, part headers, small extra fields.
FRAMING_ALLOWANCE = 64 * 1024

# An upload's bytes in the service: a bytearray, so that the received body becomes the file
# and goes to a worker and to S3 without a copy (see app/api/multipart.py and app/images.py).
Bytes = bytes | bytearray


@dataclass(slots=True)
class Upload:
    """The received file, and the share of the byte budget it holds."""

    data: Bytes
    budget: ByteBudget
    reserved: int

    async def hold(self, size: int) -> None:
        """Make the reservation `size`: what this upload holds now (never waits).

        Called when the work replaces the body (a cleaned copy, a rendition), so that
        the budget counts what is really held.
        """
        await self.budget.resize(self.reserved, size)
        self.reserved = size


class ByteBudget:
    """Bytes of upload bodies this process may hold at once; waiting for room is bounded."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self.admitted = 0  # uploads let in so far
        self._freed = asyncio.Condition()

    async def acquire(self, size: int, wait: float) -> None:
        async with self._freed:
            try:
                async with asyncio.timeout(wait):
                    await self._freed.wait_for(lambda: self.in_use + size <= self.capacity)
            except TimeoutError:
                raise Overloaded("the service is receiving all the uploads it can; retry") from None
            self.in_use += size
            self.admitted += 1

    async def release(self, size: int) -> None:
        await self.resize(size, 0)

    async def resize(self, old: int, new: int) -> None:
        """Change a reservation at once, even past the capacity: new uploads then wait."""
        async with self._freed:
            self.in_use += new - old
            if new < old:
                self._freed.notify_all()
