"""The SSE decoder on strings and bytes: line ends, fields, comments, and reads cut anywhere."""

from __future__ import annotations

import json

import pytest

from pytest_injection_events.event_schema import InjectionEvent
from pytest_injection_events.sse import SSEDecoder, SSEMessage


def test_an_event_is_dispatched_by_a_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed("id: 1\ndata: {}\n") == []
    assert decoder.feed("\n") == [SSEMessage("{}", "1")]


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_every_line_end_of_the_standard(end: str) -> None:
    wire = f"retry: 1000{end}id: 7{end}event: x{end}data: a{end}data:b{end}{end}"
    decoder = SSEDecoder()
    assert decoder.feed(wire) == [SSEMessage("a\nb", "7", "x")]
    assert (decoder.retry, decoder.last_event_id) == (1000, "7")


def test_comments_count_and_dispatch_nothing() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(": ping\n: ping\n\n") == []
    assert decoder.comments == 2


def test_a_block_without_id_keeps_the_last_id_but_has_none_of_its_own() -> None:
    decoder = SSEDecoder()
    messages = decoder.feed("id: 3\ndata: a\n\ndata: b\n\n")
    assert [m.id for m in messages] == ["3", None]
    assert decoder.last_event_id == "3"


def test_field_rules() -> None:
    decoder = SSEDecoder()
    wire = "id: bad\0id\nretry: soon\ndata\ndata:  two spaces\nunknown: x\n\n"
    assert decoder.feed(wire) == [SSEMessage("\n two spaces")]
    assert (decoder.last_event_id, decoder.retry) == (None, None)


def test_blank_lines_in_a_row_dispatch_nothing_more() -> None:
    assert SSEDecoder().feed("data: a\n\n\n\n\ndata: b\n\n") == [SSEMessage("a"), SSEMessage("b")]


def test_utf8_split_inside_a_character() -> None:
    wire = "data: é\n\n".encode()
    decoder = SSEDecoder()
    assert decoder.feed(wire[:7]) == []
    assert decoder.feed(wire[7:]) == [SSEMessage("é")]


def test_a_read_cut_anywhere_gives_the_same_events() -> None:
    """A read boundary between CR and LF must not make a blank line, which would dispatch
    an `id:` before its `data:` or split a multi-line `data:` into two broken events."""

    def frame(seq: int) -> str:
        data = InjectionEvent("p", "lambda", "enter", 0, "n", seq, 1.0, seq).to_dict()
        head, tail = json.dumps(data).split(", ", 1)  # two data lines, split between tokens
        return f"id: {seq}\r\ndata: {head},\r\ndata: {tail}\r\n\r\n"

    wire = (frame(1) + ": heartbeat\r\n\r\n" + frame(2)).encode()
    for cut in range(1, len(wire) - 1):  # every place for a one-byte middle read
        decoder = SSEDecoder()
        messages = []
        for chunk in (wire[:cut], wire[cut : cut + 1], wire[cut + 1 :]):
            messages += decoder.feed(chunk)
        events = [InjectionEvent.from_dict(json.loads(m.data)) for m in messages]
        assert [(e.seq, e.enter_count) for e in events] == [(1, 1), (2, 2)], cut
        assert [m.id for m in messages] == ["1", "2"], cut
