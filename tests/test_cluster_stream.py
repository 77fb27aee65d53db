"""A stream that follows a cluster the way ScyllaDB's cluster tests drive one: servers
added, restarted and stopped in the test body, waits naming the server, marks, and
the three sources a node can offer (its event stream, its log, `/enters` polling).

Every scenario runs on each source: `stream` servers serve `/events`; `log` and
`poll` servers are ScyllaDB-like (`events=False`), read through their log file or
by polling. Servers log the framework's DEBUG lines, so a sleep point's hit is a
`Triggering sleep injection` line for the log source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from manager import Manager, ServerInfo
from proxy import HOLD, REFUSE, Proxy

from pytest_injection_events import (
    InjectionApi,
    InjectionEventStream,
    InjectionTimeout,
    NotAnInjectionNode,
    UnsupportedWait,
    injection_event_stream,
)
from pytest_injection_events.protocol import format_log_line

SOURCES = ["stream", "log", "poll"]
POINT = "kv_write_delay"  # a sleep point on every write: enabled with ms=0, it only counts
BREAKPOINT = "kv_write_before_apply"


@pytest_asyncio.fixture
async def manager() -> AsyncIterator[Manager]:
    async with Manager(log_level="debug") as manager:
        yield manager


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def servers_add(
    manager: Manager, stream: InjectionEventStream, source: str, n: int
) -> list[ServerInfo]:
    """Add servers of one kind and attach them as a test of that kind would."""
    servers = await manager.servers_add(n, events=source == "stream")
    for server in servers:
        await attach(manager, stream, source, server)
    return servers


async def attach(
    manager: Manager, stream: InjectionEventStream, source: str, server: ServerInfo
) -> None:
    log = await manager.server_open_log(server.server_id) if source == "log" else None
    node = await stream.add_node(server, log=log)
    expected = {
        "stream": "event stream",
        "log": f"log {log and log.file}",
        "poll": "/enters polling",
    }
    assert node.source == expected[source]


async def write(http: aiohttp.ClientSession, server: ServerInfo, key: str = "k") -> None:
    async with http.put(f"{server.url}/kv/{key}", data=b"v", params={"replicate": "false"}) as r:
        assert r.status == 200, await r.text()


def open_files() -> list[str]:
    """What this process has open, where /proc says (Linux); else nothing."""
    if not os.path.isdir("/proc/self/fd"):
        return []
    return [os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")]


async def enable(server: ServerInfo, name: str = POINT, one_shot: bool = False) -> None:
    parameters = {"ms": 0} if name == POINT else None
    await InjectionApi(server).enable_injection(name, one_shot=one_shot, parameters=parameters)


# -- each wait returns its node's hit ---------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("source", SOURCES)
async def test_servers_added_in_the_body_and_waits_that_name_them(
    source: str, manager: Manager, http: aiohttp.ClientSession
) -> None:
    async with injection_event_stream() as stream:
        assert stream.nodes == []
        servers = await servers_add(manager, stream, source, 3)
        for server in servers:
            await enable(server)
        await write(http, servers[2])
        await write(http, servers[0])
        third = await stream.wait_for_injection(POINT, node=servers[2], timeout=10)
        first = await stream.wait_for_injection(POINT, node=servers[0], timeout=10)
        with pytest.raises(InjectionTimeout) as caught:
            await stream.wait_for_injection(POINT, node=servers[1], timeout=0.2)
    assert third.node == stream.node_id(servers[2]) != first.node == stream.node_id(servers[0])
    assert (third.injection, third.phase) == (POINT, "enter")
    assert f"on {stream.node_id(servers[1])}" in str(caught.value).splitlines()[0]


@pytest.mark.asyncio
@pytest.mark.parametrize("source", SOURCES)
async def test_a_breakpoint_parks_and_the_wait_sees_it_on_its_node(
    source: str, manager: Manager, http: aiohttp.ClientSession
) -> None:
    async with injection_event_stream() as stream:
        servers = await servers_add(manager, stream, source, 2)
        target = servers[1]
        await enable(target, BREAKPOINT, one_shot=True)
        writing = asyncio.create_task(write(http, target))
        event = await stream.wait_for_injection(BREAKPOINT, node=target, timeout=10)
        assert not writing.done()  # parked right now
        await InjectionApi(target).message_injection(BREAKPOINT)
        await writing
        if source != "poll":  # polling sees `enter` only
            resumed = await stream.wait_for_injection(
                BREAKPOINT, phase="resume", node=target, timeout=10
            )
            assert resumed.node == event.node
    assert event.node == stream.node_id(target)
    entered = [e for e in stream.events if e.phase == "enter" and e.node == event.node]
    assert len(entered) == 1  # at debug level too, where the log says it twice


# -- marks: what came before never satisfies a wait ---------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("source", SOURCES)
async def test_hits_before_a_mark_never_satisfy_a_wait_after_it(
    source: str, manager: Manager, http: aiohttp.ClientSession
) -> None:
    async with injection_event_stream() as stream:
        first, second = await servers_add(manager, stream, source, 2)
        for server in (first, second):
            await enable(server)
        await write(http, first)
        await write(http, first)
        await write(http, second)
        await stream.wait_for_injection(POINT, node=first, count=2, consume=False, timeout=10)
        mark = await stream.mark(first)
        with pytest.raises(InjectionTimeout):
            await stream.wait_for_injection(POINT, after=mark, timeout=0.2)
        await write(http, second)  # after the mark, but on another node
        with pytest.raises(InjectionTimeout):
            await stream.wait_for_injection(POINT, node=first, after=mark, timeout=0.2)
        await write(http, first)
        after = await stream.wait_for_injection(POINT, after=mark, timeout=10)
        # What came before the mark was neither returned nor consumed.
        before = await stream.wait_for_injection(POINT, node=first, count=2, timeout=10)
    assert after.node == before.node == stream.node_id(first)
    assert after.seq > mark.seq >= before.seq


@pytest.mark.asyncio
@pytest.mark.parametrize("source", SOURCES)
async def test_a_mark_taken_in_sync_code(
    source: str, manager: Manager, http: aiohttp.ClientSession
) -> None:
    (server,) = await manager.servers_add(1, events=source == "stream")
    log = await manager.server_open_log(server.server_id) if source == "log" else None
    await enable(server)
    await write(http, server)
    with InjectionEventStream() as stream:
        await asyncio.to_thread(stream.add_node_sync, server, log=log)
        mark = await asyncio.to_thread(stream.mark_sync, server)
        await write(http, server)
        event = await asyncio.to_thread(
            stream.wait_for_injection_sync, POINT, node=server, after=mark, timeout=10
        )
    assert event.seq is not None and event.seq > mark.seq


# -- attached late ----------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("source", ["stream", "log"])
async def test_a_node_attached_late_shows_what_it_did_since_the_stream_opened(
    source: str, manager: Manager, http: aiohttp.ClientSession
) -> None:
    (early,) = await manager.servers_add(1, events=source == "stream")
    await enable(early)
    await write(http, early)  # before the stream opened: never seen
    await next_millisecond(time.time())
    async with injection_event_stream() as stream:
        await next_millisecond(stream.opened_at)
        await write(http, early)
        (late,) = await manager.servers_add(1, events=source == "stream")
        await enable(late)
        await write(http, late)
        # Attached only now, by the waits (stream) or with their logs (log).
        if source == "log":
            for server in (early, late):
                await attach(manager, stream, source, server)
        got_late = await stream.wait_for_injection(POINT, node=late, timeout=10)
        got_early = await stream.wait_for_injection(POINT, node=early, timeout=10)
        with pytest.raises(InjectionTimeout):
            await stream.wait_for_injection(POINT, node=early, timeout=0.2)
    assert got_late.node == stream.node_id(late) and got_early.node == stream.node_id(early)
    assert got_early.timestamp >= stream.opened_at - 0.001


async def next_millisecond(moment: float) -> None:
    """A log line has milliseconds, and a late attach reads from the stream's opening
    millisecond on: keep what the test does before and after the opening in other ones."""
    await asyncio.sleep(max(0.0, (int(moment * 1000) + 1) / 1000 - time.time()))


@pytest.mark.asyncio
async def test_polling_counts_from_the_attach_and_says_so(
    manager: Manager, http: aiohttp.ClientSession
) -> None:
    (server,) = await manager.servers_add(1, events=False)
    await enable(server)
    await write(http, server)
    async with injection_event_stream() as stream:
        await write(http, server)  # before the attach: polling has no history
        with pytest.raises(InjectionTimeout) as caught:
            await stream.wait_for_injection(POINT, node=server, timeout=0.2)
        await write(http, server)
        event = await stream.wait_for_injection(POINT, node=server, timeout=10)
    assert "is read through /enters polling" in str(caught.value)
    assert event.enter_count == 3


# -- restarts ---------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("source", SOURCES)
async def test_a_wait_spanning_a_restart_sees_both_lives(
    source: str, manager: Manager, http: aiohttp.ClientSession
) -> None:
    async with injection_event_stream() as stream:
        (server,) = await servers_add(manager, stream, source, 1)
        await enable(server)
        waiting = asyncio.create_task(
            stream.wait_for_injection(POINT, node=server, count=2, timeout=20)
        )
        await write(http, server)
        await manager.server_restart(server.server_id)
        await enable(server)  # a restarted server has nothing enabled
        await write(http, server)
        if source == "poll":
            # Polling counts hits, and a count back at its old value by the next poll
            # hides the restart: a second hit makes the new life show either way.
            await write(http, server)
        last = await waiting
        assert last.node == stream.node_id(server)
        if source == "stream":
            assert [node for node, _ in stream.restarts] == [stream.node_id(server)]


@pytest.mark.asyncio
async def test_a_restart_then_a_cut_loses_nothing_on_the_event_stream(
    manager: Manager, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """The new life's events made while the link is down are replayed from its start,
    not from the old life's last id (which would skip them, with no gap)."""
    (server,) = await manager.servers_add(1)
    restarted = asyncio.Event()

    class Restarts(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "restarted" in record.getMessage():
                restarted.set()

    handler = Restarts()
    logging.getLogger("pytest_injection_events.client").addHandler(handler)
    try:
        async with Proxy(server.url) as proxy, injection_event_stream(proxy.url) as stream:
            await enable(server)
            for _ in range(4):
                await write(http, server)
            await stream.wait_for_injection(POINT, count=4, timeout=10)
            await manager.server_restart(server.server_id)
            await restarted.wait()  # the reader is on the new life, and got none of its events
            proxy.down(REFUSE)
            proxy.cut()
            await enable(server)
            for _ in range(2):
                await write(http, server)
            proxy.up()
            await stream.wait_for_injection(POINT, count=2, timeout=10)
    finally:
        logging.getLogger("pytest_injection_events.client").removeHandler(handler)
    new_life = stream.events[5:]
    assert [(e.phase, e.seq) for e in new_life] == [("enable", 1), ("enter", 2), ("enter", 3)]
    assert stream.gaps == []


@pytest.mark.asyncio
async def test_a_log_truncated_is_a_new_life_read_from_its_start(
    manager: Manager, http: aiohttp.ClientSession
) -> None:
    async with injection_event_stream() as stream:
        (server,) = await servers_add(manager, stream, "log", 1)
        log = await manager.server_open_log(server.server_id)
        await enable(server)
        await write(http, server)
        await stream.wait_for_injection(POINT, node=server, timeout=10)
        os.truncate(log.file, 0)  # as `copytruncate` log rotation does
        await write(http, server)
        await write(http, server)
        last = await stream.wait_for_injection(POINT, node=server, count=2, timeout=10)
    assert last.seq == 2  # numbered again from the new file's start
    assert [node for node, _ in stream.restarts] == [stream.node_id(server)]


# -- what cannot work is said at once ----------------------------------------------------


@pytest.mark.asyncio
async def test_a_phase_the_source_cannot_give_is_refused_at_once(manager: Manager) -> None:
    async with injection_event_stream() as stream:
        polled, logged = await manager.servers_add(2, events=False)
        await attach(manager, stream, "poll", polled)
        await attach(manager, stream, "log", logged)
        with pytest.raises(UnsupportedWait, match=r"log=\.\.\.\)\) or use a node"):
            await stream.wait_for_injection(BREAKPOINT, phase="resume", node=polled, timeout=30)
        with pytest.raises(UnsupportedWait, match=r"'timeout' cannot be seen on .* use a node"):
            await stream.wait_for_injection(BREAKPOINT, phase="timeout", node=logged, timeout=30)
        with pytest.raises(ValueError):  # UnsupportedWait is a ValueError
            await stream.wait_for_injection(POINT, shard=0, node=polled, timeout=30)


@pytest.mark.asyncio
async def test_a_target_that_is_not_an_injection_node_is_refused_at_attach() -> None:
    app = web.Application()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with injection_event_stream() as stream:
            with pytest.raises(NotAnInjectionNode, match="is not an injection node"):
                await stream.add_node(url)
            with pytest.raises(ConnectionError):  # and a ConnectionError
                await stream.wait_for_injection(POINT, node=url, timeout=30)
            assert stream.nodes == []
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_a_wait_on_an_empty_stream_says_what_to_do() -> None:
    async with injection_event_stream() as stream:
        with pytest.raises(ValueError, match="follows no node: name one with node="):
            await stream.wait_for_injection(POINT, timeout=30)


@pytest.mark.asyncio
async def test_nodes_removed_and_a_log_added_later(
    manager: Manager, http: aiohttp.ClientSession
) -> None:
    async with injection_event_stream() as stream:
        (server,) = await manager.servers_add(1, events=False)
        await stream.add_node(server)  # polled, then its log is given: read the log instead
        await attach(manager, stream, "log", server)
        assert [n.source for n in stream.nodes] == [
            f"log {manager.node(server.server_id).log_path}"
        ]
        await stream.remove_node(server)
        assert stream.nodes == []
        with pytest.raises(ValueError, match="is not a node this stream follows"):
            await stream.remove_node(server)


@pytest.mark.asyncio
async def test_a_wait_on_frozen_nodes_raises_within_its_timeout_and_half_a_second(
    manager: Manager,
) -> None:
    """The hints of the timeout message ask every node at once, for 0.5 s at most: frozen
    nodes (SIGSTOP: they accept and never answer) cannot hold the failure back."""
    servers = await manager.servers_add(3)
    async with contextlib.AsyncExitStack() as stack:
        proxies = [await stack.enter_async_context(Proxy(s.url)) for s in servers]
        stream = await stack.enter_async_context(injection_event_stream([p.url for p in proxies]))
        for proxy in proxies:
            proxy.freeze()  # the streams go silent
            proxy.down(HOLD)  # and new requests (the hints) get no answer
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(InjectionTimeout) as caught:
            await stream.wait_for_injection(POINT, timeout=0.2)
        took = loop.time() - started
    assert took < 0.2 + 0.5 + 0.3  # 0.3: scheduling on a busy machine; it was 2 s a node
    assert "enabled on" not in str(caught.value)  # no node answered in time


@pytest.mark.asyncio
async def test_bursts_on_several_servers_arrive_whole_in_each_servers_order(
    manager: Manager,
) -> None:
    """Hundreds of hits in one loop turn reach a client as reads of many events each,
    delivered to the waits a read at a time (issue 13): nothing lost, nothing out of its
    node's order, across a restart, beside a server read from its log."""
    burst_point = "kv_burst"

    def burst(server: ServerInfo, hits: int) -> Any:
        injector = manager.node(server.server_id).injector
        return asyncio.to_thread(
            manager.node(server.server_id).call,
            lambda: [injector.inject(burst_point, lambda: None) for _ in range(hits)],
        )

    async with injection_event_stream() as stream:
        fast = await servers_add(manager, stream, "stream", 2)
        (logged,) = await servers_add(manager, stream, "log", 1)
        for server in [*fast, logged]:
            await enable(server, burst_point)
        await asyncio.gather(burst(fast[0], 300), burst(fast[1], 300), burst(logged, 40))
        for server, hits in ((fast[0], 300), (fast[1], 300), (logged, 40)):
            await stream.wait_for_injection(burst_point, node=server, count=hits, timeout=10)
        await manager.server_restart(fast[0].server_id)
        await enable(fast[0], burst_point)
        await burst(fast[0], 200)
        last = await stream.wait_for_injection(burst_point, node=fast[0], count=200, timeout=10)

    def seqs(server: ServerInfo) -> list[int | None]:
        return [e.seq for e in stream.events if e.node == stream.node_id(server)]

    # Each server: its `enable` (seq 1), then every hit, in order; the restarted one
    # starts again at 1. The log server's lines are numbered in file order.
    assert seqs(fast[0]) == [*range(1, 302), *range(1, 202)]
    assert seqs(fast[1]) == list(range(1, 302))
    assert seqs(logged) == list(range(1, 42))
    assert last.seq == 201
    assert stream.gaps == []


@pytest.mark.asyncio
async def test_a_predicate_that_raises_fails_its_wait_and_the_reading_goes_on(
    manager: Manager, http: aiohttp.ClientSession
) -> None:
    """The predicate runs where the event is delivered, in the node's reader: its error
    is the waiting test's, and the reader goes on for every other wait."""

    def broken(event: Any) -> bool:
        raise LookupError(f"no such field in {event.seq}")

    async with injection_event_stream() as stream:
        servers = await servers_add(manager, stream, "stream", 2)
        for server in servers:
            await enable(server)
        waiting = asyncio.create_task(
            stream.wait_for_injection(POINT, node=servers[0], predicate=broken, timeout=10)
        )
        other = asyncio.create_task(stream.wait_for_injection(POINT, node=servers[0], timeout=10))
        await write(http, servers[0])
        with pytest.raises(LookupError, match="no such field"):
            await waiting
        assert (await other).node == stream.node_id(servers[0])
        await write(http, servers[1])
        await write(http, servers[0])
        later = await stream.wait_for_injection(POINT, node=servers[0], timeout=10)
        assert later.seq == 3  # enable, the first write, this one: nothing lost on the way
        await stream.wait_for_injection(POINT, node=servers[1], timeout=10)


@pytest.mark.asyncio
async def test_a_log_replaced_or_removed_and_written_again_is_followed_by_its_path(
    manager: Manager, tmp_path: Any
) -> None:
    """Rotation by rename, then a removed and recreated file: each is a new life read
    from its first line, and the file kept open between reads is let go at the end."""
    server = await manager.server_add(events=False)
    path = tmp_path / "server.log"

    def append(target: Any, *names: str, ago: float = 0.0) -> None:
        with open(target, "a", encoding="utf-8") as log:
            for name in names:
                line = f'Triggering injection "{name}"'
                log.write(format_log_line("DEBUG", time.time() - ago, 0, line))

    # Stamped before the stream opened (a line of its own millisecond would count): no event.
    append(path, "before", ago=5)
    async with injection_event_stream() as stream:
        await stream.add_node(server, log=path)
        append(path, "p")
        first = await stream.wait_for_injection("p", node=server, timeout=10)
        os.rename(path, tmp_path / "server.log.1")  # logrotate's default: a new file
        append(path, "p", "p")
        append(tmp_path / "server.log.1", "p")  # the old file, no longer the path's
        rotated = await stream.wait_for_injection("p", node=server, count=2, timeout=10)
        os.remove(path)
        append(path, "p")
        recreated = await stream.wait_for_injection("p", node=server, timeout=10)
        assert [e.seq for e in (first, rotated, recreated)] == [1, 2, 1]
        assert len(stream.restarts) == 2
        assert [e.injection for e in stream.events] == ["p"] * 4
    assert not [name for name in open_files() if name.startswith(str(path))]
