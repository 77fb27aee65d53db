"""The SSE stream of one node (§4, §5): exact wire format, filters, replay without duplicate
or hole (also while the node publishes), explicit gaps, heartbeats and node lives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from helpers import EVENT_KEYS as KEYS
from helpers import GAP_KEYS, Publisher
from sse import Message, RawStream, open_stream

from pytest_injection_events.node import FakeNode

EVENTS = "/v2/error_injection/events"
FRAME = re.compile(r"id: (\d+)\ndata: ([^\n]*)\n\n")


def enable(node: FakeNode, name: str, **options: Any) -> None:
    node.call(lambda: node.injector.enable(name, **options))


def hit(node: FakeNode, name: str, times: int = 1, shard: int = 0) -> None:
    """Enter a `lambda` point `times` times in one go on the node's loop."""

    def run() -> None:
        for _ in range(times):
            node.injector.inject(name, lambda: None, shard=shard)

    node.call(run)


def events_so_far(node: FakeNode, count: int, name: str = "p") -> None:
    """Publish `count` events: an enable of `name`, then hits."""
    enable(node, name)
    hit(node, name, count - 1)


def seqs(messages: list[Message]) -> list[int]:
    return [m.json["seq"] for m in messages]


async def read_raw(response: aiohttp.ClientResponse, frames: int, timeout: float = 5.0) -> bytes:
    """The exact bytes of the first `frames` blank-line-terminated blocks."""
    data = b""

    async def run() -> None:
        nonlocal data
        while data.count(b"\n\n") < frames:
            chunk = await response.content.readany()
            if not chunk:
                raise EOFError(data)
            data += chunk

    await asyncio.wait_for(run(), timeout)
    return data


def check_event(data: dict[str, Any], node: FakeNode) -> None:
    """§4's keys and types, nothing more."""
    assert set(data) == KEYS, data
    assert isinstance(data["injection"], str) and isinstance(data["phase"], str)
    assert data["type"] is None or isinstance(data["type"], str)
    assert data["shard"] is None or isinstance(data["shard"], int)
    assert data["node"] == node.node_id
    assert isinstance(data["seq"], int) and data["seq"] >= 1
    assert isinstance(data["timestamp"], float)
    assert round(data["timestamp"], 6) == data["timestamp"]  # microsecond resolution
    assert abs(data["timestamp"] - time.time()) < 60
    assert isinstance(data["enter_count"], int) and isinstance(data["one_shot"], bool)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in data["parameters"].items())


