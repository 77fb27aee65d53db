"""A sleep whose length is a parameter of the injection."""

import pytest


@pytest.mark.asyncio
async def test_write_delay_takes_its_parameter(
    injection_node, injection_api, injection_event_stream, http
):
    await injection_api.enable_injection("kv_write_delay", parameters={"ms": 50})

    async with http.put(f"{injection_node.url}/kv/k", data=b"v") as response:
        assert response.status == 200

    event = await injection_event_stream.wait_for_injection("kv_write_delay")
    assert event.parameters == {"ms": "50"}
    assert event.type == "sleep"
