"""Waiting on what a node changes by itself, where there is no event to await from a test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_until(
    condition: Callable[[], bool], timeout: float = 5.0, period: float = 0.005
) -> None:
    """Poll `condition` (a node's own timers or loop change it) until true; fail at
    `timeout` seconds with an assertion, never hang."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(period)
