"""The `injection_event_stream` fixture in a test that creates its servers in the body,
as ScyllaDB's cluster tests do: it starts with no node and follows the servers the
test names, on each source, in async tests (with the ScyllaDB-style harness) and in
sync tests (with a FakeCluster changed while the test runs)."""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import pytest_asyncio
from manager import Manager

from pytest_injection_events import (
    FakeCluster,
    InjectionApi,
    InjectionEventStream,
    InjectionTimeout,
)

POINT = "kv_write_delay"


@pytest_asyncio.fixture
async def manager() -> AsyncIterator[Manager]:
    async with Manager(log_level="debug") as manager:
        yield manager


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster(0, log_level="debug") as cluster:
        yield cluster


def put(url: str) -> None:
    request = urllib.request.Request(f"{url}/kv/k?replicate=false", data=b"v", method="PUT")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


@pytest.mark.asyncio
@pytest.mark.parametrize("source", ["stream", "log", "poll"])
async def test_async_test_with_servers_added_in_the_body(
    source: str, manager: Manager, injection_event_stream: InjectionEventStream
) -> None:
    stream = injection_event_stream
    assert stream.nodes == []
    servers = await manager.servers_add(3, events=source == "stream")
    for server in servers:
        if source == "log":  # the way a test gives a server without /events its log
            await stream.add_node(server, log=await manager.server_open_log(server.server_id))
        elif source == "poll":  # polling has no history: attach before the trigger
            await stream.add_node(server)
        await InjectionApi(server).enable_injection(POINT, parameters={"ms": 0})
    async with aiohttp.ClientSession() as http:
        for server in servers[1:]:
            async with http.put(f"{server.url}/kv/k", data=b"v", params={"replicate": "false"}):
                pass
        mark = await stream.mark(servers[2])
        event = await stream.wait_for_injection(POINT, node=servers[1], timeout=10)
        with pytest.raises(InjectionTimeout):
            await stream.wait_for_injection(POINT, node=servers[2], after=mark, timeout=0.2)
        await manager.server_restart(servers[2].server_id)
        await InjectionApi(servers[2]).enable_injection(POINT, parameters={"ms": 0})
        mark = await stream.mark(servers[2])  # a new life: what came before is not news
        async with http.put(f"{servers[2].url}/kv/k", data=b"v", params={"replicate": "false"}):
            pass
        after = await stream.wait_for_injection(POINT, node=servers[2], after=mark, timeout=10)
    assert event.node == stream.node_id(servers[1])
    assert after.node == stream.node_id(servers[2])
    assert len(stream.nodes) == 2 if source == "stream" else 3  # attached as they were named


@pytest.mark.parametrize("source", ["stream", "log", "poll"])
def test_sync_test_with_nodes_added_in_the_body(
    source: str, cluster: FakeCluster, injection_event_stream: InjectionEventStream
) -> None:
    stream = injection_event_stream
    nodes = cluster.add_nodes(2, events=source == "stream")
    # A FakeNode names its own log: a node without /events is read through it, unless the
    # test names it by URL only (then it is polled).
    names = [node.url if source == "poll" else node for node in nodes]
    if source != "stream":
        for name in names:
            stream.add_node_sync(name)
    for node in nodes:
        InjectionApi(node).sync.enable_injection(POINT, parameters={"ms": 0})
    put(nodes[1].url)
    event = stream.wait_for_injection_sync(POINT, node=names[1], timeout=10)
    mark = stream.mark_sync(names[0])
    put(nodes[0].url)
    after = stream.wait_for_injection_sync(POINT, node=names[0], after=mark, timeout=10)
    cluster.restart_node(nodes[0])
    InjectionApi(nodes[0]).sync.enable_injection(POINT, parameters={"ms": 0})
    mark = stream.mark_sync(names[0])  # a mark after a restart also tells polling of it
    put(nodes[0].url)
    put(nodes[0].url)
    again = stream.wait_for_injection_sync(POINT, node=names[0], after=mark, count=2, timeout=10)
    assert event.node == nodes[1].node_id
    assert after.node == again.node == nodes[0].node_id
    expected = {"stream": "event stream", "log": f"log {nodes[0].log_path}"}
    assert stream.nodes[0].source == expected.get(source, "/enters polling")
