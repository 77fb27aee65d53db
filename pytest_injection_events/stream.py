"""The client of the event stream: `injection_event_stream` and its waits (SPEC §7).

A stream lives on one event loop, its *home*: the caller's loop under
`async with`, or a loop on a thread of its own under plain `with`. Waits from
any other thread or loop are handed to the home loop, so a sync test and an
async test see the same behaviour.
"""

from __future__ import annotations

import asyncio
import bisect
import codecs
import concurrent.futures
import difflib
import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

import aiohttp

from .client import InjectionApi
from .errors import InjectionEventsError
from .events import ENTER, GAP, GAP_DROPPED, GAP_SLOW_CLIENT, PHASES, InjectionEvent
from .protocol import (
    BOOT_HEADER,
    LAST_SEQ_HEADER,
    NODE_HEADER,
    PREFIX,
    auth_headers,
    base_url,
    node_id_of,
)

T = TypeVar("T")
#: Reconnect at once, then back off to this many seconds between attempts.
RECONNECT_DELAYS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
#: We ask for a heartbeat this often, and take a stream silent for READ_TIMEOUT as dead
#: (a vanished host never closes the connection); READ_TIMEOUT also covers a node that
#: keeps the default 15 s heartbeat.
HEARTBEAT = 5.0
READ_TIMEOUT = 20.0
#: Polling period of the `/enters` fallback: first, factor, cap (faster than ScyllaDB's).
POLL_FIRST, POLL_FACTOR, POLL_CAP = 0.01, 1.5, 0.25

event_logger = logging.getLogger("pytest_injection_events.events")
_log = logging.getLogger("pytest_injection_events.client")


class InjectionTimeout(InjectionEventsError, TimeoutError):
    """No matching event in time; the message says what, where, what did arrive and hints."""

    def __init__(self, message: str, *, injection: str, timeout: float) -> None:
        super().__init__(message)
        self.injection = injection
        self.timeout = timeout


class EventsLost(InjectionEventsError):
    """Events that a wait may have needed were dropped by the node (a `gap`)."""

    def __init__(self, gap: InjectionEvent, waiting_for: str) -> None:
        why = (
            "the node no longer kept them when the stream resumed"
            if gap.reason in (GAP_DROPPED, None)
            else f"reason: {gap.reason}"
        )
        super().__init__(
            f"events lost on node {gap.node}: seq {gap.missed_from} to {gap.missed_to} "
            f"({why}), while waiting for {waiting_for}"
        )
        self.gap = gap


class StreamConnectError(InjectionEventsError, ConnectionError):
    """The stream could not be opened on a node (unreachable, refused, bad token, ...)."""


def _describe(event: InjectionEvent) -> str:
    if event.phase == GAP:
        return f"gap: seq {event.missed_from} to {event.missed_to} lost on {event.node}"
    seq = "" if event.seq is None else f"seq {event.seq} "  # None: seen by polling /enters
    shard = "" if event.shard is None else f" shard {event.shard}"
    return f"{seq}{event.injection} {event.phase}{shard} on {event.node}"


def _wanted(name: str, phase: str, count: int, shard: int | None, predicate: object) -> str:
    """A wait in words: `injection 'x' (phase 'enter', count 2, shard 1, with a predicate)`."""
    details = [f"phase {phase!r}"]
    if count > 1:
        details.append(f"count {count}")
    if shard is not None:
        details.append(f"shard {shard}")
    if predicate is not None:
        details.append("with a predicate")
    return f"injection {name!r} ({', '.join(details)})"


