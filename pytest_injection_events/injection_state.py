"""The kinds of injection point, what an enabled injection holds per shard, and the
handler a `handler` point's function receives (its messages and parameters).

The `Injector` (injector.py) owns these; they live apart so each file keeps to one
job (docs/design.md).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .errors import InjectionEventsError
from .event_schema import RESUME, TIMEOUT, WAIT

if TYPE_CHECKING:
    from .injector import Injector

LAMBDA = "lambda"
SLEEP = "sleep"
EXCEPTION = "exception"
HANDLER = "handler"
WAIT_FOR_MESSAGE = "wait_for_message"
PARAMETER = "parameter"
KINDS = (LAMBDA, SLEEP, EXCEPTION, HANDLER, WAIT_FOR_MESSAGE, PARAMETER)

#: How long a breakpoint parks when the caller names no timeout (ScyllaDB tests use minutes).
DEFAULT_BREAKPOINT_TIMEOUT = 300.0


class BreakpointTimeout(InjectionEventsError, TimeoutError):
    """A parked point got no message in time."""

    def __init__(self, injection: str, timeout: float) -> None:
        super().__init__(f"{injection}: no message within {timeout:g}s")
        self.injection = injection
        self.timeout = timeout


class _Shard:
    __slots__ = (
        "enabled",
        "enters",
        "message_base",
        "parked",
        "received",
        "running",
        "shared_read",
        "waiters",
    )

    def __init__(self) -> None:
        self.enabled = True
        self.enters = 0
        self.received = 0  # messages since the injection was first enabled
        self.message_base = 0  # `received` at the last (re-)enable: older ones are not news
        self.shared_read = 0  # messages taken by handlers that do not share them
        self.waiters: list[asyncio.Future[None]] = []
        self.parked = 0
        self.running = 0  # handlers still running, which keeps a one-shot alive


class _Injection:
    __slots__ = ("enters", "name", "one_shot", "parameters", "released", "shards")

    def __init__(self, name: str, shards: int) -> None:
        self.name = name
        self.one_shot = False
        self.parameters: dict[str, str] = {}
        self.shards = [_Shard() for _ in range(shards)]
        self.enters = 0
        self.released = False  # disabled: parked handlers go on, nothing fires again

    def listed(self) -> bool:
        return any(shard.enabled for shard in self.shards)

    def wake(self) -> None:
        for shard in self.shards:
            for waiter in shard.waiters:
                if not waiter.done():
                    waiter.set_result(None)


class InjectionHandler:
    """What a `handler` point's function receives: messages and parameters."""

    def __init__(
        self, injector: Injector, injection: _Injection, kind: str, shard: int, share_messages: bool
    ) -> None:
        self._injector = injector
        self._injection = injection
        self._kind = kind
        self._shard = injection.shards[shard]
        self.shard = shard
        self._share_messages = share_messages
        self._read = self._shard.message_base

    @property
    def name(self) -> str:
        return self._injection.name

    def poll_for_message(self) -> bool:
        """Take an unread message if there is one, without waiting."""
        shard = self._shard
        if self._share_messages:
            if self._read < shard.received:
                self._read += 1
                return True
            return False
        if shard.shared_read < shard.received:
            shard.shared_read += 1
            return True
        return False

    async def wait_for_message(self, timeout: float = DEFAULT_BREAKPOINT_TIMEOUT) -> None:
        """Park until a message arrives (or the injection is disabled); raise on timeout.

        In a `handler` point this announces phase `wait` first: the handler got past
        its own filters and waits now (a breakpoint's `enter` already says so).
        """
        injection, shard = self._injection, self._shard
        if self._kind == HANDLER:
            self._injector._emit(injection, self._kind, WAIT, self.shard)
        if not (self.poll_for_message() or injection.released):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            shard.parked += 1
            try:
                while not (self.poll_for_message() or injection.released):
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        self._injector._emit(injection, self._kind, TIMEOUT, self.shard)
                        raise BreakpointTimeout(injection.name, timeout)
                    waiter = loop.create_future()
                    shard.waiters.append(waiter)
                    timer = loop.call_later(remaining, _wake_waiter, waiter)
                    try:
                        await waiter
                    finally:
                        timer.cancel()
                        shard.waiters.remove(waiter)
            finally:
                shard.parked -= 1
        self._injector._emit(injection, self._kind, RESUME, self.shard)

    def get(self, key: str) -> str | None:
        return self._injection.parameters.get(key)

    def set(self, key: str, value: str) -> None:
        """Export a value the test can read back through the injection's parameters."""
        self._injection.parameters[key] = str(value)


def _wake_waiter(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
