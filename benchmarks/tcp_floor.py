"""The floor: a raw asyncio TCP push on loopback, in a process of its own.

No HTTP, no SSE, no JSON: the least any push from one Python process to another
can cost after the same idle. The client sends `DELAY\\n`; the server answers
`ok\\n` at once and, DELAY seconds later, pushes the `time.time()` it took just
before the write. Prints its port, then serves until stdin closes.
"""

from __future__ import annotations

import asyncio
import sys
import time


class FloorProtocol(asyncio.Protocol):
    """One connection: every line is a delay after which to push a timestamp."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        loop = asyncio.get_running_loop()
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            assert self.transport is not None
            self.transport.write(b"ok\n")
            loop.call_later(float(line), self.push)

    def push(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(f"{time.time()!r}\n".encode())


async def main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FloorProtocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
