"""Many readers of one node's stream (§5): 256 at once, a slow one that is bounded and cut
off without slowing anyone, readers that leave; and readers nobody here wrote (curl,
aiohttp-sse-client, httpx-sse, a naive line reader) decode every event."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import re
import shutil
import socket
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import httpx_sse
import pytest
from aiohttp_sse_client import client as sse_client
from helpers import EVENT_KEYS as KEYS
from polling import wait_until
from sse import Message, RawStream, open_stream

from pytest_injection_events.events import Subscription
from pytest_injection_events.node import FakeNode

EVENTS = "/v2/error_injection/events"
FRAME = re.compile(rb"id: (\d+)\ndata: ([^\n]*)\n\n")
MAX_PENDING = 100
#: A name that no line reader may split and no URL may mangle.
ODD = "odd\u2028name/ü?"


def enable(node: FakeNode, name: str, **options: Any) -> None:
    node.call(lambda: node.injector.enable(name, **options))


def hit(node: FakeNode, name: str, times: int = 1) -> None:
    def run() -> None:
        for _ in range(times):
            node.injector.inject(name, lambda: None)

    node.call(run)


def subscribers(node: FakeNode) -> int:
    return node.call(lambda: node.event_log.subscriber_count)


def subscriptions(node: FakeNode) -> list[Subscription]:
    return node.call(lambda: list(node.event_log._subscriptions))


#: Every phase: these tests look at control events too (the default stream is `enter`).
ALL = {"phase": "all"}


def seqs(messages: list[Message]) -> list[int]:
    return [m.json["seq"] for m in messages]


# -- many clients --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_256_clients_each_get_every_event_then_503(node: FakeNode) -> None:
    """The default limit is 256 concurrent streams: each one gets every event, the 257th is
    refused with a JSON 503, and a client that leaves frees its slot."""
    url = node.url + EVENTS
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        opened = await asyncio.gather(
            *(session.get(url, params=ALL) for _ in range(256)), return_exceptions=True
        )
        responses = [r for r in opened if isinstance(r, aiohttp.ClientResponse)]
        try:
            assert len(responses) == 256, [r for r in opened if isinstance(r, BaseException)]
            assert {r.status for r in responses} == {200}
            assert subscribers(node) == 256
            async with session.get(url) as refused:
                assert refused.status == 503
                assert refused.headers["Retry-After"] == "1"
                body = await refused.json()
                assert set(body) == {"error"} and "256" in body["error"]
            assert subscribers(node) == 256

            enable(node, "p")
            hit(node, "p", 19)
            streams = [RawStream(r) for r in responses]
            received = await asyncio.gather(*(s.take(20) for s in streams))
            assert all(seqs(messages) == list(range(1, 21)) for messages in received)

            responses.pop().close()
            await wait_until(lambda: subscribers(node) == 255)
            async with session.get(url, params={"last_event_id": "19", **ALL}) as again:
                assert again.status == 200
                assert seqs([await RawStream(again).next()]) == [20]
        finally:
            for response in responses:
                response.close()
    await wait_until(lambda: subscribers(node) == 0)


@pytest.mark.asyncio
async def test_client_leaving_mid_stream_disturbs_nobody(
    node: FakeNode, http: aiohttp.ClientSession
) -> None:
    """A reader that goes away with events unread is unsubscribed on the node; the others
    go on getting every event."""
    async with contextlib.AsyncExitStack() as stack:
        a, b, c = [await stack.enter_async_context(open_stream(http, node.url)) for _ in range(3)]
        assert subscribers(node) == 3
        enable(node, "p")
        hit(node, "p", 9)
        assert seqs(await a.take(10)) == seqs(await c.take(10)) == list(range(1, 11))
        assert seqs(await b.take(3)) == [1, 2, 3]
        b.response.close()  # seven events still unread on its side
        hit(node, "p", 10)
        assert seqs(await a.take(10)) == seqs(await c.take(10)) == list(range(11, 21))
        await wait_until(lambda: subscribers(node) == 2)
        hit(node, "p")
        assert seqs([await a.next(), await c.next()]) == [21, 21]
    await wait_until(lambda: subscribers(node) == 0)


# -- a slow client -------------------------------------------------------------------


class FastReader:
    """Reads raw bytes as fast as they come, so its stream never backs up."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.data = bytearray()
        self.target: bytes | None = None
        self.reached = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while chunk := await self.response.content.readany():
            self.data += chunk
            self._check()

    def _check(self) -> None:
        if self.target is not None and self.target in self.data:
            self.reached.set()

    async def until(self, seq: int) -> list[int]:
        """Wait for event `seq`; the ids of every event read, checked against their data."""
        self.target = f"id: {seq}\n".encode()
        self._check()
        await asyncio.wait_for(self.reached.wait(), 10)
        frames = FRAME.findall(self.data)
        assert bytes(self.data) == b"retry: 1000\n" + b"".join(
            b"id: %s\ndata: %s\n\n" % frame for frame in frames
        )
        assert all(json.loads(data)["seq"] == int(id_) for id_, data in frames)
        return [int(id_) for id_, _ in frames]

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.response.close()


