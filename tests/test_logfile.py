"""The drop-in for ScyllaDB's log object: framework lines from events, the rest from
the real log, marks of both, from async and sync code (docs/migration.md)."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from manager import Manager, ScyllaLogFile, ServerInfo

from pytest_injection_events import InjectionApi, injection_event_stream
from pytest_injection_events.event_schema import InjectionEvent
from pytest_injection_events.logfile import (
    FrameworkPattern,
    InjectionLogFile,
    LogMark,
    NotAFrameworkLine,
    framework_pattern,
    log_line,
)
from pytest_injection_events.node import FakeNode
from pytest_injection_events.protocol import parse_framework_message, parse_log_line

BREAKPOINT = "kv_write_before_apply"
HANDLER = "kv_write_key_pause"
SOURCES = ["stream", "log"]


@pytest_asyncio.fixture
async def manager() -> AsyncIterator[Manager]:
    async with Manager() as manager:
        yield manager


async def put(http: aiohttp.ClientSession, server: ServerInfo, key: str) -> int:
    async with http.put(f"{server.url}/kv/{key}?replicate=false", data=b"v") as response:
        return response.status


# ----------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("p: waiting for message", FrameworkPattern("p", "enter", True)),
        ("raft/apply-entry: waiting", FrameworkPattern("raft/apply-entry", "enter", False)),
        ("p: message received$", FrameworkPattern("p", "resume", True)),
        ("a\\.b: message", FrameworkPattern("a.b", "resume", False)),
        ('Triggering sleep injection "p"', FrameworkPattern("p", "enter", True)),
        ('Disabling injection "p"', FrameworkPattern("p", "disable", True)),
        ("p: waiting for peers", None),
        ("p: waiting$", None),
        ("kv_.*: waiting", None),
        ("Disabling all injections", None),
        ("Injected value \\[1\\] for parameter \\[k\\], injection \\[p\\]", None),
    ],
)
def test_which_patterns_are_framework_lines(pattern: str, expected: object) -> None:
    assert framework_pattern(pattern) == expected


def _event(kind: str, phase: str, **extra: object) -> InjectionEvent:
    fields: dict[str, object] = {
        "injection": "raft/apply-entry",
        "type": kind,
        "phase": phase,
        "shard": 3,
        "node": "127.0.0.1:1",
        "seq": 1,
        "timestamp": 1767000000.25,
        "enter_count": 1,
        "one_shot": True,
        "parameters": {},
    }
    fields.update(extra)
    return InjectionEvent(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "phase", "level"),
    [
        ("wait_for_message", "enter", "INFO"),
        ("wait_for_message", "resume", "INFO"),
        ("handler", "enter", "DEBUG"),
        ("lambda", "enter", "DEBUG"),
        ("sleep", "enter", "DEBUG"),
        ("exception", "enter", "DEBUG"),
        ("lambda", "enable", "DEBUG"),
        ("lambda", "disable", "DEBUG"),
    ],
)
def test_events_render_as_the_lines_scylladb_writes(kind: str, phase: str, level: str) -> None:
    line = log_line(_event(kind, phase))
    assert line is not None
    parsed = parse_log_line(line)
    assert parsed is not None
    assert (parsed.level, parsed.shard, parsed.logger) == (level, 3, "errinj")
    assert parsed.timestamp == 1767000000.25
    said = parse_framework_message(parsed.message)
    assert said is not None and (said.injection, said.phase) == ("raft/apply-entry", phase)


def test_events_without_a_framework_line_render_as_nothing() -> None:
    assert log_line(_event("handler", "wait")) is None
    assert log_line(_event("parameter", "enter")) is None


def test_a_mark_is_the_real_log_offset_as_an_int() -> None:
    mark = LogMark(1234, stream="m")
    assert mark == 1234 and int(mark) + 1 == 1235
    assert mark.stream == "m"


# ----------------------------------------------------------------------------- against fake nodes


@pytest.mark.asyncio
@pytest.mark.parametrize("source", SOURCES)
async def test_framework_lines_come_from_the_server_s_events(
    source: str, manager: Manager, http: aiohttp.ClientSession
) -> None:
    async with injection_event_stream() as stream:
        hit, idle = await manager.servers_add(2, events=source == "stream")
        logs = {s: await manager.server_open_log(s.server_id) for s in (hit, idle)}
        log = InjectionLogFile(stream, hit, logs[hit])
        idle_log = InjectionLogFile(stream, idle, logs[idle])
        mark = await log.mark()
        assert int(mark) == await logs[hit].mark()  # the real log's offset
        idle_mark = await idle_log.mark()
        async with InjectionApi(hit) as api:
            await api.enable_injection(BREAKPOINT, one_shot=True)
            write = asyncio.create_task(put(http, hit, "k"))
            mark, [(line, match)] = await log.wait_for(
                f"{BREAKPOINT}: waiting for message", from_mark=mark, timeout=10
            )
            parsed = parse_log_line(line)
            assert parsed is not None and parsed.message == f"{BREAKPOINT}: waiting for message"
            assert match.group(0) == f"{BREAKPOINT}: waiting for message"
            # the other server was not hit: its log wait times out as the real one would
            with pytest.raises(TimeoutError):
                await idle_log.wait_for(
                    f"{BREAKPOINT}: waiting for message", from_mark=idle_mark, timeout=0.3
                )
            # from the mark it returned, the line it matched is not seen again
            with pytest.raises(TimeoutError):
                await log.wait_for(f"{BREAKPOINT}: waiting for message", mark, 0.3)
            await api.message_injection(BREAKPOINT)
            await log.wait_for(f"{BREAKPOINT}: message received", from_mark=mark, timeout=10)
            assert await write == 200
            found = await log.grep(f"{BREAKPOINT}: (waiting for message|message received)")
            assert [m.group(1) for _, m in found] == ["waiting for message", "message received"]


@pytest.mark.asyncio
async def test_other_lines_methods_and_attributes_go_to_the_real_log(
    manager: Manager,
) -> None:
    async with injection_event_stream() as stream:
        (server,) = await manager.servers_add(1)
        real = await manager.server_open_log(server.server_id)
        log = InjectionLogFile(stream, server, real)
        mark = await log.mark()
        with real.file.open("a", encoding="utf-8") as out:
            out.write("INFO  2026-12-02 10:00:00,000 [shard 0:main] raft - topology: waiting\n")
            out.write("ERROR 2026-12-02 10:00:00,001 [shard 0:main] raft - boom\n")
        _, [(line, _)] = await log.wait_for("topology: waiting", from_mark=mark, timeout=10)
        assert line.endswith("raft - topology: waiting\n")
        assert log.file == real.file
        assert await log.grep_for_errors(from_mark=mark) == [
            ["ERROR 2026-12-02 10:00:00,001 [shard 0:main] raft - boom\n"]
        ]
        assert await log.find_backtraces(from_mark=mark) == []
        assert [line for line, _ in await log.grep("raft - boom", from_mark=mark)]


@pytest.mark.asyncio
async def test_without_a_real_log_other_lines_fail_at_once(manager: Manager) -> None:
    async with injection_event_stream() as stream:
        (server,) = await manager.servers_add(1)
        log = InjectionLogFile(stream, server)
        with pytest.raises(NotAFrameworkLine, match="is not an injection framework line"):
            await log.wait_for("topology: waiting for peers")  # timeout=600: must not wait
        with pytest.raises(AttributeError, match="pass log="):
            log.grep_for_errors  # noqa: B018


@pytest.mark.asyncio
async def test_a_handler_s_own_line_is_read_from_the_real_log(
    manager: Manager, http: aiohttp.ClientSession
) -> None:
    """`NAME: waiting` may be the handler's own line, written after its filter: the
    events have no such line, the real log does."""
    async with injection_event_stream() as stream:
        (server,) = await manager.servers_add(1, events=False)
        log = InjectionLogFile(stream, server, await manager.server_open_log(server.server_id))
        mark = await log.mark()
        async with InjectionApi(server) as api:
            await api.enable_injection(HANDLER, one_shot=False, parameters={"key": "wanted"})
            other = await put(http, server, "other")  # the handler's filter lets it through
            assert other == 200
            write = asyncio.create_task(put(http, server, "wanted"))
            _, [(line, _)] = await log.wait_for(f"{HANDLER}: waiting", from_mark=mark, timeout=10)
            assert f"{HANDLER}: waiting (key wanted)" in line
            await api.message_injection(HANDLER)
            assert await write == 200
            await api.disable_injection(HANDLER)


def test_from_sync_code_as_scylladb_s_log_object(tmp_path: Path) -> None:
    path = tmp_path / "node.log"
    with FakeNode(events=False, log_path=path) as node, injection_event_stream() as stream:
        log = InjectionLogFile(stream, node, ScyllaLogFile(None, path))
        mark = log.mark()
        assert isinstance(mark, LogMark)
        InjectionApi(node).sync.enable_injection(BREAKPOINT, one_shot=True)
        request = urllib.request.Request(f"{node.url}/kv/k?replicate=false", b"v", method="PUT")
        statuses: list[int] = []

        def write() -> None:
            with urllib.request.urlopen(request, timeout=10) as response:
                statuses.append(response.status)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            mark, [(line, _)] = log.wait_for(f"{BREAKPOINT}: waiting", from_mark=mark, timeout=10)
            assert f"{BREAKPOINT}: waiting for message" in line
        finally:
            InjectionApi(node).sync.message_injection(BREAKPOINT)
            writer.join()
        assert statuses == [200]
        assert log.wait_for(f"{BREAKPOINT}: message received", from_mark=mark, timeout=10)
        assert log.grep_for_errors() == []  # the real log's async method, run to completion


@pytest.mark.asyncio
async def test_the_node_may_be_left_out_when_the_stream_follows_one(manager: Manager) -> None:
    async with injection_event_stream() as stream:
        first, second = await manager.servers_add(2)
        log = InjectionLogFile(stream)
        await stream.add_node(first)
        assert await log.mark() == 0  # no real log: the offset part is 0
        await stream.add_node(second)
        with pytest.raises(ValueError, match="needs the node when the stream follows 2 nodes"):
            await InjectionLogFile(stream).mark()
