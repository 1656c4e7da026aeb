"""A TCP proxy for the fault tests: put it between the service and PostgreSQL or S3, then make
the link slow, silent, refusing or cut. (No toxiproxy here; this is the part of it we need.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay = 0.0  # seconds added before each chunk is passed on, both ways
        self.silent = False  # bytes are taken and dropped: the far side never answers
        self.refusing = False  # new connections are closed as soon as they open
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    def heal(self) -> None:
        self.delay, self.silent, self.refusing = 0.0, False, False

    def cut(self) -> None:
        """Reset every open connection, in both directions, as a crash or a network cut does."""
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        if self.refusing:
            client.transport.abort()
            return
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.upstream)
        except OSError:
            client.transport.abort()
            return
        self._links.update((client, upstream))
        pipes = [
            asyncio.create_task(self._pipe(client_reader, upstream)),
            asyncio.create_task(self._pipe(upstream_reader, client)),
        ]
        self._pipes.update(pipes)
        for pipe in pipes:
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await source.read(64 * 1024):
                if self.silent:
                    continue
                if self.delay:
                    await asyncio.sleep(self.delay)
                sink.write(chunk)
                await sink.drain()
        self._links.discard(sink)
        sink.close()


@contextlib.asynccontextmanager
async def fault_proxy(upstream_port: int) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(upstream_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
