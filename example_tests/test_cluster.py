"""Pause replication to one node of three, see the cluster disagree, then let it heal."""

import asyncio

import pytest

from pytest_injection_events import InjectionApi


@pytest.mark.asyncio
async def test_pause_replication_to_one_node(injection_cluster, injection_event_stream, http):
    coordinator, lagging, other = injection_cluster.nodes
    api = InjectionApi(coordinator.url)
    # Only the forward to `lagging` parks; the one to `other` goes through.
    await api.enable_injection(
        "replication_before_send", one_shot=True, parameters={"peer": lagging.node_id}
    )

    write = asyncio.create_task(http.put(f"{coordinator.url}/kv/k", data=b"v"))
    await injection_event_stream.wait_for_injection("replication_before_send", node=coordinator)

    async with http.get(f"{lagging.url}/kv/k") as response:
        assert response.status == 404

    await api.message_injection("replication_before_send")
    async with await write as response:
        outcome = await response.json()
    assert sorted(outcome["replicated_to"]) == sorted([lagging.node_id, other.node_id])
    for node in (lagging, other):
        async with http.get(f"{node.url}/kv/k") as response:
            assert await response.read() == b"v"
