"""The hit writes its event straight to a reader waiting caught up (docs/design.md, the
path of an event): the same bytes the reader's task would write, never out of order,
never one write per event in a burst, and never when the reader's socket has anything
left to send (then the task writes it, under the stall watchdog, as always).

The servers here run on the test's own loop, so a hit made by the test is the node's
hit, and what a reader's task does in between is known."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp_sse_client import client as sse_client
from polling import wait_until

from pytest_injection_events import injection_event_stream
from pytest_injection_events.events import WAKE_AT_ONCE, EventLog, Record, Subscription
from pytest_injection_events.injector import Injector
from pytest_injection_events.server import InjectionServer

EVENTS = "/v2/error_injection/events"
FRAME = re.compile(rb"id: (\d+)\ndata: ([^\n]*)\n\n")
PING = b": ping\n"


def nothing() -> None:
    return None


async def parked(*subscriptions: Subscription) -> None:
    """Let the loop turn until every reader's task waits in `next_batch`, at least once
    (so the log's callback after a hit ran: a hit finds them as after an idle time). A
    few turns: the servers run on this loop, nothing else is waited for."""
    for _ in range(1000):
        await asyncio.sleep(0)
        if all(s.waiting for s in subscriptions):
            return
    raise AssertionError("the readers' tasks did not come to wait")


# -- the log's side: no HTTP ---------------------------------------------------------


class Pushes:
    """A push hook that keeps what it is handed (and takes it, or not)."""

    def __init__(self, takes: bool = True) -> None:
        self.takes = takes
        self.seqs: list[int | None] = []

    def __call__(self, record: Record) -> bool:
        if self.takes:
            self.seqs.append(record.seq)
        return self.takes


def publish(log: EventLog, name: str = "a") -> None:
    log.publish(name, "lambda", "enter", 0, 1, False, {})


@pytest.mark.asyncio
async def test_a_hit_pushes_to_a_reader_waiting_caught_up_once_a_loop_turn() -> None:
    """A record the reader does not want only moves its cursor; one it wants is pushed
    by the hit and the reader goes on waiting; a second in the same turn wakes its task,
    which takes it (a burst goes out batched); after a turn, the hit pushes again."""
    log = EventLog("n")
    log.burst_gap = 0.0  # every hit here is taken for one after an idle
    reader = log.subscribe(injections=["a"])
    reader.push = pushes = Pushes()
    task = asyncio.ensure_future(reader.next_batch())
    await parked(reader)

    publish(log, "b")
    assert (reader.cursor, reader.waiting, pushes.seqs) == (2, True, [])
    publish(log, "a")
    assert (reader.cursor, reader.waiting, pushes.seqs, reader.pushes) == (3, True, [2], 1)
    publish(log, "a")
    publish(log, "a")
    assert pushes.seqs == [2] and not reader.waiting
    assert [r.seq for r in await task] == [3, 4]

    task = asyncio.ensure_future(reader.next_batch())
    await parked(reader)
    publish(log, "a")
    await asyncio.sleep(0)  # the log's callback of this turn runs: pushes are allowed again
    publish(log, "a")
    assert (pushes.seqs, reader.waiting, reader.backlog) == ([2, 5, 6], True, 0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not log._waiting


@pytest.mark.asyncio
async def test_a_hit_right_after_another_is_left_to_the_loop_callback_batched() -> None:
    """Within `burst_gap` of the last hit, a hit writes nothing itself: the log's callback
    after the turn serves the reader, pushing one new record or waking the task for more
    (so a burst is written in batches, without a write and a hand-over per hit)."""
    log = EventLog("n")
    log.burst_gap = 3600.0  # every hit is within the gap of the one before
    publish(log)  # the first hit: after an idle, as far as the log knows
    reader = log.subscribe()
    reader.push = pushes = Pushes()
    task = asyncio.ensure_future(reader.next_batch())
    await parked(reader)
    publish(log)
    assert (pushes.seqs, reader.waiting) == ([], True)
    await asyncio.sleep(0)  # the callback: exactly one new record, pushed
    assert (pushes.seqs, reader.waiting, reader.backlog) == ([2], True, 0)
    for _ in range(3):
        publish(log)
    assert pushes.seqs == [2]
    await asyncio.sleep(0)  # three new: the task is woken and takes them at once
    assert [r.seq for r in await task] == [3, 4, 5]
    assert pushes.seqs == [2]


@pytest.mark.asyncio
async def test_a_push_refused_or_failing_leaves_the_record_to_the_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = EventLog("n")
    reader = log.subscribe()
    reader.push = Pushes(takes=False)
    task = asyncio.ensure_future(reader.next_batch())
    await parked(reader)
    publish(log)
    assert [r.seq for r in await task] == [1]

    def broken(record: Record) -> bool:
        raise OSError("no")

    reader.push = broken
    task = asyncio.ensure_future(reader.next_batch())
    await parked(reader)
    with caplog.at_level(logging.ERROR, "pytest_injection_events.events"):
        publish(log)
    assert [r.seq for r in await task] == [2]
    assert "pushing an event to a reader failed" in caplog.text
    assert reader.pushes == 0


@pytest.mark.asyncio
async def test_many_readers_are_pushed_to_by_one_callback_not_by_the_hit() -> None:
    """Past WAKE_AT_ONCE waiting readers, the hit touches none of them: the log's one
    callback pushes to each that has exactly that record to take, and wakes each that
    has more (it takes them in one batch)."""
    log = EventLog("n")
    readers = [log.subscribe() for _ in range(WAKE_AT_ONCE + 3)]
    hooks = []
    for reader in readers:
        reader.push = hook = Pushes()
        hooks.append(hook)
    tasks = [asyncio.ensure_future(r.next_batch()) for r in readers]
    await parked(*readers)
    publish(log)
    assert all(h.seqs == [] for h in hooks)
    await asyncio.sleep(0)  # the callback
    assert all(h.seqs == [1] for h in hooks) and all(r.waiting for r in readers)
    publish(log)
    publish(log)
    await asyncio.sleep(0)
    assert all(h.seqs == [1] for h in hooks)
    assert [[r.seq for r in await t] for t in tasks] == [[2, 3]] * len(readers)


@pytest.mark.asyncio
async def test_a_replaying_reader_is_not_pushed_to_until_caught_up() -> None:
    log = EventLog("n")
    log.burst_gap = 0.0  # every hit here is taken for one after an idle
    for _ in range(3):
        publish(log)
    reader = log.subscribe(after=0)
    reader.push = pushes = Pushes()
    assert [r.seq for r in await reader.next_batch()] == [1, 2, 3]
    task = asyncio.ensure_future(reader.next_batch())
    await parked(reader)
    publish(log)
    assert pushes.seqs == [4]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# -- a real node: raw sockets, our client, aiohttp-sse-client ------------------------


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[Injector, EventLog, InjectionServer]]:
    injector = Injector()
    log = EventLog("node-1")
    log.burst_gap = 0.0  # every hit here is taken for one after an idle
    injector.add_listener(log.publish)
    async with InjectionServer(injector, log, port=0) as server:
        yield injector, log, server


class RawReader:
    """A bare socket reading the chunked stream, chunk by chunk."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    async def open(cls, port: int, query: str, rcvbuf: int | None = None) -> RawReader:
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(
            sock, f"GET {EVENTS}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        )
        reader = cls(sock)
        head = await reader._until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head.lower()
        return reader

    async def _fill(self) -> None:
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65536), 5)
        assert data, "the node closed the stream"
        self.buffer += data

    async def _until(self, end: bytes) -> bytes:
        while end not in self.buffer:
            await self._fill()
        head, _, self.buffer = self.buffer.partition(end)
        return head + end

    async def chunk(self) -> bytes:
        """One whole chunk as sent: size line, data, CRLF."""
        size_line = await self._until(b"\r\n")
        size = int(size_line, 16) + 2
        while len(self.buffer) < size:
            await self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        assert data.endswith(b"\r\n")
        return size_line + data

    def close(self) -> None:
        self.sock.close()


