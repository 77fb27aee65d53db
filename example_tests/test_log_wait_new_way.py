"""AFTER: `test_log_wait_old_way.py` as `injection-events migrate` converts it.

The server, the mark and the timeout are kept (`node=`, `after=`, 600 s); the log
is handed to the stream, which reads it only for a node without the event
stream. See docs/migration.md.
"""

import asyncio

import pytest
from scylla_log import ScyllaLogFile


@pytest.mark.asyncio
async def test_write_parks_at_breakpoint(
    injection_node, injection_api, http, injection_event_stream
):
    if getattr(injection_node, "log_path", None) is None:
        pytest.skip("log tailing needs the fake node's log file")
    log = ScyllaLogFile(injection_node.log_path)
    await injection_event_stream.add_node(injection_node, log=log)
    mark = await injection_event_stream.mark(injection_node)
    await injection_api.enable_injection("kv_write_before_apply", one_shot=True)

    write = asyncio.create_task(http.put(f"{injection_node.url}/kv/k", data=b"v"))
    await injection_event_stream.wait_for_injection(
        "kv_write_before_apply", node=injection_node, after=mark, timeout=600
    )
    mark = await injection_event_stream.mark(injection_node)
    async with http.get(f"{injection_node.url}/kv/k") as response:
        assert response.status == 404

    await injection_api.message_injection("kv_write_before_apply")
    await injection_event_stream.wait_for_injection(
        "kv_write_before_apply", phase="resume", node=injection_node, after=mark, timeout=600
    )
    async with await write as response:
        assert response.status == 200
