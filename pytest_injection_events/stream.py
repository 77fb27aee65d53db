"""`injection_event_stream`: the events of the nodes a test names, merged, and waits on them.

A stream follows a real cluster: nodes are attached at open, at any time after
(`add_node`, `mark`, a wait's `node=`), and removed; each is read from the
best source it offers (its event stream, its log, `/enters` polling). See
docs/design.md for the modules behind it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import aiohttp

from .diagnostics import (
    NodeState,
    WaitReport,
    asked,
    event_logger,
    format_event,
    log_events,
    timeout_error,
    unsupported,
    wanted,
)
from .errors import (
    EventsLost,
    InjectionTimeout,
    StreamConnectError,
    UnsupportedWait,
)
from .event_schema import ENTER, PHASES, InjectionEvent
from .following import Following, StreamNode
from .protocol import target_url
from .sync_bridge import Home, LoopThread
from .waits import Expired, Mark, Wait, WaitEngine

#: A link silent this long is dropped and resumed (the heartbeat is asked every 5 s).
READ_TIMEOUT = 20.0

__all__ = [
    "EventsLost",
    "InjectionEventStream",
    "InjectionTimeout",
    "Mark",
    "StreamConnectError",
    "StreamNode",
    "event_logger",
    "format_event",
    "injection_event_stream",
]

_log = logging.getLogger("pytest_injection_events.client")


class InjectionEventStream:
    """Events of the nodes it follows, merged, from the moment it is open.

    `async with` reads on the caller's loop; plain `with` reads on a thread of
    its own, for synchronous tests (`wait_for_injection_sync`, ...).
    """

    def __init__(
        self,
        targets: Any = (),
        *,
        injections: Iterable[str] | None = None,
        phases: Iterable[str] | None = None,
        token: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = READ_TIMEOUT,
        max_events: int = 100_000,
    ) -> None:
        if isinstance(targets, str) or not isinstance(targets, Iterable):
            targets = [targets]
        self._targets = list(targets)
        for target in self._targets:
            target_url(target)  # a bad address fails here, not in the loop
        self.injections = sorted(set(injections or ()))
        self.phases = sorted(set(phases or ()))
        unknown = set(self.phases) - PHASES
        if unknown:
            raise ValueError(
                f"unknown phase(s) {sorted(unknown)}; expected some of {sorted(PHASES)}"
            )
        self.token = token
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.restarts: list[tuple[str, float]] = []
        self.opened_at = 0.0
        self._engine = WaitEngine(max_events)
        self._engine.on_events.append(log_events)
        self._following = Following(self)
        self._listeners: list[
            tuple[asyncio.AbstractEventLoop, asyncio.Queue[InjectionEvent | None]]
        ] = []
        self._home = Home()
        self._thread: LoopThread | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- what it holds ---------------------------------------------------------------

    @property
    def events(self) -> list[InjectionEvent]:
        """Every event received, in arrival order (the last `max_events`)."""
        return self._engine.events

    @property
    def gaps(self) -> list[InjectionEvent]:
        return self._engine.gaps

    @property
    def nodes(self) -> list[StreamNode]:
        return self._following.nodes()

    @property
    def urls(self) -> list[str]:
        return list(self._following.sources)

    @property
    def reconnects(self) -> int:
        return sum(source.reconnects for source in self._following.sources.values())

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the stream is not open")
        return self._session

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> InjectionEventStream:
        await self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close()

    def __enter__(self) -> InjectionEventStream:
        self._thread = LoopThread()
        try:
            self._thread.run(self._open())
        except BaseException:
            self._thread.stop()
            self._thread = None
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            try:
                thread.run(self._close())
            finally:
                thread.stop()

    async def _open(self) -> None:
        if self._home.loop is not None:
            raise RuntimeError("this stream is already open")
        self._home.loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession()
        self.opened_at = time.time()
        try:
            # Let every attach finish, failed or not: one still connecting after the first
            # failure would outlive the closed session and leak its task.
            results = await asyncio.gather(
                *(self._following.attach(target, None, history=False) for target in self._targets),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            self._following.keep_order(self._targets)
        except BaseException:
            await self._close()
            raise

    async def _close(self) -> None:
        await self._following.close()
        for loop, queue in self._listeners:  # end every `async for` over this stream
            if loop is self._home.loop:
                queue.put_nowait(None)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(queue.put_nowait, None)
        self._engine.cancel_all()
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._home.loop = None

    # -- nodes -------------------------------------------------------------------------

    async def add_node(self, target: Any, *, log: Any = None) -> StreamNode:
        """Follow one more node from now on, with what it did since the stream opened.

        `log`: the node's log file (a path, or a log object with `.file`), read when
        the node has no event stream. A node already followed is kept (a log is added)."""
        source = await self._home.run(self._following.attach(target, log, history=True))
        return StreamNode(source.url, source.node_id, source.describe())

    def add_node_sync(self, target: Any, *, log: Any = None) -> StreamNode:
        source = self._home.block(self._following.attach(target, log, history=True), "add_node")
        return StreamNode(source.url, source.node_id, source.describe())

    async def remove_node(self, node: Any) -> None:
        """Stop following a node; what it sent stays in `events`."""
        await self._home.run(self._following.remove(node))

    def remove_node_sync(self, node: Any) -> None:
        self._home.block(self._following.remove(node), "remove_node")

    def node_id(self, node: Any) -> str | None:
        """The id the events of a followed node carry (`event.node`); None if not followed."""
        return self._following.node_id(node)

    # -- marks -------------------------------------------------------------------------

    async def mark(self, node: Any) -> Mark:
        """A position on `node` now: `wait_for_injection(..., after=mark)` sees only what
        the node does after it (ScyllaDB's `log.mark()`, without a log)."""
        return await self._home.run(self._mark(node))

    def mark_sync(self, node: Any) -> Mark:
        return self._home.block(self._mark(node), "mark")

    async def _mark(self, node: Any) -> Mark:
        key = await self._following.key(node)
        life, seq = await self._following.sources[key].position()
        return Mark(key, life, seq)

    # -- delivery (StreamHost, on the home loop) ------------------------------------------

    def deliver(self, event: InjectionEvent, key: str, life: int) -> None:
        self.deliver_many((event,), key, life)

    def deliver_many(self, events: Sequence[InjectionEvent], key: str, life: int) -> None:
        self._engine.deliver_many(events, key, life)
        for loop, queue in self._listeners:
            if loop is self._home.loop:
                for event in events:
                    queue.put_nowait(event)
            else:
                for event in events:
                    loop.call_soon_threadsafe(queue.put_nowait, event)

    def restarted(self, node_id: str, why: str) -> None:
        self.restarts.append((node_id, time.time()))
        _log.warning("node %s restarted (%s): reading its new life from the start", node_id, why)

    # -- waits -------------------------------------------------------------------------

    async def wait_for_injection(
        self,
        name: str,
        timeout: float = 30.0,
        *,
        phase: str = ENTER,
        count: int = 1,
        shard: int | None = None,
        node: Any = None,
        after: Mark | None = None,
        predicate: Callable[[InjectionEvent], bool] | None = None,
        consume: bool = True,
    ) -> InjectionEvent:
        """The `count`-th not yet consumed event of `name` in `phase`; it and the ones
        before it are consumed. Returns at once if they already arrived.

        `node`: only that node's events (attached first if the stream does not follow
        it yet); `after`: only what that node did after the mark. `consume=False`
        counts every matching event and takes none (what the marker's check does)."""
        __tracebackhide__ = True
        call = self._wait(name, timeout, phase, count, shard, node, after, predicate, consume)
        return await self._home.run(call)

    def wait_for_injection_sync(
        self,
        name: str,
        timeout: float = 30.0,
        *,
        phase: str = ENTER,
        count: int = 1,
        shard: int | None = None,
        node: Any = None,
        after: Mark | None = None,
        predicate: Callable[[InjectionEvent], bool] | None = None,
        consume: bool = True,
    ) -> InjectionEvent:
        """`wait_for_injection` for synchronous code."""
        __tracebackhide__ = True
        call = self._wait(name, timeout, phase, count, shard, node, after, predicate, consume)
        return self._home.block(call, "wait_for_injection")

    async def _wait(
        self,
        name: str,
        timeout: float,
        phase: str,
        count: int,
        shard: int | None,
        node: Any,
        after: Mark | None,
        predicate: Callable[[InjectionEvent], bool] | None,
        consume: bool,
    ) -> InjectionEvent:
        __tracebackhide__ = True
        if not isinstance(name, str) or not name:
            raise ValueError(f"injection name must be a non-empty string, got {name!r}")
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; expected one of {sorted(PHASES)}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"count must be a positive integer, got {count!r}")
        if not isinstance(timeout, (int, float)) or not timeout >= 0:
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        if after is not None and not isinstance(after, Mark):
            raise TypeError(f"after= takes a mark from stream.mark(node), got {after!r}")
        key = await self._following.key(node) if node is not None else None
        if after is not None:
            if key is not None and key != after.node:
                raise ValueError(f"after= is a mark on {after.node}, but node= names {key}")
            key = after.node
        sources = [s for k, s in self._following.sources.items() if key in (None, k)]
        if not sources:
            raise ValueError(
                "this stream follows no node: name one with node=, or add_node() first"
                if key is None
                else f"{key} is no longer followed by this stream"
            )
        able = [s for s in sources if s.gives(phase) and (shard is None or s.shards)]
        if not able:
            raise UnsupportedWait(unsupported(sources, phase, shard))

        def matches(event: InjectionEvent, origin: str, life: int) -> bool:
            return (
                event.injection == name
                and event.phase == phase
                and (key is None or origin == key)
                and (shard is None or event.shard == shard)
                and (after is None or not after.before(life, event.seq))
                and (predicate is None or bool(predicate(event)))
            )

        words = wanted(name, phase, count, shard, predicate, after)
        wait = Wait(matches, count, key, consume, words)
        for source in able:
            source.watch(name)
        try:
            ready = self._engine.take_existing(wait, name)
            return ready if ready is not None else await self._engine.until_next(wait, timeout)
        except Expired:
            given = (("shard", shard), ("node", key), ("predicate", predicate), ("mark", after))
            filters = [kind for kind, value in given if value is not None]
            report = WaitReport(
                name=name,
                phase=phase,
                count=count,
                timeout=timeout,
                wanted=words,
                where=", ".join(s.node_id if key else s.url for s in sources),
                events=list(self.events),
                matched=self._engine.count_matching(wait),
                got=wait.got,
                filters=filters,
                nodes=[NodeState(s.url, s.node_id, s.describe(), s.down_since) for s in sources],
                gaps=self.gaps,
                restarts=self.restarts,
                asked=asked(self.injections, self.phases),
            )
            raise await timeout_error(report, self._session, self.token) from None
        finally:
            for source in able:
                source.unwatch(name)

    async def wait_for_event(
        self, predicate: Callable[[InjectionEvent], bool], timeout: float = 30.0, *, start: int = 0
    ) -> int:
        """The index in `events` of the first event from `start` on that `predicate`
        accepts, waiting for it if need be; consumes nothing (for log-style scans).
        Raises TimeoutError."""
        return await self._home.run(self._watch(predicate, timeout, start))

    def wait_for_event_sync(
        self, predicate: Callable[[InjectionEvent], bool], timeout: float = 30.0, *, start: int = 0
    ) -> int:
        return self._home.block(self._watch(predicate, timeout, start), "wait_for_event")

    async def _watch(
        self, predicate: Callable[[InjectionEvent], bool], timeout: float, start: int
    ) -> int:
        events = self.events
        for index in range(max(0, start), len(events)):
            if predicate(events[index]):
                return index
        wait = Wait(lambda event, _k, _l: predicate(event), 1, None, False, "an event")
        try:
            await self._engine.until_next(wait, timeout)
        except Expired:
            raise asyncio.TimeoutError() from None
        return wait.taken[0] - (self._engine.received - len(self.events))

    # -- iteration -----------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[InjectionEvent]:
        """Every event from the first received on, then each as it arrives."""
        return self._iterate(from_start=True)

    def live(self) -> AsyncIterator[InjectionEvent]:
        """Only the events still to come."""
        return self._iterate(from_start=False)

    async def _iterate(self, from_start: bool) -> AsyncIterator[InjectionEvent]:
        listener = (asyncio.get_running_loop(), asyncio.Queue[InjectionEvent | None]())
        backlog = list(self.events) if from_start else []
        self._listeners.append(listener)
        try:
            for old in backlog:
                yield old
            while (new := await listener[1].get()) is not None:
                yield new
        finally:
            self._listeners.remove(listener)

    def __repr__(self) -> str:
        return f"<InjectionEventStream {self._following.describe()}: {len(self.events)} events>"


def injection_event_stream(
    targets: Any = (),
    *,
    injections: Iterable[str] | None = None,
    phases: Iterable[str] | None = None,
    token: str | None = None,
) -> InjectionEventStream:
    """A stream of the injection events of the nodes given, and of those attached later.

    `async with injection_event_stream(url) as stream:` is connected when the
    block starts: every event after that is captured.
    """
    return InjectionEventStream(targets, injections=injections, phases=phases, token=token)
