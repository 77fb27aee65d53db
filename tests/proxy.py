"""A small asyncio TCP proxy for tests that need a connection to break on cue.

It listens on 127.0.0.1 and forwards each accepted connection to a target.
A test can cut every live connection (at once, or after N more bytes from the
server, to split an SSE frame), and take the proxy "down": new connections are
then refused (accepted and closed at once) or held (accepted, not forwarded)
until `up()`. It runs on the test's loop and closes everything it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

REFUSE = "refuse"
HOLD = "hold"
CHUNK = 65536


class _Pipe:
    """One proxied connection: the client side, the server side and the two pumps."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.server: asyncio.StreamWriter | None = None
        self.budget: int | None = None  # server->client bytes left before a cut
        self.frozen = False  # server->client bytes swallowed: a link gone silent
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for writer in (self.client, self.server):
            if writer is not None:
                writer.transport.abort()


class Proxy:
    """`async with Proxy(node.url) as proxy:` then point the client at `proxy.url`."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        assert parts.hostname and parts.port, target
        self.target_host, self.target_port = parts.hostname, parts.port
        self.port = 0
        self.accepted = 0  # connections accepted, whatever became of them
        self.forwarded = 0  # connections joined to the target
        self.refused = 0
        self.held = 0  # connections waiting for up() now
        self._mode: str | None = None
        self._up = asyncio.Event()
        self._up.set()
        self._pipes: set[_Pipe] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening, abort every connection and wait for every handler to end."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self._up.set()  # held handlers see the proxy closed and give up
        for pipe in list(self._pipes):
            pipe.abort()
        # Not cancelled: asyncio (3.11) logs an error for a cancelled connection handler.
        await asyncio.wait_for(asyncio.gather(*self._handlers, return_exceptions=True), 5.0)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> Proxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- what a test does ----------------------------------------------------

    def cut(self) -> int:
        """Abort every live connection (both sides, no FIN); returns how many."""
        pipes = list(self._pipes)
        for pipe in pipes:
            pipe.abort()
        return len(pipes)

    def cut_after(self, nbytes: int) -> None:
        """Let `nbytes` more bytes flow from the server on each live connection, then cut it."""
        for pipe in self._pipes:
            pipe.budget = nbytes

    def freeze(self) -> None:
        """Live connections go silent, open but passing nothing to the client, as when
        the node's host vanishes; new connections are not affected."""
        for pipe in self._pipes:
            pipe.frozen = True

    def down(self, mode: str = REFUSE) -> None:
        """New connections are refused (closed at once) or held until `up()`."""
        assert mode in (REFUSE, HOLD), mode
        self._mode = mode
        self._up.clear()

    def up(self) -> None:
        """Forward new connections again, and the held ones now."""
        self._mode = None
        self._up.set()

    async def wait_for(self, *, forwarded: int = 0, refused: int = 0, held: int = 0) -> None:
        """Wait until the counters reach these values (a reconnect arrived, ...)."""

        def reached() -> bool:
            return self.forwarded >= forwarded and self.refused >= refused and self.held >= held

        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(reached)

        await asyncio.wait_for(wait(), 5.0)

    # -- internals -------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        pipe = _Pipe(writer)
        self._pipes.add(pipe)
        self.accepted += 1
        try:
            if self._mode == REFUSE or self._server is None:
                self.refused += 1
                await self._notify()
                return
            if self._mode == HOLD:
                self.held += 1
                await self._notify()
                try:
                    await self._up.wait()
                finally:
                    self.held -= 1
                if self._server is None:
                    return
            upstream_reader, pipe.server = await asyncio.open_connection(
                self.target_host, self.target_port
            )
            self.forwarded += 1
            await self._notify()
            pipe.tasks = [
                asyncio.create_task(self._pump(reader, pipe.server, pipe, None)),
                asyncio.create_task(self._pump(upstream_reader, writer, pipe, pipe)),
            ]
            await asyncio.gather(*pipe.tasks, return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for pump in pipe.tasks:
                pump.cancel()
            await asyncio.gather(*pipe.tasks, return_exceptions=True)
            for side in (pipe.client, pipe.server):
                if side is not None:
                    side.close()
            self._pipes.discard(pipe)
            self._handlers.discard(task)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pipe: _Pipe,
        budgeted: _Pipe | None,
    ) -> None:
        """Copy one direction until EOF (passed on); the server->client one honours
        `cut_after`. An error on either side aborts both, as a broken link would."""
        try:
            while data := await source.read(CHUNK):
                if budgeted is not None and budgeted.frozen:
                    continue
                if budgeted is not None and budgeted.budget is not None:
                    if len(data) >= budgeted.budget:
                        sink.write(data[: budgeted.budget])
                        with contextlib.suppress(OSError):
                            await sink.drain()
                        pipe.abort()
                        return
                    budgeted.budget -= len(data)
                sink.write(data)
                await sink.drain()
            if sink.can_write_eof():
                sink.write_eof()
        except OSError:
            pipe.abort()
