"""Small things several test files need: §4's keys, stated independently of the product."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket

from pytest_injection_events.node import FakeNode

#: The keys of every event (SPEC §4).
EVENT_KEYS = frozenset(
    {
        "injection",
        "type",
        "phase",
        "shard",
        "node",
        "seq",
        "timestamp",
        "enter_count",
        "one_shot",
        "parameters",
    }
)
#: A `gap` event carries these too.
GAP_KEYS = EVENT_KEYS | {"missed_from", "missed_to", "reason"}


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Publisher:
    """Hits `p` on the node's own loop, `burst` at a time with a short pause between (so
    the node's stream writers and the readers get the CPU), until stopped."""

    def __init__(self, node: FakeNode, burst: int = 3, pause: float = 0.002) -> None:
        self.node = node
        self.burst = burst
        self.pause = pause
        self.stopping = False
        self.done: concurrent.futures.Future[int] = concurrent.futures.Future()

    def start(self) -> Publisher:
        self.node.call(lambda: asyncio.ensure_future(self._run()))
        return self

    async def _run(self) -> None:
        injector = self.node.injector
        try:
            injector.enable("p")
            while not self.stopping:
                for _ in range(self.burst):
                    injector.inject("p", lambda: None)
                await asyncio.sleep(self.pause)  # pacing, not synchronization
            self.done.set_result(self.node.event_log.last_seq)
        except BaseException as exc:
            self.done.set_exception(exc)
            raise

    async def stop(self) -> int:
        """Stop; the last seq the node published."""
        self.node.call(lambda: setattr(self, "stopping", True))
        return await asyncio.wrap_future(self.done)