# -- wire format ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_wire_format_is_exact(node: FakeNode, http: aiohttp.ClientSession) -> None:
    """`retry:` first, then per event exactly `id: <seq>` and one `data:` line, no `event:`
    field (a browser's onmessage gets it); §4's keys with the values of each phase. No blank
    line but the one ending an event: httpx-sse would dispatch an empty event for it."""
    async with http.get(node.url + EVENTS, params={"phase": "all"}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Injection-Node"] == node.node_id
        assert response.headers["X-Injection-Boot"]
        assert response.headers["X-Injection-Last-Seq"] == "0"
        assert await response.content.readline() == b"retry: 1000\n"  # now subscribed
        name = "replication_drop"  # a declared lambda point, so every event has its type
        enable(node, name, parameters={"k": "v"})
        hit(node, name, 2)
        node.call(lambda: node.injector.receive_message(name))
        node.call(lambda: node.injector.disable(name))
        raw = (await read_raw(response, 5)).decode("utf-8")
    frames = FRAME.findall(raw)
    assert "".join(f"id: {i}\ndata: {d}\n\n" for i, d in frames) == raw  # nothing else at all
    events = [json.loads(data) for _, data in frames]
    assert [int(i) for i, _ in frames] == [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    for event in events:
        check_event(event, node)
    summary = [
        (e["phase"], e["type"], e["shard"], e["enter_count"], e["one_shot"], e["parameters"])
        for e in events
    ]
    assert summary == [
        ("enable", "lambda", None, 0, False, {"k": "v"}),
        ("enter", "lambda", 0, 1, False, {"k": "v"}),
        ("enter", "lambda", 0, 2, False, {"k": "v"}),
        ("message", "lambda", None, 2, False, {"k": "v"}),
        ("disable", "lambda", None, 2, False, {"k": "v"}),
    ]
    assert {e["injection"] for e in events} == {name}
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps)


@pytest.mark.asyncio
async def test_shards_and_one_shot_in_events(http: aiohttp.ClientSession) -> None:
    """Each hit carries its shard; a one-shot says so; enter_count is after this hit."""
    with FakeNode(shards=3) as node:
        async with open_stream(http, node.url, {"phase": "enter"}) as stream:
            enable(node, "p", one_shot=True)
            for shard in (2, 0, 1):
                hit(node, "p", shard=shard)
            events = [m.json for m in await stream.take(3)]
    assert [(e["shard"], e["enter_count"], e["one_shot"]) for e in events] == [
        (2, 1, True),
        (0, 2, True),
        (1, 3, True),
    ]


@pytest.mark.asyncio
async def test_odd_names_stay_on_one_data_line(node: FakeNode, http: aiohttp.ClientSession) -> None:
    """Newlines, NUL and the characters that str.splitlines() and httpx's line decoder
    take for line ends never appear raw in a frame, so any line reader gets the name back."""
    names = ["a\nb", "c\rd", "e\r\nf", "nul\x00", "ls\u2028ps\u2029", "nel\x85", "ff\x0c\x1c", "ü"]
    async with http.get(node.url + EVENTS, params={"phase": "enable"}) as response:
        await response.content.readline()
        for name in names:
            enable(node, name, parameters={name: name})
        raw = await read_raw(response, len(names))
    text = raw.decode("utf-8")
    assert not set(text) & set("\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00")
    assert len(text.splitlines()) == 3 * len(names)
    frames = FRAME.findall(text)
    decoded = [json.loads(data) for _, data in frames]
    assert [(e["injection"], e["parameters"]) for e in decoded] == [(n, {n: n}) for n in names]


# -- filters -------------------------------------------------------------------------


FILTERS: list[list[tuple[str, str]]] = [
    [],
    [("injection", "a")],
    [("injection", "a"), ("injection", "b")],
    [("phase", "enter")],
    [("phase", "enter"), ("phase", "disable")],
    [("injection", "a"), ("phase", "enter")],
    [("injection", "b"), ("injection", "a"), ("phase", "enable"), ("phase", "enter")],
]


def passes(event: dict[str, Any], query: list[tuple[str, str]]) -> bool:
    names = {v for k, v in query if k == "injection"}
    phases = {v for k, v in query if k == "phase"}
    return (not names or event["injection"] in names) and (not phases or event["phase"] in phases)


def mixed_events(node: FakeNode) -> None:
    """Every filter above matches at least the last event (a hit of `a`)."""
    for name in ("a", "b", "c"):
        enable(node, name)
    for name in ("a", "b", "c", "a"):
        hit(node, name)
    node.call(lambda: node.injector.receive_message("b"))
    node.call(lambda: node.injector.disable("b"))
    node.call(lambda: node.injector.disable("c"))
    hit(node, "a")


@pytest.mark.asyncio
async def test_filters_live_and_in_replay(node: FakeNode, http: aiohttp.ClientSession) -> None:
    """?injection= and ?phase= are repeatable and combine (AND across, OR within); they
    apply to live events and to replayed ones alike."""
    async with contextlib.AsyncExitStack() as stack:
        everything = await stack.enter_async_context(open_stream(http, node.url))
        streams = [
            await stack.enter_async_context(open_stream(http, node.url, query)) for query in FILTERS
        ]
        mixed_events(node)
        all_events = [m.json for m in await everything.take(11)]
        assert seqs_of(all_events) == list(range(1, 12))
        for query, stream in zip(FILTERS, streams, strict=True):
            expected = [e for e in all_events if passes(e, query)]
            assert [m.json for m in await stream.take(len(expected))] == expected, query
    for query in FILTERS:  # the same through replay
        expected = [e for e in all_events if passes(e, query)]
        async with open_stream(http, node.url, [*query, ("last_event_id", "0")]) as stream:
            assert [m.json for m in await stream.take(len(expected))] == expected, query


def seqs_of(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events]


# -- replay --------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["header", "query"])
async def test_replay_then_live_without_duplicate_or_hole(
    node: FakeNode, http: aiohttp.ClientSession, how: str
) -> None:
    events_so_far(node, 10)
    resume = {"headers": {"Last-Event-ID": "4"}} if how == "header" else {}
    params = {"last_event_id": "4"} if how == "query" else None
    async with open_stream(http, node.url, params, resume.get("headers")) as stream:
        replayed = await stream.take(6)
        hit(node, "p", 2)
        live = await stream.take(2)
    assert seqs(replayed + live) == list(range(5, 13))
    assert [m.id for m in replayed + live] == [str(s) for s in range(5, 13)]


@pytest.mark.asyncio
async def test_header_wins_over_query(node: FakeNode, http: aiohttp.ClientSession) -> None:
    """A reconnecting EventSource sends Last-Event-ID with the URL it first opened: the
    header is the newer resume point."""
    events_so_far(node, 10)
    headers = {"Last-Event-ID": "7"}
    async with open_stream(http, node.url, {"last_event_id": "2"}, headers) as stream:
        assert seqs(await stream.take(3)) == [8, 9, 10]


@pytest.mark.asyncio
@pytest.mark.parametrize(("after", "first"), [("0", 1), ("9", 10), ("10", None)])
async def test_replay_edges(
    node: FakeNode, http: aiohttp.ClientSession, after: str, first: int | None
) -> None:
    """0 replays everything kept; the last seq replays nothing and goes on live."""
    events_so_far(node, 10)
    async with open_stream(http, node.url, {"last_event_id": after}) as stream:
        if first is not None:
            assert seqs(await stream.take(11 - first)) == list(range(first, 11))
        hit(node, "p")
        assert seqs([await stream.next()]) == [11]


@pytest.mark.asyncio
async def test_last_seq_header_resumes_a_reader_that_saw_nothing(
    node: FakeNode, http: aiohttp.ClientSession
) -> None:
    """X-Injection-Last-Seq is where a reader that got no event yet resumes: nothing published
    while it was away is lost."""
    events_so_far(node, 3)
    async with open_stream(http, node.url) as stream:
        resume_at = stream.response.headers["X-Injection-Last-Seq"]
    assert resume_at == "3"
    hit(node, "p", 4)
    async with open_stream(http, node.url, headers={"Last-Event-ID": resume_at}) as stream:
        assert seqs(await stream.take(4)) == [4, 5, 6, 7]


@pytest.mark.asyncio
async def test_resume_while_publishing_loses_nothing(http: aiohttp.ClientSession) -> None:
    """Readers that disconnect and resume by Last-Event-ID (header or query) while the node
    keeps publishing get one unbroken run of seqs: the replay and the switch to live
    events leave no hole and repeat nothing."""
    with FakeNode(event_capacity=1_000_000) as node:
        publisher = Publisher(node, burst=10, pause=0.001).start()
        received: list[int] = []
        replayed_something = 0
        try:
            last = "0"
            for round_ in range(8):
                how = {"headers": {"Last-Event-ID": last}} if round_ % 2 else {}
                params = None if round_ % 2 else {"last_event_id": last}
                async with open_stream(http, node.url, params, how.get("headers")) as stream:
                    if int(stream.response.headers["X-Injection-Last-Seq"]) > int(last):
                        replayed_something += 1  # events were published while we were away
                    batch = await stream.take(50 + 37 * round_)
                received += seqs(batch)
                last = batch[-1].id or ""
        finally:
            final = await publisher.stop()
        async with open_stream(http, node.url, {"last_event_id": last}) as stream:
            received += seqs(await stream.take(final - int(last)))
    assert received == list(range(1, final + 1))
    assert replayed_something >= 4


# -- gaps ----------------------------------------------------------------------------


@pytest.fixture
def small_node() -> Iterator[FakeNode]:
    """Keeps only the last 5 events."""
    with FakeNode(event_capacity=5) as fake:
        yield fake


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["header", "query"])
async def test_dropped_range_is_announced_by_a_gap(
    small_node: FakeNode, http: aiohttp.ClientSession, how: str
) -> None:
    """Asking for more than the node keeps first yields a `gap` (reason `dropped`, with
    `id:` at its end, so a client resuming from it does not ask again), then the rest."""
    events_so_far(small_node, 20)  # keeps 16..20
    headers = {"Last-Event-ID": "3"} if how == "header" else None
    params = {"last_event_id": "3"} if how == "query" else None
    async with open_stream(http, small_node.url, params, headers) as stream:
        gap, *rest = await stream.take(6)
    assert gap.id == "15" and gap.fields[-2:] == ["id", "data"] and "event" not in gap.fields
    data = gap.json
    assert set(data) == GAP_KEYS
    assert (data["phase"], data["reason"], data["missed_from"], data["missed_to"]) == (
        "gap",
        "dropped",
        4,
        15,
    )
    assert data["seq"] is None and data["node"] == small_node.node_id
    assert seqs(rest) == [16, 17, 18, 19, 20]
    # Resuming from the gap's id: nothing missing any more, no second gap.
    async with open_stream(http, small_node.url, headers={"Last-Event-ID": gap.id}) as stream:
        hit(small_node, "p")
        assert seqs(await stream.take(6)) == [16, 17, 18, 19, 20, 21]