class Flood:
    """Hits `p` on the node's loop in bursts with a bare yield between (so stream writers
    run) until the watched subscription overflowed, then `extra` more. It never awaits a
    reader. After every single event it records each subscription's pending length."""

    def __init__(self, node: FakeNode, watched: Subscription, extra: int = 300) -> None:
        self.node = node
        self.watched = watched
        self.extra = extra
        self.largest: dict[Subscription, int] = {}
        self.done: concurrent.futures.Future[int] = concurrent.futures.Future()

    async def run(self) -> int:
        """The last seq published."""
        self.node.call(lambda: asyncio.ensure_future(self._run()))
        return await asyncio.wrap_future(self.done)

    async def _run(self) -> None:
        try:
            injector, log = self.node.injector, self.node.event_log
            subs = list(log._subscriptions)
            injector.enable("p", parameters={"pad": "x" * 4000})  # big events fill buffers fast
            left = self.extra
            while left > 0 and log.last_seq < 500_000:
                for _ in range(20):
                    injector.inject("p", lambda: None)
                    for sub in subs:
                        self.largest[sub] = max(self.largest.get(sub, 0), sub.backlog)
                if self.watched.overflowed:
                    left -= 20
                await asyncio.sleep(0)
            self.done.set_result(log.last_seq)
        except BaseException as exc:
            self.done.set_exception(exc)
            raise


@pytest.fixture
def bounded_node() -> Iterator[FakeNode]:
    """A node that queues at most 100 events for a reader and keeps everything for replay."""
    with FakeNode(max_pending=MAX_PENDING, event_capacity=1_000_000) as fake:
        yield fake


async def flood_past_a_stalled_reader(
    node: FakeNode, http: aiohttp.ClientSession
) -> tuple[int, Subscription]:
    """With the node's one reader not reading at all, publish until its queue overflowed,
    while two fast readers must get every event: the last seq, and the stalled reader's
    subscription."""
    (watched,) = subscriptions(node)
    first = node.call(lambda: node.event_log.last_seq) + 1
    fast = [FastReader(await http.get(node.url + EVENTS, params=ALL)) for _ in range(2)]
    # The fast readers share two cores with the flood: on a loaded machine they can fall
    # 100 events behind for a moment and be cut off too, which is not what this proves.
    # Their queues get room; the stalled reader keeps the node's bound.
    for subscription in subscriptions(node):
        if subscription is not watched:
            subscription.max_pending = 1_000_000
    try:
        flood = Flood(node, watched)
        last = await flood.run()
        for reader in fast:
            assert await reader.until(last) == list(range(first, last + 1))
    finally:
        for reader in fast:
            await reader.close()
    # Overflowed; up to `last`, unless its writer got unstuck (the kernel grew the socket's
    # buffer) and closed it with its gap before the flood was over.
    assert watched.overflowed
    assert flood.largest[watched] > MAX_PENDING  # it fell behind (no copy: a cursor only)
    return last, watched


async def read_to_the_end(stream: RawStream) -> list[Message]:
    messages = []
    with pytest.raises(EOFError):
        while True:
            messages.append(await stream.next())
    return messages


