"""A one-shot error: the first write fails, the next one succeeds."""

import pytest


@pytest.mark.asyncio
async def test_one_shot_error_fails_one_write(
    injection_node, injection_api, injection_event_stream, http
):
    await injection_api.enable_injection("kv_write_error", one_shot=True)

    async with http.put(f"{injection_node.url}/kv/k", data=b"v1") as response:
        assert response.status == 500
        assert await response.json() == {"error": "injected error: kv_write_error"}
    await injection_event_stream.wait_for_injection("kv_write_error")

    async with http.put(f"{injection_node.url}/kv/k", data=b"v2") as response:
        assert response.status == 200
    assert await injection_api.get_enabled_injections() == []
