"""A TCP proxy on loopback that adds a round-trip time: simulated geography for the bench.

Everything here runs on one machine, so a "far" user is simulated: every byte crossing the
proxy arrives half a round trip late in each direction, and a new connection's first bytes
wait one round trip more, for the TCP handshake a real client pays before it can send. There
is no bandwidth limit and no loss: only latency, which is what the seed's figures are about.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

CHUNK = 64 * 1024
# Chunks in flight per direction: a slow reader stalls the proxy's reads, not its memory.
MAX_QUEUED_CHUNKS = 64


class DelayProxy:
    """127.0.0.1:`port` -> `upstream_host`:`upstream_port`, `rtt` seconds slower per round trip."""

    def __init__(self, upstream_host: str, upstream_port: int, rtt: float) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.rtt = rtt
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        loop = asyncio.get_running_loop()
        handshake_done = loop.time() + self.rtt
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            writer.close()
            self._handlers.discard(task)
            return
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, handshake_done),
                self._pipe(up_reader, writer, 0.0),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return  # stop() ends the connections still open: nothing is waiting for them
        finally:
            for side in (writer, up_writer):
                side.close()
            self._handlers.discard(task)

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, not_before: float
    ) -> None:
        """Copies `source` to `sink`, each chunk rtt/2 after it was read (and not before
        `not_before` + rtt/2); the end of the stream follows the last chunk."""
        loop = asyncio.get_running_loop()
        half = self.rtt / 2
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(MAX_QUEUED_CHUNKS)

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    if sink.can_write_eof():
                        sink.write_eof()
                    return
                sink.write(chunk)
                await sink.drain()

        delivering = asyncio.create_task(deliver())
        try:
            while True:
                chunk = await source.read(CHUNK)
                await queue.put((max(loop.time(), not_before) + half, chunk))
                if not chunk:
                    break
            await delivering
        finally:
            delivering.cancel()


@asynccontextmanager
async def delayed(upstream_host: str, upstream_port: int, rtt: float) -> AsyncIterator[DelayProxy]:
    proxy = DelayProxy(upstream_host, upstream_port, rtt)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