@pytest.mark.asyncio
async def test_slow_client_is_bounded_and_cut_off_with_a_gap(
    bounded_node: FakeNode, http: aiohttp.ClientSession
) -> None:
    """A reader that stops reading holds at most max_pending events on the node, slows
    neither the node nor the other readers, and is ended with a `slow_client` gap (no
    `id:`, so its Last-Event-ID stays on the last event it really got)."""
    node = bounded_node
    async with open_stream(http, node.url) as slow:
        last, watched = await flood_past_a_stalled_reader(node, http)
        # Cut off, but told so only once it reads again: until then it holds its place
        # (unless its writer got unstuck and has already queued the gap).
        await wait_until(lambda: subscribers(node) == (0 if watched.closed else 1))
        messages = await read_to_the_end(slow)
    *events, gap = messages
    got = seqs(events)
    assert got == list(range(1, len(got) + 1))
    assert [m.id for m in events] == [str(s) for s in got]
    data = gap.json
    assert gap.id is None and gap.fields == ["data"]
    assert (data["phase"], data["reason"]) == ("gap", "slow_client")
    assert (data["missed_from"], data["missed_to"]) == (got[-1] + 1, watched.overflow[1])
    assert got[-1] < last
    assert set(data) == KEYS | {"missed_from", "missed_to", "reason"}
    assert slow.last_id == str(got[-1])
    assert watched.closed
    await wait_until(lambda: subscribers(node) == 0)


@pytest.mark.asyncio
async def test_a_stalled_reader_is_dropped_and_frees_its_slot() -> None:
    """A reader that never reads again cannot be told of its gap; stall_timeout after
    its overflow the node drops it, so it does not hold one of the max_clients slots."""
    with FakeNode(max_pending=50, max_clients=1, stall_timeout=0.2) as node:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", node.port))
        _, writer = await asyncio.open_connection(sock=sock)
        try:
            writer.write(f"GET {EVENTS} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            await wait_until(lambda: subscribers(node) == 1)

            async def flood() -> None:
                (stalled,) = node.event_log._subscriptions
                node.injector.enable("p", parameters={"pad": "x" * 4000})
                while not stalled.overflowed and node.event_log.last_seq < 100_000:
                    for _ in range(10):  # well under max_pending: only a blocked writer overflows
                        node.injector.inject("p", lambda: None)
                    await asyncio.sleep(0)  # let the writer fill the socket and block

            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(flood(), node._loop))
            async with aiohttp.ClientSession() as http:
                statuses = []
                for _ in range(60):  # the slot frees stall_timeout (0.2 s) after the overflow
                    async with http.get(node.url + EVENTS) as response:
                        statuses.append(response.status)
                    if statuses[-1] != 503:
                        break
                    await asyncio.sleep(0.05)
                assert statuses[0] == 503 and statuses[-1] == 200, statuses
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@pytest.mark.asyncio
async def test_resume_after_slow_client_gap_loses_nothing(
    bounded_node: FakeNode, http: aiohttp.ClientSession
) -> None:
    """Reconnecting with the Last-Event-ID a reader holds after the gap brings every event
    it missed, from the first one it did not get to the last."""
    node = bounded_node
    async with open_stream(http, node.url) as slow:
        last, _ = await flood_past_a_stalled_reader(node, http)
        before = seqs((await read_to_the_end(slow))[:-1])
    headers = {"Last-Event-ID": slow.last_id or ""}
    async with open_stream(http, node.url, headers=headers) as resumed:
        after = seqs(await resumed.take(last - before[-1], timeout=10))
        hit(node, "p")
        after += seqs([await resumed.next()])
    assert before + after == list(range(1, last + 2))


@pytest.mark.asyncio
async def test_resumed_reader_is_bounded_like_any_other(
    bounded_node: FakeNode, http: aiohttp.ClientSession
) -> None:
    """A replay may exceed max_pending (the node keeps those events anyway); once it is
    out, what queues up live for that reader is bounded by max_pending again."""
    node = bounded_node
    enable(node, "q")
    hit(node, "q", 2 * MAX_PENDING)
    async with open_stream(http, node.url, {"last_event_id": "0"}) as slow:
        await wait_until(lambda: subscriptions(node)[0].backlog == 0)  # the replay went out
        await flood_past_a_stalled_reader(node, http)
        messages = await read_to_the_end(slow)
    assert seqs(messages[:-1]) == list(range(1, len(messages)))
    assert messages[-1].json["reason"] == "slow_client"