def format_event(event: InjectionEvent) -> str:
    """One line a person reads: time, node, shard, injection, phase (and seq)."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.timestamp))
    micros = int(event.timestamp % 1 * 1_000_000)
    shard = "-" if event.shard is None else event.shard
    if event.phase == GAP:
        return (
            f"{stamp}.{micros:06d} node {event.node} gap: seq {event.missed_from} to "
            f"{event.missed_to} lost ({event.reason})"
        )
    return (
        f"{stamp}.{micros:06d} node {event.node} shard {shard} {event.injection} "
        f"{event.phase} (seq {event.seq})"
    )


def _log_event(event: InjectionEvent) -> None:
    if event_logger.isEnabledFor(logging.INFO):
        event_logger.info("%s", format_event(event))


class _Wait:
    """One pending `wait_for_injection`: what it matches and what it has taken so far."""

    __slots__ = ("consume", "count", "future", "got", "matches", "node", "taken", "wanted")

    def __init__(
        self,
        matches: Callable[[InjectionEvent], bool],
        count: int,
        node: str | None,
        consume: bool,
        wanted: str = "a matching event",
    ) -> None:
        self.matches = matches
        self.count = count
        self.node = node
        self.consume = consume
        self.wanted = wanted
        self.taken: list[int] = []
        self.got = 0  # how many it had taken when it expired (they are given back)
        self.future: asyncio.Future[InjectionEvent] = asyncio.get_running_loop().create_future()


class _NodeReader:
    """Reads one node's stream and reconnects after a drop with Last-Event-ID."""

    def __init__(self, stream: InjectionEventStream, url: str) -> None:
        self.stream = stream
        self.url = url
        self.node_id = node_id_of(url)
        self.boot: str | None = None
        self.last_id: str | None = None
        self.polling = False  # the node has no /events: waits poll /enters instead
        self.reconnects = 0
        self.down_since: float | None = None
        self._response: aiohttp.ClientResponse | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Connect once; raise if the node cannot serve a stream (404 means: poll)."""
        try:
            self._response = await self._connect()
        except _NoStream:
            self.polling = True
            _log.warning(
                "node %s has no event stream (404 on %s/events); falling back to polling "
                "/enters, which only sees phase 'enter'",
                self.url,
                PREFIX,
            )
            return
        self._task = asyncio.create_task(self._run(), name=f"injection-events {self.url}")

    async def _connect(self) -> aiohttp.ClientResponse:
        stream = self.stream
        params: list[tuple[str, str]] = [("injection", n) for n in stream.injections]
        params += [("phase", p) for p in stream.phases]
        params.append(("heartbeat", f"{min(HEARTBEAT, stream.read_timeout / 4):g}"))
        headers = {"Accept": "text/event-stream", **auth_headers(stream.token)}
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
            if self.boot is not None:
                params.append(("boot", self.boot))
        try:
            # Bounded up to the headers: a stopped or wedged node accepts and never answers.
            response = await asyncio.wait_for(
                stream.session.get(
                    f"{self.url}{PREFIX}/events",
                    params=params,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(
                        total=None, connect=stream.connect_timeout, sock_read=stream.read_timeout
                    ),
                ),
                stream.connect_timeout,
            )
        except asyncio.TimeoutError as exc:
            detail = f" ({exc})" if str(exc) else ""
            raise StreamConnectError(
                f"cannot open the event stream of {self.url}: no answer within "
                f"{stream.connect_timeout:g}s{detail}"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise StreamConnectError(f"cannot open the event stream of {self.url}: {exc}") from exc
        if response.status == 200 and response.content_type == "text/event-stream":
            self._on_connected(response)
            return response
        body = await response.text()
        response.release()
        if response.status == 404:
            raise _NoStream()
        try:
            reason = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            reason = body[:300] or response.reason
        raise StreamConnectError(
            f"cannot open the event stream of {self.url}: {response.status} {reason}"
        )

    def _on_connected(self, response: aiohttp.ClientResponse) -> None:
        self.node_id = response.headers.get(NODE_HEADER) or self.node_id
        if self.last_id is None:
            # Resume after what the node had when we subscribed, even if no event came yet.
            self.last_id = response.headers.get(LAST_SEQ_HEADER)
        boot = response.headers.get(BOOT_HEADER)
        if self.boot is not None and boot is not None and boot != self.boot:
            self.stream._restarted(self, boot)
        self.boot = boot
        self.down_since = None

    async def _run(self) -> None:
        while True:
            assert self._response is not None
            try:
                await self._read(self._response)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                _log.debug("stream of %s dropped: %r", self.url, exc)
            finally:
                self._response.release()
                self._response = None
            self._response = await self._reconnect()

    async def _reconnect(self) -> aiohttp.ClientResponse:
        self.down_since = self.down_since or time.time()
        attempt = 0
        while True:
            await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
            attempt += 1
            try:
                response = await self._connect()
            except (StreamConnectError, _NoStream) as exc:
                if attempt == 3:
                    _log.warning("event stream of %s lost; still reconnecting: %s", self.url, exc)
                continue
            self.reconnects += 1
            _log.info("event stream of %s resumed after seq %s", self.url, self.last_id)
            return response

    async def _read(self, response: aiohttp.ClientResponse) -> None:
        """Parse `text/event-stream` a chunk at a time (CRLF, CR and LF line ends)."""
        pending = ""
        content = response.content
        decode = codecs.getincrementaldecoder("utf-8")("replace").decode
        while True:
            chunk = await content.readany()
            if not chunk:
                return
            text = pending + decode(chunk)
            held = ""
            if "\r" in text:
                if text.endswith("\r"):  # its LF may come in the next read: one line end
                    text, held = text[:-1], "\r"
                text = text.replace("\r\n", "\n").replace("\r", "\n")
            blocks = text.split("\n\n")
            pending = blocks.pop() + held
            for block in blocks:
                if block:
                    self._dispatch(block)

    def _dispatch(self, block: str) -> None:
        data: list[str] = []
        event_id: str | None = None
        for line in block.split("\n"):
            if line.startswith("data:"):
                data.append(line[6:] if line.startswith("data: ") else line[5:])
            elif line.startswith("id:"):
                event_id = line[3:].strip()
            # `retry:`, `event:` and `:` comments need nothing from us.
        if event_id is not None:
            self.last_id = event_id
        if data:
            try:
                event = InjectionEvent.from_dict(json.loads("\n".join(data)), node=self.node_id)
            except ValueError as exc:
                _log.warning("ignoring a malformed event from %s: %s", self.url, exc)
                return
            if event.phase == GAP and event.reason == GAP_SLOW_CLIENT:
                _log.warning(
                    "the node %s cut this stream off as too slow at seq %s; resuming",
                    self.url,
                    event.missed_from,
                )
                return
            self.stream._deliver(event)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._response is not None:
            self._response.release()
            self._response = None


class _Expired(Exception):
    """A wait's timer ran out (turned into InjectionTimeout or TimeoutError)."""


