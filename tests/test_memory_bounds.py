"""A node's memory is bounded in bytes, whatever its clients do (docs/reliability.md).

The event log keeps at most `capacity` events and `max_bytes` bytes; parameters over
4 KiB are not copied into events; readers share the kept records through their own
cursors (a replay is never a copy per reader) and a reader that takes nothing for
`stall_timeout` is dropped. The figures are the RSS of a node run as a process.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import aiohttp
import pytest
from nodeproc import NodeProcess, node_process
from sse import open_stream

from pytest_injection_events.event_schema import GAP_DROPPED
from pytest_injection_events.events import MAX_EVENT_PARAMETERS, EventLog, Subscription
from pytest_injection_events.node import FakeNode

API = "/v2/error_injection"
EVENTS = API + "/events"
MIB = 1024 * 1024


def settled_rss(node: NodeProcess, *, at_most: float = 4.0) -> int:
    """The node's RSS once it stops moving (two samples 0.2 s apart within 1 MiB). A
    bounded condition loop: what the node does with its memory cannot be awaited."""
    deadline = time.monotonic() + at_most
    last = node.rss()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = node.rss()
        if abs(now - last) < MIB:
            return max(now, last)
        last = now
    return last


def enable(conn: http.client.HTTPConnection, name: str, parameters: dict[str, str]) -> None:
    conn.request("POST", f"{API}/injection/{name}", body=json.dumps(parameters))
    response = conn.getresponse()
    response.read()
    assert response.status == 200


def growth_of_big_enables(enables: int, timeout: float) -> tuple[int, Any]:
    """The node's RSS growth over `enables` re-enables with ~1 MiB parameters, and the
    injection's state (GET) after them."""
    with node_process() as node:
        conn = http.client.HTTPConnection(node.host, node.port, timeout=timeout)
        try:
            enable(conn, "big", {"p": "0" * (MIB - 16)})
            before = settled_rss(node)
            for i in range(enables):
                enable(conn, "big", {"p": str(i % 10) * (MIB - 16)})
            grown = settled_rss(node) - before
            conn.request("GET", f"{API}/injection/big")
            return grown, json.loads(conn.getresponse().read())
        finally:
            conn.close()


def test_large_parameters_do_not_pile_up_in_events() -> None:
    """Re-enabling an injection with ~1 MiB parameters, over and over: each event used to
    keep its own copy (1,000 enables grew a node by 1 GiB). Now an event says
    `parameters_truncated` and the node keeps only the injection's current value."""
    enables = 64
    grown, state = growth_of_big_enables(enables, timeout=10)
    assert state[0]["parameters"] == [{"key": "p", "value": str((enables - 1) % 10) * (MIB - 16)}]
    print(
        f"\nmemory figures: {enables} enables of 1 MiB parameters grew the node "
        f"{grown / MIB:.1f} MiB"
    )
    assert grown < 32 * MIB, f"{enables} MiB of parameters grew the node {grown / MIB:.0f} MiB"


def fill(node: NodeProcess, events: int, pad: int) -> None:
    """`events` hits of kv_write_delay with `pad` bytes of parameters: pipelined PUTs."""
    conn = http.client.HTTPConnection(node.host, node.port, timeout=10)
    try:
        enable(conn, "kv_write_delay", {"ms": "0", "pad": "x" * pad})
    finally:
        conn.close()
    request = (
        f"PUT /kv/k?replicate=false HTTP/1.1\r\nHost: {node.host}\r\nContent-Length: 1\r\n\r\nv"
    ).encode()
    with socket.create_connection((node.host, node.port), timeout=10) as sock:
        sock.sendall(request * events)
        answered, data = 0, b""
        while answered < events:
            chunk = sock.recv(1 << 20)
            assert chunk, "the node closed the connection"
            data = data[-32:] + chunk
            answered += chunk.count(b"HTTP/1.1 200")  # a status line is never split twice
    assert answered == events


@contextmanager
def stalled_readers(node: NodeProcess, count: int, query: str) -> Iterator[list[socket.socket]]:
    """`count` connections that ask for the stream and never read a byte."""
    with ExitStack() as stack:
        readers = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((node.host, node.port))
            sock.sendall(f"GET {EVENTS}?{query} HTTP/1.1\r\nHost: {node.host}\r\n\r\n".encode())
            readers.append(sock)
        yield readers


def test_readers_replaying_a_full_log_without_reading_share_it() -> None:
    """Readers that ask for the whole log and never read: each used to hold its own copy
    of the replay (256 of them grew a node to 7.7 GiB). Now they share the kept frames,
    and each holds at most a write's worth in the node."""
    readers, events, pad = 48, 1_200, 4_000
    with node_process("--event-capacity", str(events)) as node:
        fill(node, events, pad)
        before = settled_rss(node)
        base_fds = node.open_descriptors()  # once the filling connection is gone too
        log_size = events * (pad + 300)
        with stalled_readers(node, readers, "last_event_id=0&phase=all"):
            deadline = time.monotonic() + 5  # bounded: until the node accepted them all
            while node.open_descriptors() < base_fds + readers and time.monotonic() < deadline:
                time.sleep(0.05)
            grown = settled_rss(node) - before
    print(
        f"\nmemory figures: {readers} readers replaying {events} events "
        f"({log_size / MIB:.1f} MiB) without reading grew the node {grown / MIB:.1f} MiB"
    )
    # A copy each would be readers x log_size = 240 MiB (b677046 grew 664 MiB for 2,000 events).
    assert grown < 40 * MIB, f"{readers} stalled readers grew the node {grown / MIB:.0f} MiB"


