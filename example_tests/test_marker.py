"""The marker: enabled before the body, checked after it, disabled at teardown."""

import pytest


@pytest.mark.asyncio
@pytest.mark.wait_for_injection("kv_write_delay", parameters={"ms": 1}, timeout=5)
@pytest.mark.wait_for_injection("coordinator_batch_size", parameters={"value": 1})
async def test_marked_injections_are_hit(injection_node, http):
    async with http.put(f"{injection_node.url}/kv/k", data=b"v") as response:
        assert response.status == 200
    async with http.post(f"{injection_node.url}/topology/requests", json={"op": "add"}) as response:
        assert response.status == 200
