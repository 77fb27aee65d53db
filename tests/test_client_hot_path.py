"""The client's fast paths give what the general rules give: the SSE decoder's common block,
the event built straight from the decoded object, and bad events skipped, not fatal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from pytest_injection_events import injection_event_stream
from pytest_injection_events.event_schema import InjectionEvent
from pytest_injection_events.events import EventLog, gap_record
from pytest_injection_events.protocol import EVENTS_PATH
from pytest_injection_events.sse import SSEDecoder, SSEMessage
from pytest_injection_events.stream_source import parse_event


@pytest.mark.parametrize(
    ("wire", "expected", "last_id"),
    [
        ("id: 1\ndata: a\n\n", [SSEMessage("a", "1")], "1"),
        ("id:1\ndata: a\n\n", [SSEMessage("a", "1")], "1"),
        ("id: 1\ndata:a\n\n", [SSEMessage("a", "1")], "1"),
        ("id: 1\ndata: a\ndata: b\n\n", [SSEMessage("a\nb", "1")], "1"),
        ("id: 1\ndata: a\nevent: x\n\n", [SSEMessage("a", "1", "x")], "1"),
        ("id: 1\ndata: a\nid: 2\n\n", [SSEMessage("a", "2")], "2"),
        ("id: 1\n: note\ndata: a\n\n", [SSEMessage("a", "1")], "1"),
        ("id:  2\ndata:  x\n\n", [SSEMessage(" x", " 2")], " 2"),
        ("id: 3\ndata: \n\n", [SSEMessage("", "3")], "3"),
        ("id: \ndata: x\n\n", [SSEMessage("x", "")], ""),
        ("id: a\0b\ndata: x\n\n", [SSEMessage("x")], None),
        ("id: 4\ndata\n\n", [SSEMessage("", "4")], "4"),
        ("id: 5\n\n", [], "5"),
        ("id: 6\r\ndata: x\r\n\r\n", [SSEMessage("x", "6")], "6"),
    ],
)
def test_the_common_block_and_its_near_misses(
    wire: str, expected: list[SSEMessage], last_id: str | None
) -> None:
    decoder = SSEDecoder()
    assert decoder.feed(wire) == expected
    assert decoder.last_event_id == last_id
    fields = SSEDecoder().feed_fields(wire)
    assert fields == [(m.data, m.id, m.event) for m in expected]


def test_a_character_cut_across_chunks_survives_an_empty_read_between() -> None:
    wire = "id: 1\ndata: é€\n\n".encode()
    cut = wire.index("€".encode()) + 1  # inside the three bytes of the euro sign
    decoder = SSEDecoder()
    messages = decoder.feed(wire[:cut]) + decoder.feed(b"") + decoder.feed(wire[cut:])
    assert messages == [SSEMessage("é€", "1")]


def test_invalid_utf8_is_replaced_as_before() -> None:
    assert SSEDecoder().feed(b"data: a\xffb\n\n") == [SSEMessage("a\ufffdb")]


def _frames() -> list[str]:
    """What our node writes: `data:` of an enter with parameters, an enable, a gap."""
    log = EventLog("127.0.0.1:9")
    log.publish("p", "lambda", "enter", 1, 2, True, {"k": "v"})
    log.publish("p", None, "enable", None, 0, False, {})  # type: ignore[arg-type]
    records = [*log.since(0), gap_record("127.0.0.1:9", 1, 4, "dropped")]
    return [r.frame.decode().split("data: ", 1)[1].strip() for r in records]


@pytest.mark.parametrize("data", _frames(), ids=["enter", "enable", "gap"])  # ids: no clock
def test_parse_event_is_from_dict(data: str) -> None:
    event = parse_event(data, "other")
    assert event == InjectionEvent.from_dict(json.loads(data), node="other")
    assert repr(event) == repr(InjectionEvent.from_dict(json.loads(data), node="other"))
    assert event.to_dict() == InjectionEvent.from_dict(json.loads(data)).to_dict()


@pytest.mark.parametrize(
    ("change", "check"),
    [
        ({"future_key": 1}, lambda e: not hasattr(e, "future_key")),  # forward compatible
        ({"node": ""}, lambda e: e.node == "given"),
        ({"node": None}, lambda e: e.node == "given"),
        ({"timestamp": 5}, lambda e: e.timestamp == 5.0 and type(e.timestamp) is float),
        ({"parameters": None}, lambda e: e.parameters == {}),
        # Ten keys, but not ours: one missing, one unknown.
        ({"future_key": 1, "one_shot": None}, lambda e: e.one_shot is None),
    ],
)
def test_anything_but_the_usual_event_goes_through_from_dict(change: dict, check: object) -> None:
    data = json.loads(_frames()[0])
    data.update(change)
    if change.get("one_shot", True) is None:
        del data["one_shot"]
    event = parse_event(json.dumps(data), "given")
    assert check(event)  # type: ignore[operator]
    assert event == InjectionEvent.from_dict(data, node="given")


@pytest.mark.parametrize(
    "data",
    ["[1]", "3", "null", '"enter"', "{", "{} {}", '{"injection": "p"}', " ", ""],
)
def test_bad_event_data_is_a_value_error(data: str) -> None:
    with pytest.raises(ValueError):
        parse_event(data, "n")


@pytest_asyncio.fixture
async def odd_node() -> AsyncIterator[str]:
    """A node whose stream sends bad events between good ones, then stays open."""
    good = json.loads(_frames()[0])
    bodies = ["[1]", "{not json", json.dumps({**good, "seq": 2}), '{"phase": 7}']
    bodies += [json.dumps({**good, "seq": 3, "extra": True})]
    done = asyncio.Event()

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for seq, body in enumerate(bodies, start=1):
            await response.write(f"id: {seq}\ndata: {body}\n\n".encode())
        await done.wait()
        return response

    app = web.Application()
    app.router.add_get(EVENTS_PATH, events)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        done.set()
        await runner.cleanup()


@pytest.mark.asyncio
async def test_bad_events_are_skipped_and_the_reader_goes_on(
    odd_node: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with injection_event_stream(odd_node) as stream:
        event = await stream.wait_for_injection("p", timeout=5, count=2)
    assert event.seq == 3
    assert [e.seq for e in stream.events] == [2, 3]
    assert sum("malformed" in r.getMessage() for r in caplog.records) == 3


@pytest.mark.parametrize(
    "event",
    [
        ("p", "lambda", "enter", 1, 2, True, {"k": "v"}),
        ("p", None, "enable", None, 0, False, {}),
        ('na"me\\ é\u2028\x00', "breakpoint", "wait", 0, 10**20, False, {"é": "\u2029\n"}),
        ("p", "parameter", "enter", 3, 1, False, {"big": "x" * 5000}),  # truncated
    ],
)
def test_the_node_encodes_the_usual_event_as_the_json_encoder_does(event: tuple) -> None:
    """The frame's template (events._encode) against the encoder it stands in for."""
    from pytest_injection_events.events import _dumps

    log = EventLog("127.0.0.1:9 é")
    record = log.publish(*event)
    body = record.frame.decode().split("data: ", 1)[1][:-2]
    assert body == _dumps(record.data)
    assert body.isascii()
    gap = gap_record("127.0.0.1:9", 1, 4, "dropped")
    assert gap.frame.decode().split("data: ", 1)[1][:-2] == _dumps(gap.data)
