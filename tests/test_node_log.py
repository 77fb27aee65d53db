"""The fake node's log file: ScyllaDB's line format, the injection framework's lines
(logger `errinj`) and other code's lines, read back with the package's own parser."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from sse import open_stream

from pytest_injection_events.injector import InjectedError, InjectionHandler
from pytest_injection_events.node import FakeNode
from pytest_injection_events.protocol import (
    LOG_LOGGER,
    PREFIX,
    parse_framework_message,
    parse_log_line,
)

#: ScyllaDB's line, stated independently of the node's formatter.
LINE = re.compile(
    r"^(?P<level>INFO |WARN |DEBUG|ERROR) \d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
    r"\[shard (?P<shard>\d+):main\] (?P<logger>\S+) - (?P<message>.+)$"
)
NAMES = ["plain", "kv/one", "with-dash", "with space", "a b/c-d_e.f"]


def flush(node: FakeNode) -> None:
    """Every line the node scheduled so far is in its file once this returns: its lines
    are written by callbacks of its loop, queued before this one."""
    node.call(lambda: None)


def read_lines(node: FakeNode) -> list[str]:
    flush(node)
    assert node.log_path is not None
    with open(node.log_path, encoding="utf-8") as log:
        return log.read().splitlines()


def framework_lines(lines: list[str]) -> list[tuple[str | None, str, str | None, bool | None]]:
    """What each `errinj` line stands for: (injection, phase, kind, one_shot)."""
    out = []
    for line in lines:
        parsed = parse_log_line(line)
        assert parsed is not None, line
        if parsed.logger != LOG_LOGGER:
            continue
        said = parse_framework_message(parsed.message)
        assert said is not None, f"an errinj line the parser does not know: {line!r}"
        out.append((said.injection, said.phase, said.kind, said.one_shot))
    return out


async def on_node(node: FakeNode, fn: Callable[[], Awaitable[Any]]) -> Any:
    """`await fn()` on the node's loop, where its injector lives."""

    async def run() -> Any:
        return await fn()

    assert node._loop is not None
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), node._loop))


