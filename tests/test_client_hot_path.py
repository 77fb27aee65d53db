"""The client's fast paths give what the general rules give: the SSE decoder's common block,
the event built straight from the decoded object, and bad events skipped, not fatal."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from apps import serve
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_injection_events import injection_event_stream, stream_source
from pytest_injection_events.errors import EventsLost
from pytest_injection_events.event_schema import InjectionEvent
from pytest_injection_events.events import EventLog, _dumps, gap_record
from pytest_injection_events.protocol import EVENTS_PATH
from pytest_injection_events.sse import SSEDecoder, SSEMessage
from pytest_injection_events.stream_source import parse_event
from pytest_injection_events.waits import Wait, WaitEngine

#: Both decoders the hot path may run on: orjson (the `speedups` extra, in the dev extra)
#: and the standard library's scanner, what a client without the extra uses.
DECODERS = {"stdlib": stream_source._scan_whole}
try:
    import orjson

    DECODERS["orjson"] = orjson.loads
except ImportError:  # pragma: no cover - the dev extra installs it
    pass


@pytest.fixture(params=sorted(DECODERS))
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(stream_source, "fast_loads", DECODERS[request.param])
    return str(request.param)


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
    ids = [m.id for m in expected if m.id is not None]
    assert SSEDecoder().feed_data(wire.encode()) == (
        [m.data for m in expected],
        ids[-1] if ids else None,
    )


_USUAL_BLOCKS = st.builds(
    lambda n, data: f"id: {n}\ndata: {data}\n\n",
    st.integers(0, 10**6),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=8),
)
_ODD_BLOCKS = st.sampled_from(
    [
        ": heartbeat\n\n",
        "data: no id\n\n",
        "id: 7\n\n",
        "id: 8\ndata: a\ndata: b\n\n",
        "event: x\nid: 9\ndata: e\n\n",
        "id: 1\0\ndata: nul\n\n",
        "id: 10\r\ndata: crlf\r\n\r\n",
        "id:11\ndata:tight\n\n",
        "id: 12\ndata: c\nretry: 5\nid: 13\ndata: d\n\n",  # three lines, no blank
        "\n",
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    blocks=st.lists(_USUAL_BLOCKS | _ODD_BLOCKS, max_size=12),
    cuts=st.lists(st.integers(0, 400), max_size=4),
)
def test_feed_data_gives_what_feed_gives_however_the_reads_fall(
    blocks: list[str], cuts: list[int]
) -> None:
    """Whole chunks of usual blocks take the fast cut; any other chunk, or a chunk cut
    anywhere (inside a block, a CRLF, a character), the decoder's rules: same result."""
    wire = "".join(blocks).encode()
    points = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
    reads = [wire[a:b] for a, b in itertools.pairwise(points)]
    fast, rules = SSEDecoder(), SSEDecoder()
    for read in reads:
        messages = rules.feed_fields(read)
        ids = [event_id for _, event_id, _ in messages if event_id is not None]
        assert fast.feed_data(read) == ([data for data, _, _ in messages], ids[-1] if ids else None)
        assert fast.last_event_id == rules.last_event_id


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
def test_parse_event_is_from_dict(data: str, decoder: str) -> None:
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
        # What orjson refuses and json takes: the reference decides.
        ({"timestamp": float("nan")}, lambda e: e.timestamp != e.timestamp),
        ({"seq": 2**70}, lambda e: e.seq == 2**70),
    ],
)
def test_anything_but_the_usual_event_goes_through_from_dict(
    change: dict, check: object, decoder: str
) -> None:
    data = json.loads(_frames()[0])
    data.update(change)
    if change.get("one_shot", True) is None:
        del data["one_shot"]
    event = parse_event(json.dumps(data), "given")
    assert check(event)  # type: ignore[operator]
    assert repr(event) == repr(InjectionEvent.from_dict(data, node="given"))  # NaN != NaN


@pytest.mark.parametrize(
    "data",
    ["[1]", "3", "null", '"enter"', "{", "{} {}", '{"injection": "p"}', " ", ""],
)
def test_bad_event_data_is_a_value_error(data: str, decoder: str) -> None:
    with pytest.raises(ValueError):
        parse_event(data, "n")


_names = st.text(min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    injection=_names,
    kind=st.sampled_from([None, "lambda", "sleep", "handler", "breakpoint"]),
    phase=st.sampled_from(["enter", "exit", "enable", "disable", "wait", "message"]),
    shard=st.none() | st.integers(0, 64),
    seq=st.integers(1, 2**63 - 1),
    timestamp=st.floats(0, 4e9, allow_nan=False),
    enter_count=st.integers(0, 2**31),
    one_shot=st.booleans(),
    parameters=st.dictionaries(_names, st.text(max_size=20), max_size=3),
)
def test_both_decoders_build_what_from_dict_builds(
    injection: str,
    kind: str | None,
    phase: str,
    shard: int | None,
    seq: int,
    timestamp: float,
    enter_count: int,
    one_shot: bool,
    parameters: dict[str, str],
) -> None:
    """Any event our node writes, read through either decoder (`fast_loads` is swapped by
    hand: hypothesis runs every example inside one test, outside function fixtures)."""
    data = dict(
        injection=injection,
        type=kind,
        phase=phase,
        shard=shard,
        node="127.0.0.1:9",
        seq=seq,
        timestamp=timestamp,
        enter_count=enter_count,
        one_shot=one_shot,
        parameters=parameters,
    )
    wire = _dumps(data)
    expected = InjectionEvent.from_dict(json.loads(wire))
    chosen = stream_source.fast_loads
    try:
        for loads in DECODERS.values():
            stream_source.fast_loads = loads
            event = parse_event(wire, "other")
            assert event == expected
            assert repr(event) == repr(expected)
    finally:
        stream_source.fast_loads = chosen