class _NoStream(Exception):
    """The node answered 404 on /events."""


class InjectionEventStream:
    """Events of one or several nodes, merged, from the moment it is open.

    `async with` reads on the caller's loop; plain `with` reads on a thread of
    its own, for synchronous tests (`wait_for_injection_sync`).
    """

    def __init__(
        self,
        targets: str | Sequence[str],
        *,
        injections: Iterable[str] | None = None,
        phases: Iterable[str] | None = None,
        token: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        if isinstance(targets, str):
            targets = [targets]
        urls = [base_url(t) for t in targets]
        if not urls:
            raise ValueError("injection_event_stream needs at least one node address")
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
        self.events: list[InjectionEvent] = []
        self.gaps: list[InjectionEvent] = []
        self.restarts: list[tuple[str, float]] = []
        self._readers = [_NodeReader(self, url) for url in dict.fromkeys(urls)]
        self._unread: dict[str, deque[int]] = {}  # per injection: events no wait has taken
        self._waits: list[_Wait] = []
        self._listeners: list[
            tuple[asyncio.AbstractEventLoop, asyncio.Queue[InjectionEvent | None]]
        ] = []
        self._poll_taken: Counter[tuple[str, str]] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: _LoopThread | None = None
        self._session: aiohttp.ClientSession | None = None
        self.opened_at = 0.0

    # -- lifecycle ---------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        return [reader.url for reader in self._readers]

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "the stream is not open"
        return self._session

    @property
    def reconnects(self) -> int:
        return sum(reader.reconnects for reader in self._readers)

    async def __aenter__(self) -> InjectionEventStream:
        await self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close()

    def __enter__(self) -> InjectionEventStream:
        self._thread = _LoopThread()
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
        if self._loop is not None:
            raise RuntimeError("this stream is already open")
        self._loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession()
        self.opened_at = time.time()
        try:
            # Let every open finish, failed or not: a sibling still connecting after the
            # first failure would outlive the closed session and leak its task.
            results = await asyncio.gather(
                *(reader.open() for reader in self._readers), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        except BaseException:
            await self._close()
            raise

    async def _close(self) -> None:
        await asyncio.gather(*(reader.close() for reader in self._readers))
        for loop, queue in self._listeners:  # end every `async for` over this stream
            if loop is self._loop:
                queue.put_nowait(None)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(queue.put_nowait, None)
        for wait in self._waits:
            if not wait.future.done():
                wait.future.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._loop = None

    # -- delivery (on the home loop) --------------------------------------------

    def _deliver(self, event: InjectionEvent) -> None:
        index = len(self.events)
        self.events.append(event)
        _log_event(event)
        for loop, queue in self._listeners:
            if loop is self._loop:
                queue.put_nowait(event)
            else:
                loop.call_soon_threadsafe(queue.put_nowait, event)
        if event.phase == GAP:
            self._lost(event)
            return
        taken = False
        for wait in list(self._waits):
            # A cancelled wait stays listed until its task runs again: it takes nothing.
            if wait.future.done() or (taken and wait.consume) or not wait.matches(event):
                continue
            wait.taken.append(index)
            taken = taken or wait.consume
            if len(wait.taken) == wait.count:
                self._waits.remove(wait)
                wait.future.set_result(event)
        if not taken:
            self._unread.setdefault(event.injection or "", deque()).append(index)

    def _lost(self, gap: InjectionEvent) -> None:
        self.gaps.append(gap)
        _log.warning(
            "events lost on node %s: seq %s to %s (%s)",
            gap.node,
            gap.missed_from,
            gap.missed_to,
            gap.reason,
        )
        if gap.reason != GAP_DROPPED and gap.reason is not None:
            return
        for wait in list(self._waits):
            if not wait.future.done() and wait.node in (None, gap.node):
                self._waits.remove(wait)
                self._give_back(wait)
                wait.future.set_exception(EventsLost(gap, wait.wanted))

    def _restarted(self, reader: _NodeReader, boot: str) -> None:
        self.restarts.append((reader.node_id, time.time()))
        _log.warning(
            "node %s restarted (new boot %s): its seq starts again; reading its new life "
            "from the start",
            reader.node_id,
            boot,
        )

    def _give_back(self, wait: _Wait) -> None:
        """A wait that gave up returns what it took, so a later wait can take it."""
        if not wait.consume:
            return
        for index in wait.taken:
            unread = self._unread.setdefault(self.events[index].injection or "", deque())
            position = bisect.bisect(unread, index)
            unread.insert(position, index)
        wait.taken.clear()

    # -- waits -------------------------------------------------------------------

    async def wait_for_injection(
        self,
        name: str,
        timeout: float = 30.0,
        *,
        phase: str = ENTER,
        count: int = 1,
        shard: int | None = None,
        node: str | None = None,
        predicate: Callable[[InjectionEvent], bool] | None = None,
        consume: bool = True,
    ) -> InjectionEvent:
        """The `count`-th not yet consumed event of `name` in `phase`; it and the
        ones before it are consumed. Returns at once if they already arrived.

        `consume=False` counts every matching event since the stream opened,
        consumed or not, and takes none (what the marker's check does)."""
        call = self._wait(name, timeout, phase, count, shard, node, predicate, consume)
        if self._on_home_loop():
            return await call
        return await asyncio.wrap_future(self._hand_home(call))

    def wait_for_injection_sync(
        self,
        name: str,
        timeout: float = 30.0,
        *,
        phase: str = ENTER,
        count: int = 1,
        shard: int | None = None,
        node: str | None = None,
        predicate: Callable[[InjectionEvent], bool] | None = None,
        consume: bool = True,
    ) -> InjectionEvent:
        """`wait_for_injection` for synchronous code (a stream opened with `with`,
        or one whose loop runs on another thread)."""
        if self._on_home_loop():
            raise RuntimeError(
                "wait_for_injection_sync would block the event loop that reads this stream; "
                "use `await stream.wait_for_injection(...)` here, or open the stream with "
                "plain `with` in synchronous code"
            )
        call = self._wait(name, timeout, phase, count, shard, node, predicate, consume)
        future = self._hand_home(call)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def _on_home_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _hand_home(self, call: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if self._loop is None or not self._loop.is_running():
            call.close()
            raise RuntimeError(
                "the stream is not open, or the event loop that opened it is not running "
                "(open the stream on the loop that waits, or with plain `with`)"
            )
        return asyncio.run_coroutine_threadsafe(call, self._loop)

    def _node_key(self, node: Any) -> str | None:
        if node is None:
            return None
        node = getattr(node, "node_id", None) or getattr(node, "url", None) or node
        node = str(node)
        for reader in self._readers:
            if node in (reader.url, reader.node_id) or base_url_or_none(node) == reader.url:
                return reader.node_id
        return node

    async def _wait(
        self,
        name: str,
        timeout: float,
        phase: str,
        count: int,
        shard: int | None,
        node: Any,
        predicate: Callable[[InjectionEvent], bool] | None,
        consume: bool = True,
    ) -> InjectionEvent:
        if not isinstance(name, str) or not name:
            raise ValueError(f"injection name must be a non-empty string, got {name!r}")
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; expected one of {sorted(PHASES)}")
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive integer, got {count!r}")
        if timeout is None or timeout < 0:
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        if self._loop is None:
            raise RuntimeError("the stream is not open")
        node_id = self._node_key(node)

        def matches(event: InjectionEvent) -> bool:
            return (
                event.injection == name
                and event.phase == phase
                and (shard is None or event.shard == shard)
                and (node_id is None or event.node == node_id)
                and (predicate is None or bool(predicate(event)))
            )

        candidates = [r for r in self._readers if node_id in (None, r.node_id)]
        if not candidates:  # such a wait could only time out
            reads = ", ".join(f"{r.node_id} ({r.url})" for r in self._readers)
            raise ValueError(f"node {node_id!r} is not one this stream reads; it reads {reads}")
        polled = [r for r in candidates if r.polling]
        if polled and len(polled) == len(candidates):
            if phase != ENTER or predicate is not None or shard is not None:
                raise ValueError(
                    f"{', '.join(r.url for r in polled)} has no event stream; polling /enters "
                    "can only wait for phase 'enter' without shard or predicate filters"
                )
            return await self._poll(polled, name, count, timeout)

        wanted = _wanted(name, phase, count, shard, predicate)
        wait = _Wait(matches, count, node_id, consume, wanted)
        if not consume:
            wait.taken = [i for i, event in enumerate(self.events) if matches(event)][:count]
            if len(wait.taken) == count:
                return self.events[wait.taken[-1]]
        elif unread := self._unread.get(name):
            for index in list(unread):
                if matches(self.events[index]):
                    wait.taken.append(index)
                    if len(wait.taken) == count:
                        break
            for index in wait.taken:
                unread.remove(index)
            if len(wait.taken) == count:
                return self.events[wait.taken[-1]]
        try:
            return await self._until_done(wait, timeout)
        except _Expired:
            given = (("shard", shard), ("node", node_id), ("predicate", predicate))
            filters = [kind for kind, value in given if value is not None]
            raise await self._timeout_error(
                name, phase, count, timeout, node_id, wait, got=wait.got, filters=filters
            ) from None

    async def _until_done(self, wait: _Wait, timeout: float) -> InjectionEvent:
        """Await the wait's own future, with a timer instead of wait_for(shield(...)): the
        hit reaches the waiting task in one turn of the loop, not three. A wait that
        expires or is cancelled gives back what it took."""
        self._waits.append(wait)
        timer = asyncio.get_running_loop().call_later(timeout, self._expire, wait)
        try:
            return await wait.future
        except asyncio.CancelledError:
            if wait in self._waits:
                self._waits.remove(wait)
                self._give_back(wait)
            raise
        finally:
            timer.cancel()

    def _expire(self, wait: _Wait) -> None:
        if wait in self._waits and not wait.future.done():
            self._waits.remove(wait)
            wait.got = len(wait.taken)
            self._give_back(wait)
            wait.future.set_exception(_Expired())

    async def wait_for_event(
        self, predicate: Callable[[InjectionEvent], bool], timeout: float = 30.0, *, start: int = 0
    ) -> int:
        """The index in `events` of the first event from `start` on that `predicate`
        accepts, waiting for it if need be; consumes nothing (for log-style scans).
        Raises TimeoutError."""
        call = self._watch(predicate, timeout, start)
        if self._on_home_loop():
            return await call
        return await asyncio.wrap_future(self._hand_home(call))

    async def _watch(
        self, predicate: Callable[[InjectionEvent], bool], timeout: float, start: int
    ) -> int:
        for index in range(max(0, start), len(self.events)):
            if predicate(self.events[index]):
                return index
        wait = _Wait(predicate, 1, None, consume=False)
        try:
            await self._until_done(wait, timeout)
        except _Expired:
            raise asyncio.TimeoutError() from None
        return wait.taken[0]

    async def _poll(
        self, readers: list[_NodeReader], name: str, count: int, timeout: float
    ) -> InjectionEvent:
        """The fallback for nodes without /events: poll `/enters` until it has grown."""
        deadline = time.monotonic() + timeout
        period = POLL_FIRST
        apis = [InjectionApi(r.url, self.token, session=self.session) for r in readers]
        while True:
            for reader, api in zip(readers, apis, strict=True):
                key = (reader.node_id, name)
                try:
                    entered = await api.get_enter_count(name)
                except Exception as exc:  # keep polling through blips
                    _log.debug("polling %s failed: %s", reader.url, exc)
                    continue
                if entered >= self._poll_taken[key] + count:
                    self._poll_taken[key] += count
                    event = InjectionEvent(
                        injection=name,
                        type=None,
                        phase=ENTER,
                        shard=None,
                        node=reader.node_id,
                        seq=None,
                        timestamp=round(time.time(), 6),
                        enter_count=entered,
                    )
                    self.events.append(event)
                    _log_event(event)
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise await self._timeout_error(name, ENTER, count, timeout, None, None)
            await asyncio.sleep(min(period, remaining))
            period = min(period * POLL_FACTOR, POLL_CAP)

    async def _timeout_error(
        self,
        name: str,
        phase: str,
        count: int,
        timeout: float,
        node_id: str | None,
        wait: _Wait | None,
        *,
        got: int = 0,
        filters: Sequence[str] = (),
    ) -> InjectionTimeout:
        where = node_id or ", ".join(r.url for r in self._readers)
        what = wait.wanted if wait is not None else _wanted(name, phase, count, None, None)
        lines = [f"timed out after {timeout:g}s waiting for {what} on {where}"]
        hits = [e for e in self.events if e.injection == name and e.phase == phase]
        if hits:
            lines.append(
                f"  {name!r} {phase} arrived {len(hits)} time(s): "
                + _why_not(hits, wait, got, count, filters)
            )
        arrived = Counter(f"{e.injection} {e.phase}" for e in self.events if e.phase != GAP)
        if arrived:
            summary = ", ".join(f"{key} x{n}" for key, n in arrived.most_common(10))
            last = "; ".join(_describe(e) for e in self.events[-3:])
            lines.append(f"  events that did arrive: {summary}")
            lines.append(f"  last: {last}")
        else:
            asked = [f"injections {', '.join(self.injections)}"] if self.injections else []
            asked += [f"phases {', '.join(self.phases)}"] if self.phases else []
            hint = (
                f"it asks the node only for {' and '.join(asked)}"
                if asked
                else "not even an 'enable': is the stream on the node the test drives?"
            )
            lines.append(f"  no events arrived at all since the stream opened ({hint})")
        for gap in self.gaps:
            lines.append(f"  events lost on {gap.node}: seq {gap.missed_from} to {gap.missed_to}")
        for reader in self._readers:
            if reader.down_since is not None:
                lines.append(
                    f"  the stream of {reader.url} has been down for "
                    f"{time.time() - reader.down_since:.1f}s; reconnecting"
                )
        for node, _ in self.restarts:
            lines.append(
                f"  node {node} restarted while the stream was open: what was enabled on it "
                "before is gone"
            )
        known: set[str] = {e.injection for e in self.events if e.injection}
        real = {e.injection for e in self.events if e.phase == ENTER}  # hit, so not a typo
        for reader in self._readers:
            enabled, points = await self._ask_node(reader)
            if enabled is not None:
                shown = ", ".join(enabled) if enabled else "none"
                lines.append(f"  enabled on {reader.node_id}: {shown}")
            known.update(points)
            real.update(points)
        if name not in real:  # a declared point is not a near miss of another one
            known.discard(name)
            suggestion = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
            if suggestion:
                lines.append(f"  did you mean {suggestion[0]!r}?")
        return InjectionTimeout("\n".join(lines), injection=name, timeout=timeout)

    async def _ask_node(self, reader: _NodeReader) -> tuple[list[str] | None, list[str]]:
        """What the node has enabled and declares, for the timeout message (best effort)."""
        api = InjectionApi(reader.url, self.token, session=self.session, timeout=2.0)
        enabled: list[str] | None = None
        points: list[str] = []
        try:
            enabled = await api.get_enabled_injections()
            # Asked apart: ScyllaDB has no /points, and its 404 must not hide what is enabled.
            points = [p["name"] for p in await api.points()]
        except Exception as exc:
            _log.debug("could not ask %s for hints: %s", reader.url, exc)
        return enabled, points

    # -- iteration ---------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[InjectionEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[InjectionEvent]:
        """Events from the next one on, as they arrive (not consuming them); ends when
        the stream closes."""
        listener = (asyncio.get_running_loop(), asyncio.Queue[InjectionEvent | None]())
        self._listeners.append(listener)
        try:
            while (event := await listener[1].get()) is not None:
                yield event
        finally:
            self._listeners.remove(listener)

    def __repr__(self) -> str:
        return f"<InjectionEventStream {', '.join(self.urls)}: {len(self.events)} events>"


def _why_not(
    hits: list[InjectionEvent],
    wait: _Wait | None,
    got: int,
    count: int,
    filters: Sequence[str],
) -> str:
    """Why the hits of the awaited name and phase did not make the wait succeed."""

    def matches(event: InjectionEvent) -> bool:
        try:
            return wait is None or wait.matches(event)
        except Exception:  # the test's predicate: it already failed the delivery
            return False

    matched = sum(1 for e in hits if matches(e))
    consumed, refused = matched - got, len(hits) - matched
    parts = [f"{got} matched this wait (it needs {count})"] if got else []
    if consumed == 1:
        parts.append("1 was consumed by another wait")
    elif consumed:
        parts.append(f"{consumed} were consumed by other waits")
    if refused:
        plural = "s" if len(filters) > 1 else ""
        parts.append(f"{refused} did not pass its {'/'.join(filters)} filter{plural}")
    return ", ".join(parts)


def base_url_or_none(text: str) -> str | None:
    try:
        return base_url(text)
    except ValueError:
        return None


class _LoopThread:
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


def injection_event_stream(
    targets: str | Sequence[str],
    *,
    injections: Iterable[str] | None = None,
    phases: Iterable[str] | None = None,
    token: str | None = None,
) -> InjectionEventStream:
    """A stream of the injection events of one node or several (merged).

    `async with injection_event_stream(url) as stream:` is connected when the
    block starts: every event after that is captured.
    """
    return InjectionEventStream(targets, injections=injections, phases=phases, token=token)
