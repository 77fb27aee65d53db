"""AFTER: the same test as `test_log_wait_old_way.py`, on the event stream.

`injection-events migrate` does this rewrite; see docs/migration.md.
"""

import asyncio

import pytest


@pytest.mark.asyncio
async def test_write_parks_at_breakpoint(
    injection_node, injection_api, injection_event_stream, http
):
    await injection_api.enable_injection("kv_write_before_apply", one_shot=True)

    write = asyncio.create_task(http.put(f"{injection_node.url}/kv/k", data=b"v"))
    await injection_event_stream.wait_for_injection("kv_write_before_apply")
    async with http.get(f"{injection_node.url}/kv/k") as response:
        assert response.status == 404

    await injection_api.message_injection("kv_write_before_apply")
    await injection_event_stream.wait_for_injection("kv_write_before_apply", phase="resume")
    async with await write as response:
        assert response.status == 200