@pytest.mark.asyncio
async def test_a_reader_that_takes_nothing_is_dropped_without_new_events() -> None:
    """A reader that asks for a replay and never reads is dropped `stall_timeout` after
    its stream stops moving, though no new event comes (it used to keep its slot and
    its replay for as long as nothing was published)."""
    with FakeNode(stall_timeout=0.3, max_clients=1) as node:

        def publish() -> None:
            node.injector.enable("p", parameters={"pad": "x" * 4000})
            for _ in range(1_500):  # 6 MB: more than the socket buffers take
                node.injector.inject("p", lambda: None)

        node.call(publish)
        with stalled_readers_local(node) as _:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while node.call(lambda: node.event_log.subscriber_count) != 1:
                assert loop.time() < deadline
                await asyncio.sleep(0.01)
            while node.call(lambda: node.event_log.subscriber_count) != 0:
                assert loop.time() < deadline, "the stalled reader was never dropped"
                await asyncio.sleep(0.02)
            async with aiohttp.ClientSession() as http:
                async with open_stream(http, node.url) as stream:  # its slot is free again
                    assert stream.response.status == 200


@contextmanager
def stalled_readers_local(node: FakeNode) -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", node.port))
        query = "last_event_id=0&phase=all"
        sock.sendall(f"GET {EVENTS}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        yield sock


@pytest.mark.asyncio
async def test_large_parameters_are_truncated_in_events_not_in_the_api(
    node: FakeNode, http: aiohttp.ClientSession
) -> None:
    small = {"k": "v" * 4000}  # {"k":"vvv..."} is 4,008 bytes: kept
    large = {"k": "v" * MAX_EVENT_PARAMETERS}  # over 4 KiB encoded
    escaped = {"k": "\u2028" * 700}  # 700 characters, 4,208 bytes escaped: over
    for name, parameters in (("small", small), ("large", large), ("escaped", escaped)):
        async with http.post(f"{node.url}{API}/injection/{name}", json=parameters) as r:
            assert r.status == 200
    async with open_stream(http, node.url, {"last_event_id": "0", "phase": "enable"}) as stream:
        events = [(await stream.next()).json for _ in range(3)]
    assert events[0]["parameters"] == small and "parameters_truncated" not in events[0]
    for event in events[1:]:
        assert event["parameters"] is None and event["parameters_truncated"] is True
    async with http.get(f"{node.url}{API}/injection/large") as r:
        assert (await r.json())[0]["parameters"] == [{"key": "k", "value": large["k"]}]


def test_the_log_keeps_what_fits_its_byte_budget() -> None:
    log = EventLog("n", capacity=1_000, max_bytes=100_000)
    for _ in range(300):
        log.publish("p", "lambda", "enter", 0, 1, False, {"pad": "x" * 3000})
    assert log.kept_bytes <= 100_000
    assert 20 <= log.kept < 40 and log.first_kept_seq == 301 - log.kept
    reader = log.subscribe(after=0, phases=["all"])
    batch = reader._take(10_000)
    assert (batch[0].data["phase"], batch[0].data["reason"]) == ("gap", GAP_DROPPED)
    assert (batch[0].data["missed_from"], batch[0].data["missed_to"]) == (
        1,
        log.first_kept_seq - 1,
    )
    assert [r.seq for r in batch[1:]] == list(range(log.first_kept_seq, 301))
    assert all(r is log.since(0)[i] for i, r in enumerate(batch[1:]))  # the same records


def test_a_hit_does_no_work_per_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers follow the one log with their own cursors: publishing touches none of
    them, so a hit costs the same with 100 readers as with 1."""
    log = EventLog("n")
    readers = [log.subscribe(phases=["all"]) for _ in range(100)]
    touched: list[object] = []
    for name in ("matches", "_offer", "_take"):
        if hasattr(Subscription, name):
            original = getattr(Subscription, name)
            monkeypatch.setattr(
                Subscription,
                name,
                lambda self, *a, _o=original, **k: touched.append(self) or _o(self, *a, **k),
            )
    for _ in range(10):
        log.publish("p", "lambda", "enter", 0, 1, False, {})
    assert touched == []
    assert all(reader.backlog == 10 for reader in readers)


FULL_SCALE = pytest.mark.skipif(
    not os.environ.get("INJECTION_EVENTS_FULL_SCALE"),
    reason="the full-size figures of docs/reliability.md take a minute and 1 GiB of uploads: "
    "set INJECTION_EVENTS_FULL_SCALE=1",
)


@FULL_SCALE
def test_full_scale_1000_enables_of_1_mib() -> None:
    grown, _ = growth_of_big_enables(1_000, timeout=30)
    print(f"\nmemory figures: 1,000 enables of 1 MiB grew the node {grown / MIB:.1f} MiB")
    assert grown < 512 * MIB


@FULL_SCALE
def test_full_scale_256_readers_replaying_a_full_log() -> None:
    """The default log (10,000 events) filled with ~4 KiB events, 256 readers asking for
    all of it and never reading."""
    readers, events, pad = 256, 10_000, 4_000
    with node_process() as node:
        fill(node, events, pad)
        before = settled_rss(node)
        base_fds = node.open_descriptors()
        with stalled_readers(node, readers, "last_event_id=0&phase=all"):
            deadline = time.monotonic() + 10
            while node.open_descriptors() < base_fds + readers and time.monotonic() < deadline:
                time.sleep(0.05)
            grown = settled_rss(node) - before
    print(
        f"\nmemory figures: 256 readers replaying 10,000 events of 4 KiB without reading "
        f"grew the node {grown / MIB:.1f} MiB (log {before / MIB:.0f} MiB RSS before)"
    )
    assert grown < 512 * MIB
