"""The default stream is what the original proposal sent: one `enter` event per hit.

A consumer written for the proposal (`data: {"injection": ..., "type": ..., "shard":
...}`, matched on the name only) must not be woken by the `enable` that comes before
the hit. Every other phase is sent when asked for (docs/http-api.md, "The stream").
"""

from __future__ import annotations

import json

import aiohttp
import pytest
from sse import open_stream

from pytest_injection_events.event_schema import PHASES
from pytest_injection_events.events import EventLog
from pytest_injection_events.node import FakeNode

EVENTS = "/v2/error_injection/events"
POINT = "replication_drop"  # a declared lambda point


def hit(node: FakeNode, name: str, times: int = 1) -> None:
    def run() -> None:
        for _ in range(times):
            node.injector.inject(name, lambda: None)

    node.call(run)


def control_events(node: FakeNode, name: str) -> None:
    node.call(node.injector.enable, name, False, {"k": "v"})
    node.call(node.injector.receive_message, name)


@pytest.mark.asyncio
async def test_a_proposal_consumer_is_woken_by_the_hit_only(
    node: FakeNode, http: aiohttp.ClientSession
) -> None:
    """Matching on the name, the first event it sees is the hit: a string `type`, an int
    `shard`; no control event (those carry `shard: null`) in the default stream, live or
    replayed."""
    async with open_stream(http, node.url, default_phases=True) as stream:
        control_events(node, POINT)
        control_events(node, "undeclared")  # a control event of an unknown point: type null
        hit(node, POINT)
        first = (await stream.next()).json
    assert (first["injection"], first["phase"], first["type"], first["shard"]) == (
        POINT,
        "enter",
        "lambda",
        0,
    )
    assert first["seq"] == 5  # the four control events before it exist, but not here
    node.call(node.injector.disable, POINT)
    hit(node, "undeclared")  # enabled: its hit is an enter event with its kind
    async with open_stream(http, node.url, {"last_event_id": "0"}, default_phases=True) as again:
        replayed = [(await again.next()).json for _ in range(2)]
    assert [(e["injection"], e["phase"]) for e in replayed] == [
        (POINT, "enter"),
        ("undeclared", "enter"),
    ]
    assert all(isinstance(e["type"], str) and isinstance(e["shard"], int) for e in replayed)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("query", "phases"),
    [
        ([("phase", "message")], ["message"]),
        ([("phase", "enable"), ("phase", "message")], ["enable", "message"]),
        ([("phase", "all")], ["enable", "message", "enter"]),
        ([("phase", "all"), ("phase", "enter")], ["enable", "message", "enter"]),
        ([("phase", "enter"), ("phase", "disable")], ["enter"]),
    ],
)
async def test_other_phases_on_request(
    node: FakeNode, http: aiohttp.ClientSession, query: list[tuple[str, str]], phases: list[str]
) -> None:
    control_events(node, POINT)
    hit(node, POINT)
    node.call(node.injector.enable, "marker")
    async with open_stream(http, node.url, [*query, ("last_event_id", "0")]) as stream:
        got = []
        while len(got) < len(phases):
            got.append((await stream.next()).json["phase"])
    assert got == phases


@pytest.mark.asyncio
async def test_every_phase_name_and_all_are_accepted_others_refused(
    node: FakeNode, http: aiohttp.ClientSession
) -> None:
    assert "wait" in PHASES
    for phase in [*PHASES, "all"]:
        async with http.get(node.url + EVENTS, params={"phase": phase}) as response:
            assert response.status == 200, phase
    async with http.get(node.url + EVENTS, params={"phase": "ALL"}) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert "'ALL'" in error and "all" in error


def test_the_log_reader_default_is_enter_only() -> None:
    log = EventLog("n")
    default, everything = log.subscribe(), log.subscribe(phases=["all"])
    assert default.matches({"injection": "x", "phase": "enter"})
    assert not default.matches({"injection": "x", "phase": "enable"})
    assert everything.matches({"injection": "x", "phase": "enable"})
    assert json.loads(json.dumps(sorted(PHASES)))  # the names are plain strings
