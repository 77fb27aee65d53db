"""The wait engine: received events, marks, and waits that consume them.

Every source (event stream, log, `/enters` polling) hands its node's events
here in that node's order, each with the node's key and *life* (a restart
begins a new one), so one engine serves all three. See docs/design.md.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat

from .errors import EventsLost, InjectionEventsError
from .event_schema import GAP, GAP_DROPPED, InjectionEvent


@dataclass(frozen=True)
class Mark:
    """A position on one node, taken by `stream.mark(node)`: `after=mark` sees what follows.

    `life` counts the node's restarts seen by the stream; `seq` is the last event
    number of that life at the mark (the node's seq, or the client's own count of
    log lines or polled hits)."""

    node: str
    life: int
    seq: int

    def before(self, life: int, seq: int | None) -> bool:
        """Whether an event of this node at (life, seq) happened at or before the mark."""
        return life < self.life or (life == self.life and (seq or 0) <= self.seq)


class Expired(InjectionEventsError):
    """A wait's timer ran out (the stream turns it into InjectionTimeout)."""


Matcher = Callable[[InjectionEvent, str, int], bool]


class Wait:
    """One pending wait: what it matches and what it has taken so far."""

    __slots__ = ("consume", "count", "future", "got", "matches", "node", "taken", "wanted")

    def __init__(
        self, matches: Matcher, count: int, node: str | None, consume: bool, wanted: str
    ) -> None:
        self.matches = matches  # (event, node key, life) -> bool
        self.count = count
        self.node = node
        self.consume = consume
        self.wanted = wanted
        self.taken: list[int] = []  # receive numbers
        self.got = 0  # how many it had taken when it expired (they are given back)
        self.future: asyncio.Future[InjectionEvent] = asyncio.get_running_loop().create_future()


class WaitEngine:
    """Received events (the last `max_events`), and the waits pending on them.

    Events are numbered by arrival (receive numbers); `events[n - base]` is number n.
    `_unread` lists, per injection, the numbers no consuming wait has taken yet.
    """

    def __init__(self, max_events: int = 100_000) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {max_events}")
        self.max_events = max_events
        self.events: list[InjectionEvent] = []
        self.gaps: list[InjectionEvent] = []
        # The node key and life of each kept event: two lists, not a tuple per event,
        # so a delivery makes no object for the garbage collector but the event.
        self._keys: list[str] = []
        self._lives: list[int] = []
        self._base = 0
        self._unread: dict[str | None, deque[int]] = {}
        self.waits: list[Wait] = []
        #: Called with every batch delivered, before the waits see it (the event log).
        self.on_events: list[Callable[[Sequence[InjectionEvent]], object]] = []

    @property
    def received(self) -> int:
        return self._base + len(self.events)

    def origin(self, number: int) -> tuple[str, int]:
        return self._keys[number - self._base], self._lives[number - self._base]

    def event(self, number: int) -> InjectionEvent:
        return self.events[number - self._base]

    # -- delivery -----------------------------------------------------------------

    def deliver(self, event: InjectionEvent, key: str, life: int) -> None:
        self.deliver_many((event,), key, life)

    def deliver_many(self, batch: Sequence[InjectionEvent], key: str, life: int) -> None:
        """Keep a node's events, in order, and hand each to the waits that match: one pass
        over the waits per event (they are few), one call per read from the socket, and
        nothing made per event but its number."""
        if not batch:
            return
        events = self.events
        number = self._base + len(events)
        events.extend(batch)
        self._keys.extend(repeat(key, len(batch)))
        self._lives.extend(repeat(life, len(batch)))
        for callback in self.on_events:
            callback(batch)
        unread_of = self._unread
        for event in batch:
            if event.phase == GAP:
                self._lost(event, key)
                number += 1
                continue
            taken = finished = False
            for wait in self.waits:
                # A cancelled wait stays listed until its task runs again: it takes nothing.
                if wait.future.done():
                    finished = True
                    continue
                if taken and wait.consume:
                    continue
                try:
                    if not wait.matches(event, key, life):
                        continue
                except Exception as exc:  # the test's predicate: its wait fails, not the reader
                    self.give_back(wait)
                    wait.future.set_exception(exc)
                    finished = True
                    continue
                wait.taken.append(number)
                taken = taken or wait.consume
                if len(wait.taken) == wait.count:
                    wait.future.set_result(event)
                    finished = True
            if finished:
                self.waits = [w for w in self.waits if not w.future.done()]
            if not taken:
                unread = unread_of.get(event.injection)
                if unread is None:
                    unread = unread_of[event.injection] = deque()
                unread.append(number)
            number += 1
        if len(events) > self.max_events * 1.1:
            self._trim()

    def _trim(self) -> None:
        drop = len(self.events) - self.max_events
        del self.events[:drop], self._keys[:drop], self._lives[:drop]
        self._base += drop
        for unread in self._unread.values():
            while unread and unread[0] < self._base:
                unread.popleft()

    def _lost(self, gap: InjectionEvent, key: str) -> None:
        self.gaps.append(gap)
        if gap.reason not in (GAP_DROPPED, None):
            return
        for wait in list(self.waits):
            if not wait.future.done() and wait.node in (None, key):
                self.waits.remove(wait)
                self.give_back(wait)
                wait.future.set_exception(EventsLost(gap, wait.wanted))

    # -- waiting ------------------------------------------------------------------

    def take_existing(self, wait: Wait, name: str) -> InjectionEvent | None:
        """Take what already arrived (up to `count`); the event that completes the wait."""
        if wait.consume:
            unread = self._unread.get(name) or deque()
            numbers = [n for n in unread if wait.matches(self.event(n), *self.origin(n))]
            numbers = numbers[: wait.count]
            for number in numbers:
                unread.remove(number)
        else:
            numbers = [
                n
                for n in range(self._base, self.received)
                if wait.matches(self.event(n), *self.origin(n))
            ][: wait.count]
        wait.taken.extend(numbers)
        return self.event(numbers[-1]) if len(wait.taken) == wait.count else None

    async def until_next(self, wait: Wait, timeout: float) -> InjectionEvent:
        """Await the wait's own future under a timer, for events still to come (after
        `take_existing`): a hit reaches the waiting task in one turn of the loop. A wait
        that expires or is cancelled gives back what it took."""
        self.waits.append(wait)
        timer = asyncio.get_running_loop().call_later(timeout, self._expire, wait)
        try:
            return await wait.future
        except asyncio.CancelledError:
            if wait in self.waits:
                self.waits.remove(wait)
                self.give_back(wait)
            raise
        finally:
            timer.cancel()

    def count_matching(self, wait: Wait) -> int:
        """How many kept events the wait's filters accept (for its timeout message)."""
        matched = 0
        for number in range(self._base, self.received):
            try:
                matched += bool(wait.matches(self.event(number), *self.origin(number)))
            except Exception:  # the test's predicate: it already failed the delivery
                pass
        return matched

    def _expire(self, wait: Wait) -> None:
        if wait in self.waits and not wait.future.done():
            self.waits.remove(wait)
            wait.got = len(wait.taken)
            self.give_back(wait)
            wait.future.set_exception(Expired())

    def give_back(self, wait: Wait) -> None:
        """A wait that gave up returns what it took, so a later wait can take it."""
        if wait.consume:
            for number in wait.taken:
                if number >= self._base:
                    unread = self._unread.setdefault(self.event(number).injection, deque())
                    unread.insert(bisect.bisect(unread, number), number)
        wait.taken.clear()

    def cancel_all(self) -> None:
        for wait in self.waits:
            if not wait.future.done():
                wait.future.cancel()
        self.waits.clear()