@pytest.mark.asyncio
@pytest.mark.parametrize(("after", "gap"), [("0", (1, 15)), ("14", (15, 15)), ("15", None)])
async def test_gap_edges(
    small_node: FakeNode, http: aiohttp.ClientSession, after: str, gap: tuple[int, int] | None
) -> None:
    events_so_far(small_node, 20)
    async with open_stream(http, small_node.url, {"last_event_id": after}) as stream:
        if gap is not None:
            data = (await stream.next()).json
            assert (data["phase"], data["missed_from"], data["missed_to"]) == ("gap", *gap)
        assert seqs(await stream.take(5)) == [16, 17, 18, 19, 20]


@pytest.mark.asyncio
async def test_gap_reaches_filtered_readers(
    small_node: FakeNode, http: aiohttp.ClientSession
) -> None:
    """Loss is never silent, even to a reader whose filter would not have matched it."""
    events_so_far(small_node, 20)
    hit(small_node, "p")  # 21
    params = [("injection", "other"), ("phase", "timeout"), ("last_event_id", "2")]
    async with open_stream(http, small_node.url, params) as stream:
        data = (await stream.next()).json
        assert (data["phase"], data["missed_from"], data["missed_to"]) == ("gap", 3, 16)
        enable(small_node, "other")
        small_node.call(
            lambda: small_node.event_log.publish("other", "x", "timeout", 0, 1, False, {})
        )
        assert (await stream.next()).json["seq"] == 23