# -- clients nobody here wrote -------------------------------------------------------


def check(data: dict[str, Any], seq: int, node: FakeNode) -> None:
    assert set(data) == KEYS and data["seq"] == seq and data["node"] == node.node_id


@pytest.mark.asyncio
async def test_curl(node: FakeNode) -> None:
    """`curl -N -s`: what a person debugging a node types. Replayed and live events."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    enable(node, ODD)
    hit(node, ODD, 2)
    process = await asyncio.create_subprocess_exec(
        curl,
        "-N",
        "-s",
        f"{node.url}{EVENTS}?last_event_id=0&phase=all",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        lines: list[bytes] = []

        async def read(events: int) -> None:
            while lines.count(b"\n") < events:
                line = await process.stdout.readline()
                assert line, b"".join(lines)
                lines.append(line)

        await asyncio.wait_for(read(3), 10)
        hit(node, ODD, 2)
        await asyncio.wait_for(read(5), 10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await process.communicate()
    assert lines[0] == b"retry: 1000\n"
    blocks = b"".join(lines[1:]).split(b"\n\n")
    assert blocks.pop() == b""
    for seq, block in enumerate(blocks, 1):
        id_line, data_line = block.split(b"\n")
        assert id_line == f"id: {seq}".encode()
        data = json.loads(data_line.removeprefix(b"data: "))
        check(data, seq, node)
        assert data["injection"] == ODD


@pytest.mark.asyncio
async def test_aiohttp_sse_client(node: FakeNode) -> None:
    """aiohttp-sse-client: an EventSource as the HTML spec describes it."""
    enable(node, ODD)
    received = []
    async with sse_client.EventSource(
        node.url + EVENTS, params={"last_event_id": "0", **ALL}
    ) as source:
        hit(node, ODD, 3)
        async for event in source:
            received.append(event)
            if len(received) == 4:
                break
    for seq, event in enumerate(received, 1):
        assert event.type is None and event.message == ""  # no `event:` field: onmessage
        assert event.last_event_id == str(seq)
        check(json.loads(event.data), seq, node)
        assert json.loads(event.data)["injection"] == ODD


@pytest.mark.asyncio
async def test_httpx_sse(node: FakeNode) -> None:
    """httpx-sse dispatches even a block without data; the stream has none, so every event
    it yields is one of ours, heartbeats included."""
    enable(node, ODD)
    params = {"last_event_id": "0", "heartbeat": "0.02", **ALL}
    received = []
    async with (
        httpx.AsyncClient(timeout=10) as client,
        httpx_sse.aconnect_sse(client, "GET", node.url + EVENTS, params=params) as source,
    ):
        assert source.response.headers["content-type"] == "text/event-stream"
        events = source.aiter_sse()
        try:
            received.append(await anext(events))
            for _ in range(3):
                # Two heartbeats at least (20 ms each) go by between these events.
                await asyncio.wait_for(asyncio.shield(asyncio.sleep(0.05)), 1)
                hit(node, ODD)
                received.append(await anext(events))
        finally:
            await events.aclose()
    assert received[0].retry == 1000
    for seq, event in enumerate(received, 1):
        assert event.event == "message" and event.id == str(seq)
        check(event.json(), seq, node)
        assert event.json()["injection"] == ODD


@pytest.mark.asyncio
async def test_naive_line_reader(node: FakeNode) -> None:
    """httpx's aiter_lines splits like str.splitlines() (U+2028 too); a script that takes
    every `data:` line as one JSON event still gets whole events."""
    enable(node, ODD, parameters={"p": "\u2029\x85\u2028"})
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream("GET", node.url + EVENTS, params={"last_event_id": "0", **ALL}) as response,
    ):
        hit(node, ODD)
        data = []
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data.append(json.loads(line.removeprefix("data: ")))
                if len(data) == 2:
                    break
    for seq, event in enumerate(data, 1):
        check(event, seq, node)
        assert (event["injection"], event["parameters"]) == (ODD, {"p": "\u2029\x85\u2028"})
