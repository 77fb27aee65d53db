"""BEFORE: a breakpoint test that learns of the hit by tailing the node's log.

Compare with `test_log_wait_new_way.py`: the same test on the event stream.
"""

import asyncio

import pytest
from scylla_log import ScyllaLogFile


@pytest.mark.asyncio
async def test_write_parks_at_breakpoint(injection_node, injection_api, http):
    if getattr(injection_node, "log_path", None) is None:
        pytest.skip("log tailing needs the fake node's log file")
    log = ScyllaLogFile(injection_node.log_path)
    mark = await log.mark()
    await injection_api.enable_injection("kv_write_before_apply", one_shot=True)

    write = asyncio.create_task(http.put(f"{injection_node.url}/kv/k", data=b"v"))
    mark, _ = await log.wait_for("kv_write_before_apply: waiting for message", from_mark=mark)
    async with http.get(f"{injection_node.url}/kv/k") as response:
        assert response.status == 404

    await injection_api.message_injection("kv_write_before_apply")
    await log.wait_for("kv_write_before_apply: message received", from_mark=mark)
    async with await write as response:
        assert response.status == 200
