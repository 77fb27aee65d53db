"""The stream-backed drop-in for ScyllaDB's log object (SPEC §9)."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from pytest_injection_events import (
    FakeCluster,
    FakeNode,
    InjectionApi,
    InjectionEventStream,
    injection_event_stream,
)
from pytest_injection_events.logfile import InjectionLogFile, log_message


async def _park_and_release(
    stream: InjectionEventStream, node: FakeNode, http: aiohttp.ClientSession, key: str
) -> None:
    """One write parked at the breakpoint and released: enter, message, resume."""
    api = InjectionApi(node.url)
    await api.enable_injection("kv_write_before_apply", one_shot=True)
    write = asyncio.create_task(http.put(f"{node.url}/kv/{key}", data=b"v"))
    await stream.wait_for_injection("kv_write_before_apply", timeout=5, node=node)
    await api.message_injection("kv_write_before_apply")
    await stream.wait_for_injection("kv_write_before_apply", phase="resume", timeout=5, node=node)
    async with await write as response:
        assert response.status == 200


@pytest.mark.asyncio
async def test_unconverted_log_wait_passes_through_the_drop_in(node, http):
    async with injection_event_stream(node.url) as stream:
        log = InjectionLogFile(stream)
        mark = await log.mark()
        api = InjectionApi(node.url)
        await api.enable_injection("kv_write_before_apply", one_shot=True)
        write = asyncio.create_task(http.put(f"{node.url}/kv/k", data=b"v"))

        mark, matches = await log.wait_for(
            "kv_write_before_apply: waiting", from_mark=mark, timeout=5
        )
        ((line, match),) = matches
        assert match.group(0) == "kv_write_before_apply: waiting"
        assert re.search(r"\[shard 0\] error_injection - kv_write_before_apply: waiting", line)
        await api.message_injection("kv_write_before_apply")
        await log.wait_for("kv_write_before_apply: message received", from_mark=mark, timeout=5)
        async with await write as response:
            assert response.status == 200


@pytest.mark.asyncio
async def test_lines_match_what_the_node_really_logs(node, http):
    """The drop-in's lines are the ones the node writes to its log file."""
    async with injection_event_stream(node.url) as stream:
        await _park_and_release(stream, node, http, "k")
        rendered = [m for m in map(log_message, stream.events) if m and ": " in m]
    with open(node.log_path, encoding="utf-8") as log_file:  # noqa: ASYNC230 - a small local file
        logged = [line.split(" - ", 1)[1].strip() for line in log_file]
    assert (
        rendered
        == logged
        == [
            "kv_write_before_apply: waiting for message",
            "kv_write_before_apply: message received",
        ]
    )


@pytest.mark.asyncio
async def test_several_patterns_from_mark_and_position(node, http):
    async with injection_event_stream(node.url) as stream:
        log = InjectionLogFile(stream)
        await _park_and_release(stream, node, http, "a")
        mark = await log.mark()
        await _park_and_release(stream, node, http, "b")
        position, matches = await log.wait_for(
            r"message received", r"(\w+): waiting for message", from_mark=mark, timeout=5
        )
        assert [m.group(0) for _, m in matches] == [
            "kv_write_before_apply: waiting for message",
            "message received",
        ]
        assert matches[0][1].group(1) == "kv_write_before_apply"
        # Nothing after the returned position matches yet: a new wait would block.
        with pytest.raises(TimeoutError, match="no event line matched 'waiting'"):
            await log.wait_for("waiting", from_mark=position, timeout=0.05)
        # Without from_mark the scan starts at the stream's first event.
        _, first = await log.wait_for("waiting", timeout=1)
        assert len(first) == 1


@pytest.mark.asyncio
async def test_grep_and_one_node_of_a_merged_stream(http):
    with FakeCluster(2) as cluster:
        async with injection_event_stream(cluster.urls) as stream:
            await _park_and_release(stream, cluster[1], http, "k")
            assert await InjectionLogFile(stream, node=cluster[0]).grep("waiting") == []
            found = await InjectionLogFile(stream, node=cluster[1].url).grep(
                "kv_write", filter_expr="Enabling"
            )
            assert [m.group(0) for _, m in found] == ["kv_write", "kv_write"]
            assert len(await InjectionLogFile(stream).grep("kv_write", max_count=1)) == 1


@pytest.mark.asyncio
async def test_positional_mark_and_timeout_of_the_older_signature(node, http):
    """ScyllaDB's older tests call `log.wait_for(pattern, mark, 30)`."""
    async with injection_event_stream(node.url) as stream:
        log = InjectionLogFile(stream)
        await _park_and_release(stream, node, http, "a")
        mark = await log.mark()
        await _park_and_release(stream, node, http, "b")
        position, matches = await log.wait_for("message received", mark, 5)
        assert position == len(stream.events)
        assert len(matches) == 1
        with pytest.raises(TimeoutError):
            await log.wait_for("waiting", position, 0.05)
        with pytest.raises(TypeError, match="at least one pattern"):
            await log.wait_for(mark)