def chunk_of(frame: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(frame), frame)


def data_of(chunk: bytes) -> bytes:
    return chunk.split(b"\r\n", 1)[1][:-2]


def subscription_of(log: EventLog, before: list[Subscription]) -> Subscription:
    (new,) = [s for s in log._subscriptions if s not in before]
    return new


@pytest.mark.asyncio
async def test_the_frame_a_hit_pushes_is_the_chunk_the_task_writes(
    served: tuple[Injector, EventLog, InjectionServer],
) -> None:
    """The hit wrote the event (the reader's task was not even woken), byte for byte the
    chunk a reader's task writes for the same event (here: a replay of it)."""
    injector, log, server = served
    injector.enable("p")
    live = await RawReader.open(server.port, "injection=p")
    try:
        assert await live.chunk() == b"c\r\nretry: 1000\n\r\n"
        (subscription,) = log._subscriptions
        await parked(subscription)
        injector.inject("p", nothing)
        assert subscription.pushes == 1 and subscription.waiting
        pushed = await live.chunk()
        assert subscription.waiting  # still in the same wait: its task wrote nothing
        (record,) = [r for r in log.since(0) if r.data["phase"] == "enter"]
        assert pushed == chunk_of(record.frame)

        before = list(log._subscriptions)
        replay = await RawReader.open(server.port, f"injection=p&last_event_id={record.seq - 1}")
        try:
            assert data_of(await replay.chunk()) == b"retry: 1000\n"
            assert await replay.chunk() == pushed
            assert subscription_of(log, before).pushes == 0
        finally:
            replay.close()
    finally:
        live.close()


