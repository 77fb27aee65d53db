"""A cluster test written as ScyllaDB's are: servers created, restarted and waited on in
the test body, one of them without the event stream (read through its log)."""

import asyncio

import pytest

from pytest_injection_events import FakeCluster, InjectionApi


async def put(http, server, key):
    async with http.put(f"{server.url}/kv/{key}", data=b"v", params={"replicate": "false"}) as r:
        return r.status


@pytest.mark.asyncio
async def test_servers_added_in_the_body(injection_event_stream, http):
    stream = injection_event_stream  # on no node yet: it follows the servers the test names
    with FakeCluster(0) as cluster:
        first, second = cluster.add_nodes(2)
        legacy = cluster.add_node(events=False)  # like ScyllaDB today: no /events...
        await stream.add_node(legacy, log=legacy.log_path)  # ...so read its log

        for server in (first, second, legacy):
            await InjectionApi(server).enable_injection("kv_write_before_apply", one_shot=True)
        mark = await stream.mark(second)  # as `mark = await log.mark()`

        # A write to `second` parks at the breakpoint; the wait names the server.
        write = asyncio.create_task(put(http, second, "a"))
        event = await stream.wait_for_injection("kv_write_before_apply", node=second, after=mark)
        assert event.node == second.node_id and not write.done()
        await InjectionApi(second).message_injection("kv_write_before_apply")
        assert await write == 200

        # The same wait on the server without the stream, through its log lines.
        write = asyncio.create_task(put(http, legacy, "b"))
        await stream.wait_for_injection("kv_write_before_apply", node=legacy, timeout=600)
        await InjectionApi(legacy).message_injection("kv_write_before_apply")
        assert await write == 200

        # A restart is a new life (nothing enabled, counters at 0); the stream follows it.
        cluster.restart_node(first)
        await InjectionApi(first).enable_injection("kv_write_error", one_shot=True)
        assert await put(http, first, "c") == 500
        await stream.wait_for_injection("kv_write_error", node=first)
