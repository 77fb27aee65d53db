"""Pause a write at a breakpoint, look at the node while it is parked, then release it."""

import asyncio

import pytest


@pytest.mark.asyncio
async def test_write_waits_at_breakpoint_until_message(
    injection_node, injection_api, injection_event_stream, http
):
    await injection_api.enable_injection("kv_write_before_apply", one_shot=True)

    write = asyncio.create_task(http.put(f"{injection_node.url}/kv/color", data=b"blue"))
    await injection_event_stream.wait_for_injection("kv_write_before_apply")

    # Parked before applying: the value is not there yet.
    async with http.get(f"{injection_node.url}/kv/color") as response:
        assert response.status == 404

    await injection_api.message_injection("kv_write_before_apply")
    async with await write as response:
        assert response.status == 200
    async with http.get(f"{injection_node.url}/kv/color") as response:
        assert await response.read() == b"blue"