class Collector:
    """The seqs one client received, in order, and a way to wait for one."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.changed = asyncio.Event()

    def add(self, seq: int) -> None:
        self.seqs.append(seq)
        self.changed.set()

    async def until(self, seq: int) -> None:
        while not self.seqs or self.seqs[-1] < seq:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 10)


async def read_raw(reader: RawReader, into: Collector) -> None:
    body = b""
    while True:
        body += data_of(await reader.chunk())
        body = body.removeprefix(b"retry: 1000\n")
        while (match := FRAME.match(body)) is not None:
            into.add(int(match[1]))
            body = body[match.end() :]


@pytest.mark.asyncio
async def test_idle_hits_and_bursts_reach_every_reader_in_order_once(
    served: tuple[Injector, EventLog, InjectionServer],
) -> None:
    """Three clients with different filters (ours, aiohttp-sse-client, a bare socket);
    single hits while they all wait caught up (pushed) mixed with bursts of up to 60
    hits in one go (the first pushed, the rest written by each reader's task): each
    gets exactly its events, in order, none twice."""
    injector, log, server = served
    for name in ("a", "b", "c"):
        injector.enable(name)
    ours, sse, raw = Collector(), Collector(), Collector()
    tasks: list[asyncio.Task[Any]] = []
    async with injection_event_stream(server.url, injections=["a"]) as stream:

        async def read_ours() -> None:
            async for event in stream:
                assert event.seq is not None
                ours.add(event.seq)

        async def read_sse() -> None:
            async with sse_client.EventSource(
                server.url + EVENTS,
                params=[("phase", "all"), ("injection", "a"), ("injection", "b")],
            ) as source:
                async for event in source:
                    sse.add(json.loads(event.data)["seq"])

        tasks.append(asyncio.ensure_future(read_ours()))
        tasks.append(asyncio.ensure_future(read_sse()))
        bare = await RawReader.open(server.port, "injection=b&injection=c")
        tasks.append(asyncio.ensure_future(read_raw(bare, raw)))
        try:
            await wait_until(lambda: log.subscriber_count == 3)
            readers = list(log._subscriptions)
            rng = random.Random(13)
            for _ in range(40):
                await parked(*readers)
                if rng.random() < 0.6:
                    injector.inject(rng.choice("abc"), nothing)
                else:
                    for _ in range(rng.randint(2, 60)):
                        injector.inject(rng.choice("abc"), nothing)
                # The readers caught up: the next single hit finds them waiting.
                await wait_for_last(log, {"a": ours, "ab": sse, "bc": raw})
            total_pushes = sum(s.pushes for s in readers)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            bare.close()
    records = [r.data for r in log.since(0) if r.data["phase"] == "enter"]
    for wanted, got in (("a", ours), ("ab", sse), ("bc", raw)):
        assert got.seqs == [d["seq"] for d in records if d["injection"] in wanted], wanted
    delivered = len(ours.seqs) + len(sse.seqs) + len(raw.seqs)
    assert 0 < total_pushes < delivered  # both ways were taken


async def wait_for_last(log: EventLog, collectors: dict[str, Collector]) -> None:
    records = [r.data for r in log.since(0) if r.data["phase"] == "enter"]
    for wanted, collector in collectors.items():
        seqs = [d["seq"] for d in records if d["injection"] in wanted]
        if seqs:
            await collector.until(seqs[-1])


@pytest.mark.asyncio
async def test_a_reader_with_bytes_left_to_send_is_written_by_its_task_and_dropped_if_stalled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reader that stops reading: idle hits are pushed until its socket holds bytes
    the kernel did not take; from then on the hit leaves every event to the reader's
    task, which writes under the stall watchdog and is dropped once it stays blocked."""
    injector = Injector()
    log = EventLog("node-1", capacity=1_000_000)
    log.burst_gap = 0.0  # every hit here is taken for one after an idle
    injector.add_listener(log.publish)
    injector.enable("p", parameters={"pad": "x" * 4000})
    async with InjectionServer(injector, log, port=0, stall_timeout=0.2) as server:
        stalled = await RawReader.open(server.port, "injection=p", rcvbuf=4096)
        try:
            (subscription,) = log._subscriptions
            refused = None
            for _ in range(10_000):
                await parked(subscription)
                pushes = subscription.pushes
                injector.inject("p", nothing)
                if subscription.pushes == pushes:
                    refused = log.last_seq
                    break
            assert refused is not None and subscription.pushes > 0
            pushes = subscription.pushes
            # Its task took the refused event and writes it: the order holds.
            await wait_until(lambda: subscription.cursor > refused)

            async def hit_until_dropped() -> None:
                while log.subscriber_count:
                    injector.inject("p", nothing)
                    await asyncio.sleep(0.01)  # the watchdog's time goes by

            with caplog.at_level(logging.INFO, "pytest_injection_events.server"):
                await asyncio.wait_for(hit_until_dropped(), 10)
            assert subscription.pushes == pushes and subscription.closed
            assert "dropping a stalled event stream reader" in caplog.text
        finally:
            stalled.close()


@pytest.mark.asyncio
async def test_pings_between_pushed_frames_stay_whole(
    served: tuple[Injector, EventLog, InjectionServer],
) -> None:
    """Heartbeats every 10 ms between pushed events: the body is `retry:`, then whole
    frames and whole `: ping` lines, each chunk made of whole ones."""
    injector, log, server = served
    injector.enable("p")
    reader = await RawReader.open(server.port, "injection=p&heartbeat=0.01")
    try:
        (subscription,) = log._subscriptions
        chunks = [await reader.chunk()]
        for _ in range(5):
            await parked(subscription)
            injector.inject("p", nothing)
            pings = 0
            while pings < 2:  # two heartbeats go by before the next hit
                chunks.append(await reader.chunk())
                pings += data_of(chunks[-1]) == PING
        assert subscription.pushes == 5
    finally:
        reader.close()
    items = re.compile(rb"(?:id: \d+\ndata: [^\n]*\n\n|: ping\n)+")
    assert data_of(chunks[0]) == b"retry: 1000\n"
    for chunk in chunks[1:]:
        assert items.fullmatch(data_of(chunk)), chunk
    body = b"".join(data_of(c) for c in chunks[1:])
    assert [int(m[1]) for m in FRAME.finditer(body)] == [
        r.seq for r in log.since(0) if r.data["phase"] == "enter"
    ]