def test_json_decoder_names_the_one_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_source, "fast_loads", stream_source._scan_whole)
    assert stream_source.json_decoder() == "json (stdlib)"
    if "orjson" in DECODERS:
        monkeypatch.setattr(stream_source, "fast_loads", DECODERS["orjson"])
        assert stream_source.json_decoder() == f"orjson {orjson.__version__}"


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
        ("p", "lambda", "enter", 1, 1, False, {}),
        ("p", "lambda", "enter", True, 1, False, {}),  # not the cached prefix of shard 1
    ],
)
def test_the_node_encodes_the_usual_event_as_the_json_encoder_does(event: tuple) -> None:
    """The frame's template (events._frame) against the encoder it stands in for."""
    from pytest_injection_events.events import _dumps

    log = EventLog("127.0.0.1:9 é")
    record = log.publish(*event)
    body = record.frame.decode().split("data: ", 1)[1][:-2]
    assert body == _dumps(record.data)
    assert body.isascii()
    gap = gap_record("127.0.0.1:9", 1, 4, "dropped")
    assert gap.frame.decode().split("data: ", 1)[1][:-2] == _dumps(gap.data)


@pytest.mark.asyncio
async def test_one_read_of_mixed_events_is_delivered_in_the_node_order() -> None:
    """A read's usual events go to the waits in one batch; a malformed event, a gap and
    an event of another shape between them keep their place (issue 13's batching)."""
    usual = json.loads(_frames()[0])
    odd = {**usual, "seq": 3, "future_key": True}  # not the usual shape: from_dict
    gap = json.loads(gap_record("127.0.0.1:9", 4, 5, "dropped").frame.decode().split("data: ")[1])
    frames = [
        (1, json.dumps({**usual, "seq": 1})),
        (2, "{not json"),
        (2, json.dumps({**usual, "seq": 2, "injection": "q"})),
        (3, json.dumps(odd)),
        (5, json.dumps(gap)),
        (6, json.dumps({**usual, "seq": 6})),
        (7, json.dumps({**usual, "seq": 7})),
    ]
    wire = "".join(f"id: {n}\ndata: {body}\n\n" for n, body in frames).encode()
    done = asyncio.Event()

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(wire)  # one write: most likely one read, one batch
        await done.wait()
        return response

    runner, port = await serve(events, EVENTS_PATH)
    try:
        async with injection_event_stream(f"http://127.0.0.1:{port}") as stream:
            seen = []
            async for event in stream:
                seen.append((event.phase, event.seq, event.injection))
                if event.seq == 7:
                    break
            source = next(iter(stream._following.sources.values()))
            assert source.last_id == "7"
            assert source.seq == 7
            assert [g.missed_from for g in stream.gaps] == [4]
            last = await stream.wait_for_injection("p", count=4, timeout=5)
    finally:
        done.set()
        await runner.cleanup()
    assert seen == [
        ("enter", 1, "p"),
        ("enter", 2, "q"),
        ("enter", 3, "p"),
        ("gap", None, None),
        ("enter", 6, "p"),
        ("enter", 7, "p"),
    ]
    assert last.seq == 7  # 1, 3 (from_dict's) and 6 are taken with it


def _event(seq: int, injection: str = "p", phase: str = "enter") -> InjectionEvent:
    return InjectionEvent(injection, "lambda", phase, 0, "127.0.0.1:9", seq, float(seq))


@pytest.mark.asyncio
async def test_a_batch_completes_a_wait_midway_and_keeps_the_rest_for_the_next() -> None:
    engine = WaitEngine()
    first = Wait(lambda e, _k, _l: e.injection == "p", 2, None, True, "p twice")
    engine.waits.append(first)
    engine.deliver_many([_event(1), _event(2, "q"), _event(3), _event(4)], "n", 0)
    assert first.future.result().seq == 3
    assert engine.waits == []
    later = Wait(lambda e, _k, _l: e.injection == "p", 1, None, True, "p")
    assert engine.take_existing(later, "p") is not None and later.taken == [3]
    other = Wait(lambda e, _k, _l: e.injection == "q", 1, None, True, "q")
    assert engine.take_existing(other, "q") is not None and other.taken == [1]
    assert [e.seq for e in engine.events] == [1, 2, 3, 4]


@pytest.mark.asyncio
async def test_a_gap_inside_a_batch_fails_the_wait_pending_then_and_keeps_what_follows() -> None:
    engine = WaitEngine()
    pending = Wait(lambda e, _k, _l: e.injection == "p", 3, "n", True, "p thrice")
    engine.waits.append(pending)
    lost = InjectionEvent(None, None, "gap", None, "127.0.0.1:9", None, 2.0, missed_from=2)
    engine.deliver_many([_event(1), lost, _event(3)], "n", 0)
    with pytest.raises(EventsLost):
        pending.future.result()
    assert pending.taken == []  # given back: the event before the gap stays unread
    assert [e.seq for e in engine.events] == [1, None, 3]
    again = Wait(lambda e, _k, _l: e.injection == "p", 2, None, True, "p twice")
    assert engine.take_existing(again, "p") is not None and again.taken == [0, 2]