# -- heartbeats ----------------------------------------------------------------------


async def lines_until_pings(response: aiohttp.ClientResponse, pings: int) -> list[bytes]:
    lines: list[bytes] = []

    async def run() -> None:
        while lines.count(b": ping\n") < pings:
            line = await response.content.readline()
            if not line:
                raise EOFError(lines)
            lines.append(line)

    await asyncio.wait_for(run(), 5)
    return lines


@pytest.mark.asyncio
async def test_heartbeat_query(node: FakeNode, http: aiohttp.ClientSession) -> None:
    """`?heartbeat=0.05` sends a `: ping` comment line about every 50 ms, with no blank line
    after it: a blank line would end a block without data (an empty event to httpx-sse)."""
    async with http.get(node.url + EVENTS, params={"heartbeat": "0.05"}) as response:
        lines = await lines_until_pings(response, 3)
    assert lines == [b"retry: 1000\n", b": ping\n", b": ping\n", b": ping\n"]


@pytest.mark.asyncio
async def test_heartbeat_option_and_events_interleave(http: aiohttp.ClientSession) -> None:
    """A node-wide heartbeat option; pings fall between whole frames, and every blank line
    ends a frame that has data."""
    with FakeNode(heartbeat=0.02) as node:
        async with http.get(node.url + EVENTS, params={"phase": "all"}) as response:
            assert await response.content.readline() == b"retry: 1000\n"
            enable(node, "p")
            lines: list[bytes] = []

            async def run() -> None:
                while lines.count(b": ping\n") < 3 or lines.count(b"\n") < 20:
                    line = await response.content.readline()
                    lines.append(line)
                    if line == b"\n":
                        hit(node, "p")  # the next event once this one is in

            await asyncio.wait_for(run(), 5)
    frames = [line for line in lines if line != b": ping\n"]
    count = len(frames) // 3
    assert frames[: 3 * count : 3] == [f"id: {i}\n".encode() for i in range(1, count + 1)]
    assert all(line.startswith(b"data: {") for line in frames[1 : 3 * count : 3])
    assert frames[2 : 3 * count : 3] == [b"\n"] * count


