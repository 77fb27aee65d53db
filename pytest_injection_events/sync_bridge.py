"""Streams used from synchronous code, or from a loop other than their own.

A stream lives on one event loop, its *home*: the caller's under `async with`,
or a loop on a thread of its own under plain `with`. Calls from anywhere else
are handed to the home loop. See docs/design.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An event loop on a daemon thread, for streams used from synchronous code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="injection-event-stream", daemon=True
        )
        self._thread.start()

    def run(self, call: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(call, self.loop).result()

    def stop(self) -> None:
        async def finish() -> None:
            await self.loop.shutdown_asyncgens()
            await self.loop.shutdown_default_executor()

        self.run(finish())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class Home:
    """The loop a stream lives on, and the ways to reach it from elsewhere."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

    def here(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def submit(self, call: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if self.loop is None or not self.loop.is_running():
            call.close()
            raise RuntimeError(
                "the stream is not open, or the event loop that opened it is not running "
                "(open the stream on the loop that waits, or with plain `with`)"
            )
        return asyncio.run_coroutine_threadsafe(call, self.loop)

    def run(self, call: Coroutine[Any, Any, T]) -> Awaitable[T]:
        """`call` to await on the home loop, from the home loop or any other. Not a
        coroutine itself: on the home loop the caller awaits `call` directly, with no
        frame between it and the hit that wakes it."""
        if self.here():
            return call
        return asyncio.wrap_future(self.submit(call))

    def block(self, call: Coroutine[Any, Any, T], what: str) -> T:
        """Run `call` on the home loop and wait for it from synchronous code."""
        if self.here():
            call.close()
            raise RuntimeError(
                f"{what}_sync would block the event loop that reads this stream; "
                f"use `await stream.{what}(...)` here, or open the stream with plain `with` "
                "in synchronous code"
            )
        future = self.submit(call)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise
