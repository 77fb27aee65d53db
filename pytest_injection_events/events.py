"""A node's numbered, replayable event log (docs/http-api.md); what an event is for
a client is `event_schema`'s.

Nothing here knows HTTP. The log numbers events, keeps the newest ones within a
count and a byte budget, and every reader follows that one shared log with its
own cursor: a hit costs the same with 1 or 100 readers, and a replay is made of
the kept records themselves, never a copy per reader. `server` turns readers
into SSE, and gives a reader a `push` hook that writes an event at the hit.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

# The schema's names stay importable from here, where they lived before event_schema.
from .event_schema import (  # noqa: F401
    ALL_PHASES,
    CONTROL_PHASES,
    DEFAULT_PHASES,
    DISABLE,
    ENABLE,
    ENTER,
    GAP,
    GAP_DROPPED,
    GAP_SLOW_CLIENT,
    MESSAGE,
    PHASES,
    RESUME,
    TIMEOUT,
    WAIT,
    InjectionEvent,
)

DEFAULT_CAPACITY = 10_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_PENDING = 10_000
#: Parameters larger than this, JSON-encoded, are not copied into events: the event says
#: `"parameters": null, "parameters_truncated": true` (the REST API has the full value).
MAX_EVENT_PARAMETERS = 4096
#: What a record costs beyond its name and parameters (the keys, numbers, the frame's
#: fixed text and the objects holding them), counted against the byte budget.
RECORD_OVERHEAD = 600

#: Up to this many waiting readers are served by the hit itself; more, by one callback.
WAKE_AT_ONCE = 4
BURST_GAP = 0.001

_log = logging.getLogger("pytest_injection_events.events")

#: ASCII only: raw U+2028, U+2029 or U+0085 in a name would end the `data:` line for
#: readers that split lines like str.splitlines() (httpx's aiter_lines, many scripts).
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
#: A JSON string of a name, a node id or a phase, as `_dumps` writes it (memo: few values).
_quoted = functools.lru_cache(maxsize=4096)(json.encoder.encode_basestring_ascii)
#: The usual event's frame, as `_dumps` writes its data; `%a` of a finite float is its
#: repr, and the prefix (see `_prefix`) holds the five values a burst repeats.
_EVENT_FRAME = (
    b'id: %d\ndata: %s%d,"timestamp":%a,"enter_count":%d,"one_shot":%s,"parameters":%s}\n\n'
)


@functools.lru_cache(maxsize=1024, typed=True)
def _prefix(injection: Any, kind: Any, phase: Any, shard: Any, node: Any) -> bytes | None:
    """The JSON of an event up to its `"seq":`, for values of the types our node writes
    (None otherwise): a burst repeats a few of these, and a cached one spares the frame
    five values' formatting. Typed, so a shard of True is not taken for 1."""
    if not (
        type(injection) is str
        and type(phase) is str
        and type(node) is str
        and (kind is None or type(kind) is str)
        and (shard is None or type(shard) is int)
    ):
        return None
    return (
        f'{{"injection":{_quoted(injection)},'
        f'"type":{"null" if kind is None else _quoted(kind)},'
        f'"phase":{_quoted(phase)},'
        f'"shard":{"null" if shard is None else shard},'
        f'"node":{_quoted(node)},"seq":'
    ).encode()


def _frame(seq: int | None, data: dict[str, Any]) -> bytes:
    """The SSE frame of a record: `id:` (when numbered), then `_dumps(data)` byte for byte.

    The usual event takes a cached prefix and one bytes template, in a third of the
    encoder's time (the encoder was a third of a node's CPU per event in a burst:
    docs/benchmarks.md)."""
    if len(data) == 10 and type(seq) is int and data["seq"] is seq:
        timestamp, enter_count = data["timestamp"], data["enter_count"]
        one_shot, parameters = data["one_shot"], data["parameters"]
        if (
            type(enter_count) is int
            and type(timestamp) is float
            and timestamp - timestamp == 0.0  # finite: json writes inf and nan otherwise
            and type(one_shot) is bool
            and type(parameters) is dict
        ):
            prefix = _prefix(
                data["injection"], data["type"], data["phase"], data["shard"], data["node"]
            )
            if prefix is not None:
                return _EVENT_FRAME % (
                    seq,
                    prefix,
                    seq,
                    timestamp,
                    enter_count,
                    b"true" if one_shot else b"false",
                    _dumps(parameters).encode() if parameters else b"{}",
                )
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}data: {_dumps(data)}\n\n".encode()


def _timestamp() -> float:
    """Unix seconds to the microsecond. `round(t, 6)` took 0.7 us, a third of an enabled
    hit (2.3 -> 1.6 us); rounding the microsecond count gives the same resolution."""
    return round(time.time() * 1_000_000) / 1_000_000


class Record:
    """A published event; its SSE frame is encoded once, however many clients read it."""

    __slots__ = ("_frame", "data", "seq", "size")

    def __init__(self, seq: int | None, data: dict[str, Any], size: int = 0) -> None:
        self.seq = seq
        self.data = data
        self.size = size  # what it counts against the log's byte budget
        self._frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        frame = self._frame
        if frame is None:
            frame = self._frame = _frame(self.seq, self.data)
        return frame


def gap_record(node: str, missed_from: int, missed_to: int, reason: str) -> Record:
    """An explicit loss notice. A `dropped` gap carries `id:` so a resuming client skips
    the lost range; a `slow_client` gap does not, so the client resumes before it."""
    data: dict[str, Any] = {
        "injection": None,
        "type": None,
        "phase": GAP,
        "shard": None,
        "node": node,
        "seq": None,
        "timestamp": _timestamp(),
        "enter_count": None,
        "one_shot": None,
        "parameters": {},
        "missed_from": missed_from,
        "missed_to": missed_to,
        "reason": reason,
    }
    record = Record(None, data)
    if reason == GAP_DROPPED:
        record._frame = f"id: {missed_to}\ndata: {_dumps(data)}\n\n".encode()
    return record


def event_parameters(parameters: Mapping[str, str]) -> tuple[dict[str, str] | None, int]:
    """The parameters an event carries (None: too large) and their encoded size.

    Cheap on the hit path: the length of the text bounds the encoded size from both
    sides (an escape is at most 6 bytes a character), so only parameters near the
    limit are encoded to decide."""
    if not parameters:
        return {}, 2
    chars = 2 + 6 * len(parameters)  # braces, quotes, colons and commas
    for key, value in parameters.items():
        chars += len(key) + len(value)
    if chars > MAX_EVENT_PARAMETERS:
        return None, 4
    if chars * 6 > MAX_EVENT_PARAMETERS:
        size = len(_dumps(dict(parameters)))
        if size > MAX_EVENT_PARAMETERS:
            return None, 4
        return dict(parameters), size
    return dict(parameters), chars


class Subscription:
    """One reader of the log: a cursor on the shared records and its filters.

    It holds no records of its own. A reader more than `max_pending` events behind
    the newest (a replay it asked for does not count) is cut off: it gets what it
    had up to that bound, then a `slow_client` gap, and the subscription closes.
    A reader whose next event the log no longer keeps gets a `dropped` gap and
    goes on from the oldest kept event. While it waits caught up in `next_batch`,
    its `push` (if set) may be handed a new record by the hit (`EventLog.publish`).
    """

    def __init__(
        self,
        log: EventLog,
        *,
        after: int | None = None,
        injections: Iterable[str] | None = None,
        phases: Iterable[str] | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self._log = log
        self.injections = frozenset(injections) if injections else None
        wanted = frozenset(phases) if phases else DEFAULT_PHASES
        self.phases = None if ALL_PHASES in wanted or wanted >= PHASES - {GAP} else wanted
        self.max_pending = max_pending
        self.cursor = log.last_seq + 1 if after is None else after + 1  # next seq to take
        #: The replay asked for ends here; it is not bounded by max_pending.
        self._replay_end = log.last_seq
        self._cut_at: int | None = None  # once cut off: the last seq it gets
        #: [missed_from, missed_to] once found cut off (missed_to grows until the gap is sent).
        self.overflow: list[int] | None = None
        self.closed = False
        self._wakeup: asyncio.Future[None] | None = None
        #: Set by a server: writes a record straight to this reader, True if it did (else
        #: the reader's task is woken to write it). Called only while the reader waits in
        #: `next_batch` caught up, so everything before the record was written already.
        self.push: Callable[[Record], bool] | None = None
        #: Pushed to since it parked or the log last settled: wake it for more instead,
        #: so that a burst is written in batches by its task, not one write per event.
        self._pushed = False
        self.pushes = 0  # records `push` wrote

    @property
    def waiting(self) -> bool:
        """Parked in `next_batch` for a record (not woken yet)."""
        return self._wakeup is not None and not self._wakeup.done()

    @property
    def backlog(self) -> int:
        """Events published that this reader has not taken yet."""
        return max(0, self._log.last_seq - self.cursor + 1)

    @property
    def overflowed(self) -> bool:
        """More than max_pending events behind (besides its replay): it will be cut off."""
        return self._cut_at is not None or (
            self._log.last_seq - max(self.cursor - 1, self._replay_end) > self.max_pending
        )

    def matches(self, data: Mapping[str, Any]) -> bool:
        if self.injections is not None and data["injection"] not in self.injections:
            return False
        return self.phases is None or data["phase"] in self.phases

    async def next_batch(self, timeout: float | None = None, limit: int = 1024) -> list[Record]:
        """The next records for this reader (at most `limit`), waiting for some.

        [] when `timeout` passes with nothing new, or once closed (see `closed`). While it
        waits, a record it does not want only moves its cursor, and `push` may write one
        it wants (see `EventLog.publish`): neither ends the wait.
        """
        log = self._log
        deadline = None
        while not self.closed:
            batch = self._take(limit)
            if batch:
                return batch
            if self.cursor <= log.last_seq:
                continue  # records were there, none matched: look further
            loop = asyncio.get_running_loop()
            if deadline is None and timeout is not None:
                deadline = loop.time() + timeout
            waiter: asyncio.Future[Any] = loop.create_future()
            self._wakeup = waiter
            self._pushed = False
            log._loop = loop
            log._waiting[self] = None
            timer = None if deadline is None else loop.call_at(deadline, _set, waiter, _TIMED_OUT)
            try:
                if await waiter is _TIMED_OUT:
                    return []
            finally:
                self._wakeup = None
                log._waiting.pop(self, None)
                if timer is not None:
                    timer.cancel()
        return []

    def _offer(self, record: Record, settling: bool) -> bool | None:
        """The newest record, for this reader waiting in `next_batch`: True if pushed,
        None if the reader goes on waiting without it (not a record it wants), False if
        its task was woken to take it (or it waits no longer: forget it). `settling`: the
        log's callback a turn after hits, not a hit."""
        waiter = self._wakeup
        if waiter is None or waiter.done():
            return False
        if record.seq == self.cursor and self._cut_at is None and self.max_pending > 0:
            if settling:
                self._pushed = False
            if not self.matches(record.data):
                self.cursor += 1
                return None
            push = self.push
            if push is not None and not self._pushed:
                try:
                    pushed = push(record)
                except Exception:
                    _log.exception("pushing an event to a reader failed; its task writes it")
                    pushed = False
                if pushed:
                    self.cursor += 1
                    self.pushes += 1
                    self._pushed = not settling
                    return True
        elif settling and self.cursor > self._log.last_seq:
            self._pushed = False  # nothing new since a push: the next hit may push again
            return None
        waiter.set_result(None)
        return False

    def _take(self, limit: int) -> list[Record]:
        log = self._log
        last = log.last_seq
        if self._cut_at is None and last - max(self.cursor - 1, self._replay_end) > (
            self.max_pending
        ):
            self._cut_at = max(self.cursor - 1, self._replay_end) + self.max_pending
        if self._cut_at is not None:
            self.overflow = [self._cut_at + 1, last]
        end = last if self._cut_at is None else min(last, self._cut_at)
        batch: list[Record] = []
        if self.cursor < log.first_kept_seq and self.cursor <= end:
            missed_to = min(log.first_kept_seq - 1, end)
            batch.append(gap_record(log.node_id, self.cursor, missed_to, GAP_DROPPED))
            self.cursor = missed_to + 1
        if self.cursor <= end:
            stop = min(end, self.cursor + limit - 1)
            matches = self.matches
            batch += [r for r in log._slice(self.cursor, stop) if matches(r.data)]
            self.cursor = stop + 1
        if self._cut_at is not None and self.cursor > self._cut_at:
            missed_to = log.last_seq
            batch.append(gap_record(log.node_id, self._cut_at + 1, missed_to, GAP_SLOW_CLIENT))
            self.close()
        return batch

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._log._unsubscribe(self)
            waiter = self._wakeup
            if waiter is not None:
                _set(waiter, None)


_TIMED_OUT = object()


def _set(waiter: asyncio.Future[Any], value: Any) -> None:
    if not waiter.done():
        waiter.set_result(value)


class EventLog:
    """Numbers a node's events from 1 and keeps the newest, within `capacity` events
    and `max_bytes` bytes, whichever bound comes first (the newest is always kept)."""

    def __init__(
        self,
        node_id: str = "",
        capacity: int = DEFAULT_CAPACITY,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.node_id = node_id
        self.capacity = capacity
        self.max_bytes = max_bytes
        # Kept records in seq order; slots before `_first` are dropped ones (None) not yet
        # compacted away, so that a seq finds its record by an index, in O(1).
        self._records: list[Record | None] = []
        self._base = 1  # the seq of _records[0]
        self._first = 1  # the oldest kept seq
        self.kept_bytes = 0
        self._subscriptions: list[Subscription] = []
        #: Readers waiting in next_batch, each caught up or about to be settled.
        self._waiting: dict[Subscription, None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._settle_pending = False
        #: Called once after a hit or the settling callback pushed a record to any reader
        #: (a server hands the CPU to them: see server.py).
        self.after_push: Callable[[], None] | None = None
        #: A hit sooner than this after the last one (seconds) is part of a burst: its
        #: readers are served by the loop callback, in batches, not written to by the
        #: hit (one write and a hand-over of the CPU per hit would slow the burst).
        self.burst_gap = BURST_GAP
        self._last_hit = 0.0
        self.last_seq = 0
        #: Names this numbering: a resume point from another boot does not apply to it.
        self.boot_id = secrets.token_hex(8)

    @property
    def first_kept_seq(self) -> int:
        """The oldest seq still kept (last_seq + 1 when nothing is kept)."""
        return self._first

    @property
    def kept(self) -> int:
        return self.last_seq - self._first + 1

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def publish(
        self,
        injection: str,
        kind: str | None,
        phase: str,
        shard: int | None,
        enter_count: int,
        one_shot: bool,
        parameters: Mapping[str, str],
    ) -> Record:
        """Number and keep one event and hand it to the readers waiting for one.

        The hit serves a few waiting readers at once, more by one callback on the loop
        (`_settle`), whatever their number. A waiting reader caught up to this record
        that does not want it only moves its cursor; one that wants it and has a `push`
        gets it written by the hit itself (then not again until the loop turned: a burst
        goes out in batches); any other is woken and its task reads the record."""
        seq = self.last_seq = self.last_seq + 1
        params, params_size = event_parameters(parameters)
        data = {
            "injection": injection,
            "type": kind,
            "phase": phase,
            "shard": shard,
            "node": self.node_id,
            "seq": seq,
            "timestamp": (now := _timestamp()),
            "enter_count": enter_count,
            "one_shot": one_shot,
            "parameters": params,
        }
        after_idle = now - self._last_hit >= self.burst_gap
        self._last_hit = now
        if params is None:
            data["parameters_truncated"] = True
        size = RECORD_OVERHEAD + len(injection) + len(self.node_id) + params_size
        record = Record(seq, data, size)
        self._records.append(record)
        self.kept_bytes += size
        if seq - self._first >= self.capacity or self.kept_bytes > self.max_bytes:
            self._trim()
        waiting = self._waiting
        if waiting:
            if len(waiting) <= WAKE_AT_ONCE and after_idle:
                # The usual one reader or two: no loop turn added to latency. A hit
                # right after another is a burst: the callback serves it, batched.
                if self._offer_all(record, settling=False):
                    self._settle_later()  # lets them be pushed to again, after this turn
            else:
                self._settle_later()
        return record

    def _settle_later(self) -> None:
        if not self._settle_pending:
            self._settle_pending = True
            self._loop.call_soon(self._settle)  # type: ignore[union-attr]

    def _trim(self) -> None:
        records = self._records
        while self._first < self.last_seq and (
            self.last_seq - self._first >= self.capacity or self.kept_bytes > self.max_bytes
        ):
            index = self._first - self._base
            dropped = records[index]
            assert dropped is not None
            records[index] = None
            self.kept_bytes -= dropped.size
            self._first += 1
        dead = self._first - self._base
        if dead > 64 and dead * 2 > len(records):
            del records[:dead]
            self._base = self._first

    def _settle(self) -> None:
        """A turn of the loop after hits: each waiting reader with exactly the newest
        record to take gets it pushed (or skipped); one further behind is woken, its task
        writes all it missed at once; one pushed to by a hit may be pushed to again."""
        self._settle_pending = False
        waiting = self._waiting
        if not waiting or not self._records:
            return
        newest = self._records[-1]
        assert newest is not None
        self._offer_all(newest, settling=True)

    def _offer_all(self, record: Record, *, settling: bool) -> bool:
        """Offer the record to every waiting reader (see `Subscription._offer`); hand the
        CPU over once if any got it pushed. Whether any did."""
        waiting = self._waiting
        pushed = False
        for subscription in tuple(waiting):
            outcome = subscription._offer(record, settling)
            if outcome is False:
                del waiting[subscription]
            elif outcome:
                pushed = True
        if pushed and self.after_push is not None:
            self.after_push()
        return pushed

    def _slice(self, first: int, last: int) -> list[Record]:
        """Kept records with seqs first..last (both kept, first <= last)."""
        return self._records[first - self._base : last - self._base + 1]  # type: ignore[return-value]

    def since(self, seq: int) -> list[Record]:
        """Kept records with a seq above `seq`, oldest first."""
        first = max(seq + 1, self._first)
        if first > self.last_seq:
            return []
        return self._slice(first, self.last_seq)

    def subscribe(
        self,
        *,
        after: int | None = None,
        injections: Iterable[str] | None = None,
        phases: Iterable[str] | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> Subscription:
        """A reader of every event from now on, first replaying those after `after`.

        No duplicate and no hole between replay and live events: both are one cursor
        on one log. A replayed range the log no longer keeps is announced by a
        `dropped` gap first. An `after` beyond the last seq means the reader saw an
        earlier life of this node: everything kept is replayed. `phases` None is the
        default stream (`enter` only); `{"all"}` is every phase.
        """
        if after is not None and after > self.last_seq:
            after = 0
        subscription = Subscription(
            self, after=after, injections=injections, phases=phases, max_pending=max_pending
        )
        self._subscriptions.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        try:
            self._subscriptions.remove(subscription)
        except ValueError:
            pass

    def close(self) -> None:
        """End every subscription (their readers see an empty batch, `closed` set)."""
        for subscription in list(self._subscriptions):
            subscription.close()