async def api(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> Any:
    async with http.request(method, url, **kwargs) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def every_kind(http: aiohttp.ClientSession, node: FakeNode, name: str) -> None:
    """Enable, hit each kind of point once, disable: all through the node's real paths."""
    one = f"{node.url}{PREFIX}/injection/{quote(name, safe='')}"
    injector = node.injector
    await api(http, "POST", one, params={"one_shot": "false"}, json={"value": "7"})
    assert node.call(injector.inject, name, lambda: 1) == 1
    await on_node(node, lambda: injector.inject_sleep(name, 0.001))

    async def raises() -> None:
        with pytest.raises(InjectedError):
            injector.inject_exception(name)

    await on_node(node, raises)

    async def handler(h: InjectionHandler) -> None:
        pass

    await on_node(node, lambda: injector.inject_handler(name, handler))
    assert node.call(injector.inject_parameter, name) == "7"
    await api(http, "POST", one + "/message")  # already there: the breakpoint goes straight on
    await on_node(node, lambda: injector.inject_wait_for_message(name, 5))
    await api(http, "POST", one, params={"one_shot": "true"})
    await api(http, "DELETE", one)
    await api(http, "DELETE", f"{node.url}{PREFIX}/injection")


def expected_debug(name: str) -> list[tuple[str | None, str, str | None, bool | None]]:
    return [
        (name, "enable", None, False),
        (name, "enter", "lambda", None),
        (name, "enter", "sleep", None),
        (name, "enter", "exception", None),
        (name, "enter", "handler", None),
        (name, "enter", "parameter", None),
        # As in ScyllaDB, a breakpoint is a handler point with two INFO lines of its own.
        (name, "enter", "handler", None),
        (name, "enter", "wait_for_message", None),
        (name, "resume", "wait_for_message", None),
        (name, "enable", None, True),
        (name, "disable", None, None),
        (None, "disable", None, None),
    ]


@pytest.mark.asyncio
async def test_every_framework_line_parses_back_to_its_event() -> None:
    """At debug, each kind of point, enable and disable write the framework's line, and
    the package's parser reads each back as (name, phase, kind), whatever the name holds."""
    async with aiohttp.ClientSession() as http:
        with FakeNode(log_level="debug") as node:
            before = time.time()
            for name in NAMES:
                await every_kind(http, node, name)
            lines = read_lines(node)
            after = time.time()
    expected = [entry for name in NAMES for entry in expected_debug(name)]
    assert framework_lines(lines) == expected
    for line in lines:
        match = LINE.match(line)
        assert match is not None, line
        assert match["level"] in ("INFO ", "DEBUG"), line
        parsed = parse_log_line(line)
        assert parsed is not None
        assert before - 1 <= parsed.timestamp <= after + 1  # local time, as ScyllaDB writes
    infos = [line for line in lines if line.startswith("INFO  ")]
    assert [LINE.match(line)["message"] for line in infos] == [  # type: ignore[index]
        f"{name}: {text}" for name in NAMES for text in ("waiting for message", "message received")
    ]


@pytest.mark.asyncio
async def test_at_info_only_the_breakpoint_lines_are_written() -> None:
    async with aiohttp.ClientSession() as http:
        with FakeNode() as node:
            await every_kind(http, node, "with space/and-slash")
            lines = read_lines(node)
    assert framework_lines(lines) == [
        ("with space/and-slash", "enter", "wait_for_message", None),
        ("with space/and-slash", "resume", "wait_for_message", None),
    ]
    assert all(line.startswith("INFO  ") for line in lines)


@pytest.mark.asyncio
async def test_breakpoint_lines_of_a_sharded_node_and_a_timeout_warning() -> None:
    """A write parks on its key's shard: the lines say that shard. A breakpoint that
    gives up is a WARN line of the workload, not of the framework."""
    async with aiohttp.ClientSession() as http, FakeNode(shards=2, breakpoint_timeout=0.05) as node:
        key = next(k for k in map(str, range(100)) if node.workload.shard_of(k) == 1)
        name = "kv_write_before_apply"
        await api(http, "POST", f"{node.url}{PREFIX}/injection/{name}")
        async with http.put(f"{node.url}/kv/{key}", data=b"v") as response:
            assert response.status == 200  # the breakpoint timed out and let it go on
        lines = read_lines(node)
    (waiting,) = [line for line in lines if "waiting for message" in line]
    assert LINE.match(waiting)["shard"] == "1"  # type: ignore[index]
    parsed = parse_log_line(waiting)
    assert parsed is not None and (parsed.shard, parsed.logger) == (1, "errinj")
    (warning,) = [line for line in lines if line.startswith("WARN  ")]
    match = LINE.match(warning)
    assert match is not None
    assert (match["shard"], match["logger"]) == ("1", "kv")
    assert match["message"] == f"{name}: no message within 0.05s"
    assert parse_framework_message(match["message"]) is None


@pytest.mark.asyncio
async def test_other_code_writes_waiting_lines_that_are_not_injection_lines() -> None:
    """The coordinator going idle and the `kv_write_key_pause` handler log `NAME: waiting`
    lines with their own loggers: the framework's parser does not take them for events."""
    async with aiohttp.ClientSession() as http, FakeNode() as node:
        status = await api(http, "POST", f"{node.url}/topology/requests", json={})
        name = "kv_write_key_pause"
        await api(http, "POST", f"{node.url}{PREFIX}/injection/{name}", json={"key": "k"})
        async with open_stream(http, node.url, {"phase": "wait"}) as events:
            write = asyncio.create_task(http.put(f"{node.url}/kv/k", data=b"v"))
            assert (await events.next()).json["injection"] == name
        await api(http, "POST", f"{node.url}{PREFIX}/injection/{name}/message")
        async with await write as response:
            assert response.status == 200
        lines = read_lines(node)
    assert status["status"] == "queued"
    ordinary = [parse_log_line(line) for line in lines]
    said = {(p.logger, p.message) for p in ordinary if p is not None}
    assert ("raft_topology", "topology_coordinator: waiting for requests") in said
    assert ("kv", "kv_write_key_pause: waiting (key k)") in said
    for logger, message in said:
        assert logger != LOG_LOGGER
        assert parse_framework_message(message) is None
