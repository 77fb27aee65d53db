"""A node's `enter` events from polling `/enters`, for nodes with neither stream nor log.

Polling has no history: hits are counted from when the node was attached (or
from a mark), never from the injection's enable. It polls only the injections
that pending waits name, and only while they wait. See docs/design.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable

from .client import InjectionApi
from .event_schema import ENTER, InjectionEvent
from .source import NodeSource, StreamHost, stop_task

#: Polling period: first, factor, cap (ScyllaDB's own backoff starts at 0.1 s).
POLL_FIRST, POLL_FACTOR, POLL_CAP = 0.01, 1.5, 0.25

_log = logging.getLogger("pytest_injection_events.client")


class PollSource(NodeSource):
    kind = "/enters polling"
    phases = frozenset({ENTER})
    shards = False

    def __init__(self, host: StreamHost, url: str, node_id: str) -> None:
        super().__init__(host, url, node_id)
        self._api = InjectionApi(url, host.token, session=host.session, timeout=5.0)
        self._last: dict[str, int] = {}  # the count each injection answered last
        self._watched: Counter[str] = Counter()
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, history: bool) -> None:
        # No history to read: what is enabled now counts from its count now.
        await self._refresh(await self._api.get_enabled_injections(), announce=False)
        self._task = asyncio.create_task(self._run(), name=f"injection-poll {self.url}")

    async def position(self) -> tuple[int, int]:
        try:
            enabled = await self._api.get_enabled_injections()
        except ConnectionError as exc:
            _log.debug("polling %s failed: %s", self.url, exc)
            enabled = []
        await self._refresh({*enabled, *self._last})
        return self.life, self.seq

    def watch(self, name: str) -> None:
        self._watched[name] += 1
        self._woken.set()

    def unwatch(self, name: str) -> None:
        self._watched[name] -= 1
        if self._watched[name] <= 0:
            del self._watched[name]

    async def _run(self) -> None:
        period = POLL_FIRST
        while True:
            if not self._watched:
                self._woken.clear()
                await self._woken.wait()
                period = POLL_FIRST
            await self._refresh(list(self._watched))
            await asyncio.sleep(period)
            period = min(period * POLL_FACTOR, POLL_CAP)

    async def _refresh(self, names: Iterable[str], announce: bool = True) -> None:
        names = list(names)
        counts = await asyncio.gather(
            *(self._api.get_enter_count(name) for name in names), return_exceptions=True
        )
        now = time.time()
        for name, count in zip(names, counts, strict=True):
            if isinstance(count, BaseException):
                _log.debug("polling %s for %r failed: %s", self.url, name, count)
                continue
            last = self._last.get(name, 0)  # first seen after the attach: enabled since
            self._last[name] = count
            if not announce:
                continue
            if count < last:  # re-enabled, or the node restarted: counting starts again
                self.host.restarted(self.node_id, f"the count of {name!r} went down")
                last = 0
            for _ in range(count - last):
                self.seq += 1
                self.deliver(
                    InjectionEvent(
                        injection=name,
                        type=None,
                        phase=ENTER,
                        shard=None,
                        node=self.node_id,
                        seq=self.seq,
                        timestamp=now,
                        enter_count=count,
                    )
                )

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_task(task)