# -- lives of a node -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_boot_marks_which_life_a_resume_point_belongs_to(
    node: FakeNode, http: aiohttp.ClientSession
) -> None:
    """`?boot=` names the life the Last-Event-ID came from: the same life resumes after it,
    another life means every event of this one is new."""
    events_so_far(node, 10)
    async with open_stream(http, node.url) as stream:
        boot = stream.response.headers["X-Injection-Boot"]
    same = {"boot": boot, "last_event_id": "6"}
    async with open_stream(http, node.url, same) as stream:
        assert seqs(await stream.take(4)) == [7, 8, 9, 10]
    other = {"boot": "an-earlier-life", "last_event_id": "6"}
    async with open_stream(http, node.url, other) as stream:
        assert seqs(await stream.take(10)) == list(range(1, 11))
    # A resume point beyond anything this node numbered can only be from an earlier life.
    async with open_stream(http, node.url, headers={"Last-Event-ID": "500"}) as stream:
        assert seqs(await stream.take(10)) == list(range(1, 11))


@pytest.mark.asyncio
async def test_restarted_fake_node_is_read_from_its_first_event(
    node: FakeNode, http: aiohttp.ClientSession
) -> None:
    """A FakeNode restarted in place is a new life (a fresh event log, a new boot): a
    reader resuming with the old boot and Last-Event-ID gets the new life from seq 1."""
    events_so_far(node, 3)
    async with open_stream(http, node.url, {"last_event_id": "0"}) as stream:
        boot = stream.response.headers["X-Injection-Boot"]
        last = (await stream.take(3))[-1].id
    node.stop()
    node.start()
    events_so_far(node, 2)
    params = {"boot": boot, "last_event_id": last}
    async with open_stream(http, node.url, params) as stream:
        assert stream.response.headers["X-Injection-Boot"] == node.boot_id != boot
        assert seqs(await stream.take(2)) == [1, 2]


def test_raw_stream_is_the_reader_used_here() -> None:
    """Guard: these tests parse with tests/sse.py, not with the product's client."""
    assert RawStream.__module__ == "sse"
