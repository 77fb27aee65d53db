"""The ScyllaDB-style harness of tests/manager.py, written as a cluster test is: servers
added in the body, logs opened per server, marks, restarts, servers without `/events`."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path

import aiohttp
import pytest
from manager import Manager, ScyllaLogFile, ServerInfo

from pytest_injection_events.client import InjectionApi
from pytest_injection_events.protocol import BOOT_HEADER, PREFIX

BREAKPOINT = "kv_write_before_apply"


async def status_of(http: aiohttp.ClientSession, method: str, url: str, **kwargs: object) -> int:
    async with http.request(method, url, **kwargs) as response:  # type: ignore[arg-type]
        if response.content_type != "text/event-stream":  # a stream's body never ends
            await response.read()
        return response.status


async def boot_of(http: aiohttp.ClientSession, server: ServerInfo) -> str:
    async with http.get(f"{server.url}{PREFIX}/events") as response:
        assert response.status == 200
        return response.headers[BOOT_HEADER]


async def park_and_release(
    http: aiohttp.ClientSession, server: ServerInfo, log: ScyllaLogFile, key: str
) -> int:
    """A write parks at the breakpoint (seen in the server's log) and is let go."""
    api = InjectionApi(server.url)
    try:
        mark = await log.mark()
        await api.enable_injection(BREAKPOINT, one_shot=True)
        write = asyncio.create_task(status_of(http, "PUT", f"{server.url}/kv/{key}", data=b"v"))
        mark, [(line, match)] = await log.wait_for(f"{BREAKPOINT}: waiting", from_mark=mark)
        assert match.group(0) == f"{BREAKPOINT}: waiting" and "errinj" in line
        assert not write.done()
        await api.message_injection(BREAKPOINT)
        await log.wait_for(f"{BREAKPOINT}: message received", from_mark=mark, timeout=10)
        assert await write == 200
        return mark
    finally:
        await api.close()


@pytest.mark.asyncio
async def test_servers_added_in_the_body_each_with_its_own_log() -> None:
    async with Manager() as manager, aiohttp.ClientSession() as http:
        assert manager.running_servers() == []
        servers = await manager.servers_add(3)
        assert [s.server_id for s in servers] == [1, 2, 3]
        assert all(s.ip_addr == s.rpc_address == "127.0.0.1" for s in servers)
        assert len({s.url for s in servers}) == 3
        assert manager.running_servers() == servers
        logs = [await manager.server_open_log(s.server_id) for s in servers]
        marks = [await log.mark() for log in logs]
        await park_and_release(http, servers[1], logs[1], "k")
        for log, mark in zip(logs, marks, strict=True):
            found = await log.grep(f"{BREAKPOINT}: waiting", from_mark=mark)
            assert len(found) == (1 if log is logs[1] else 0)  # only that server's log
        # The write was replicated to the two others: every peer list holds them.
        for server in servers:
            assert await status_of(http, "GET", f"{server.url}/kv/k") == 200
        extra = await manager.server_add()
        assert extra.server_id == 4
        assert await status_of(http, "PUT", f"{servers[0].url}/kv/z", data=b"v") == 200
        assert await status_of(http, "GET", f"{extra.url}/kv/z") == 200


@pytest.mark.asyncio
async def test_a_restart_is_a_new_life_with_the_same_log_appended() -> None:
    async with Manager(breakpoint_timeout=30) as manager, aiohttp.ClientSession() as http:
        server, other = await manager.servers_add(2)
        log = await manager.server_open_log(server.server_id)
        await park_and_release(http, server, log, "a")
        old_boot = await boot_of(http, server)
        mark = await log.mark()
        await manager.server_restart(server.server_id)
        assert manager.running_servers() == [server, other]  # same id, address, URL
        assert await boot_of(http, server) != old_boot
        api = InjectionApi(server.url)
        try:
            assert await api.get_enabled_injections() == []  # nothing survives a restart
        finally:
            await api.close()
        new_mark = await park_and_release(http, server, log, "b")
        assert new_mark > mark
        assert len(await log.grep(f"{BREAKPOINT}: waiting")) == 2  # both lives, one file
        assert len(await log.grep(f"{BREAKPOINT}: waiting", from_mark=mark)) == 1


@pytest.mark.asyncio
async def test_a_stopped_server_s_log_is_still_readable() -> None:
    async with Manager() as manager, aiohttp.ClientSession() as http:
        first, second = await manager.servers_add(2)
        log = await manager.server_open_log(first.server_id)
        await park_and_release(http, first, log, "k")
        await manager.server_stop(first.server_id)
        assert manager.running_servers() == [second]
        assert [s.server_id for s in manager.all_servers()] == [1, 2]
        reopened = await manager.server_open_log(first.server_id)
        assert len(await reopened.grep(f"{BREAKPOINT}: (waiting|message)")) == 2
        with pytest.raises(aiohttp.ClientConnectionError):
            await status_of(http, "GET", f"{first.url}/kv/k")
        await manager.server_start(first.server_id)
        assert manager.running_servers() == [first, second]
        assert await status_of(http, "GET", f"{first.url}/kv/k") == 200  # data kept

        await manager.server_remove(second.server_id)
        assert manager.running_servers() == [first]
        assert manager.node(first.server_id).peers == []
        with pytest.raises(ValueError, match="no server 2"):
            await manager.server_open_log(second.server_id)


@pytest.mark.asyncio
async def test_servers_without_events_have_scylla_s_api_only() -> None:
    async with Manager() as manager, aiohttp.ClientSession() as http:
        (modern,) = await manager.servers_add(1)
        plain = await manager.servers_add(2, events=False)
        assert await status_of(http, "GET", f"{modern.url}{PREFIX}/events") == 200
        for server in plain:
            assert await status_of(http, "GET", f"{server.url}{PREFIX}/events") == 404
            assert await status_of(http, "GET", f"{server.url}{PREFIX}/points") == 404
            log = await manager.server_open_log(server.server_id)
            await park_and_release(http, server, log, "k")  # the log is the way here
        await manager.server_restart(plain[0].server_id)
        assert await status_of(http, "GET", f"{plain[0].url}{PREFIX}/events") == 404


def test_the_sync_context_stops_everything() -> None:
    threads = set(threading.enumerate())

    async def body(manager: Manager) -> list[ServerInfo]:
        servers = await manager.servers_add(2, log_level="debug")
        log = await manager.server_open_log(servers[0].server_id)
        assert await log.mark() == 0
        return servers

    with Manager() as manager:
        servers = asyncio.run(body(manager))
        nodes = [manager.node(s.server_id) for s in servers]
        paths = [node.log_path for node in nodes]
        assert all(node.running and node.log_level == "debug" for node in nodes)
    assert not any(node.running for node in nodes)
    assert not any(path and Path(path).exists() for path in paths)
    assert set(threading.enumerate()) == threads


# -- the log object itself ---------------------------------------------------------------------

SAMPLE = """\
INFO  2026-02-18 14:10:18,100 [shard 0:main] init - starting
ERROR 2026-02-18 14:10:18,200 [shard 0:main] storage - disk full
  detail one
INFO  2026-02-18 14:10:18,300 [shard 0:main] storage - retrying
ERROR 2026-02-18 14:10:18,400 [shard 1:main] storage - disk full
WARN  2026-02-18 14:10:18,500 [shard 0:main] seastar - Exceptional future ignored
Backtrace:
  0x1234
  0x5678
INFO  2026-02-18 14:10:18,600 [shard 0:main] errinj - p: waiting for message
"""


@pytest.mark.asyncio
async def test_scylla_log_file_grep_errors_and_backtraces(tmp_path: Path) -> None:
    path = tmp_path / "scylla.log"
    path.write_text(SAMPLE, encoding="utf-8")
    log = ScyllaLogFile(None, path)
    assert log.file == path
    assert [m.group(1) for _, m in await log.grep(r"\[shard (\d)")] == list("000100")
    assert len(await log.grep("storage", max_count=2)) == 2
    assert len(await log.grep("storage", filter_expr="retrying")) == 2
    errors = await log.grep_for_errors()
    assert [len(e) for e in errors] == [2, 5]  # an error runs up to the next INFO line
    assert errors[0][1] == "  detail one\n"
    distinct = await log.grep_for_errors(distinct_errors=True)
    assert len(distinct) == 2 and all(isinstance(e, str) for e in distinct)
    (backtrace,) = await log.find_backtraces()
    assert backtrace == "Backtrace:\n  0x1234\n  0x5678\n"
    second_error = SAMPLE.index("ERROR 2026-02-18 14:10:18,400")
    assert len(await log.grep_for_errors(from_mark=second_error)) == 1
    with pytest.raises(FileNotFoundError):
        ScyllaLogFile(None, tmp_path / "missing.log")


@pytest.mark.asyncio
async def test_wait_for_reads_lines_as_they_are_written(tmp_path: Path) -> None:
    """Patterns in any order, a line written in two pieces, a timeout."""
    path = tmp_path / "scylla.log"
    path.write_bytes(b"INFO  before\n")
    log = ScyllaLogFile(None, path)
    mark = await log.mark()
    with path.open("ab") as out:
        out.write(b"INFO  first li")  # half a line: not matched until it is whole
        out.flush()
        waiting = asyncio.create_task(
            log.wait_for("second", re.compile("fir+st"), "before|never", from_mark=mark)
        )
        out.write(b"ne\nINFO  second line\nINFO  before never\n")
    end, matches = await asyncio.wait_for(waiting, 5)
    assert end == path.stat().st_size
    assert [line for line, _ in matches] == [
        "INFO  first line\n",
        "INFO  second line\n",
        "INFO  before never\n",  # the line before the mark does not count
    ]
    with pytest.raises(TimeoutError):
        await log.wait_for("never", from_mark=end, timeout=0.05)
