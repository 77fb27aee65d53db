"""The fake node and cluster (SPEC §6), driven over real HTTP on 127.0.0.1.

Events are read with the independent reader of tests/sse.py; a test waits for
the event of the point it drives, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

import aiohttp
import pytest
from helpers import EVENT_KEYS
from sse import RawStream, open_stream

from pytest_injection_events.node import POINTS, FakeCluster, FakeNode

API = "/v2/error_injection"
SPEC_POINTS = {
    "kv_write_before_apply": "wait_for_message",
    "kv_write_error": "exception",
    "kv_write_delay": "sleep",
    "kv_write_key_pause": "handler",
    "replication_before_send": "wait_for_message",
    "replication_drop": "lambda",
    "coordinator_pause_before_processing_backlog": "wait_for_message",
    "coordinator_batch_size": "parameter",
}


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    """Status and body (decoded if JSON) of one request."""
    async with http.request(method, url, **kwargs) as response:
        body = await response.read()
        if response.content_type == "application/json":
            return response.status, json.loads(body)
        return response.status, body


async def enable(
    http: aiohttp.ClientSession,
    node: FakeNode,
    name: str,
    *,
    one_shot: bool = False,
    parameters: dict[str, str] | None = None,
) -> None:
    status, body = await call(
        http,
        "POST",
        f"{node.url}{API}/injection/{name}",
        params={"one_shot": str(one_shot)},
        json=parameters,
    )
    assert status == 200, body


async def message(http: aiohttp.ClientSession, node: FakeNode, name: str) -> int:
    """Send a message; the number of handlers that were parked on it."""
    status, body = await call(http, "POST", f"{node.url}{API}/injection/{name}/message")
    assert status == 200, body
    return body["waiters"]


async def enters(http: aiohttp.ClientSession, node: FakeNode, name: str) -> int:
    status, body = await call(http, "GET", f"{node.url}{API}/injection/{name}/enters")
    assert status == 200, body
    return body


def watch(http: aiohttp.ClientSession, node: FakeNode, names: Iterable[str], phase: str = "enter"):
    """A stream of `phase` events of these injections only."""
    return open_stream(http, node.url, [("injection", n) for n in names] + [("phase", phase)])


async def next_event(stream: RawStream) -> dict[str, Any]:
    data = (await stream.next(5)).json
    assert set(data) == EVENT_KEYS
    return data


# -- the catalog and the plain workload ------------------------------------------------------


@pytest.mark.asyncio
async def test_catalog_has_the_declared_points(node: FakeNode, http: aiohttp.ClientSession) -> None:
    status, points = await call(http, "GET", f"{node.url}{API}/points")
    assert status == 200
    assert {p["name"]: p["type"] for p in points} == SPEC_POINTS
    assert all(p["doc"] and p["enter_count"] == 0 for p in points)
    assert [p.name for p in POINTS] == list(SPEC_POINTS)


@pytest.mark.asyncio
async def test_key_value_and_topology_endpoints(
    node: FakeNode, http: aiohttp.ClientSession
) -> None:
    assert await call(http, "GET", f"{node.url}/kv/k") == (404, {"error": "no such key: 'k'"})
    status, body = await call(http, "PUT", f"{node.url}/kv/k", data=b"v1")
    assert (status, body["key"]) == (200, "k")
    assert await call(http, "GET", f"{node.url}/kv/k") == (200, b"v1")
    status, body = await call(http, "PUT", f"{node.url}/kv/a%2Fb", data=b"slash")
    assert (status, body["key"]) == (200, "a/b")
    assert await call(http, "GET", f"{node.url}/kv/a%2Fb") == (200, b"slash")

    status, body = await call(http, "POST", f"{node.url}/topology/requests", json={"op": "add"})
    assert status == 200 and body["status"] == "queued"
    status, body = await call(http, "POST", f"{node.url}/topology/requests", data=b"[1]")
    assert status == 400 and "JSON object" in body["error"]
    status, body = await call(http, "GET", f"{node.url}/topology/requests/999")
    assert status == 404 and "999" in body["error"]


def _read(path: str | None) -> str:
    assert path is not None
    with open(path, encoding="utf-8") as file:
        return file.read()


# -- each point where the table says -------------------------------------------------------------


@pytest.mark.asyncio
async def test_kv_write_before_apply_parks_the_write(
    node: FakeNode, http: aiohttp.ClientSession
) -> None:
    name = "kv_write_before_apply"
    async with watch(http, node, [name]) as stream:
        await enable(http, node, name, one_shot=True)
        put = asyncio.create_task(call(http, "PUT", f"{node.url}/kv/k", data=b"v"))
        event = await next_event(stream)
        assert event["type"] == "wait_for_message"
        assert (event["node"], event["shard"], event["enter_count"]) == (node.node_id, 0, 1)
        assert event["one_shot"] is True
        assert await call(http, "GET", f"{node.url}/kv/k") == (404, {"error": "no such key: 'k'"})
        assert not put.done()
        assert await enters(http, node, name) == 1  # a parked one-shot still answers its hit
        assert await message(http, node, name) == 1
        status, _ = await asyncio.wait_for(put, 5)
        assert status == 200
    # ScyllaDB's log lines, for log-based tests: written before the write went on.
    text = _read(node.log_path)
    assert f"{name}: waiting for message" in text
    assert f"{name}: message received" in text
    assert await call(http, "GET", f"{node.url}/kv/k") == (200, b"v")


@pytest.mark.asyncio
async def test_a_breakpoint_that_times_out_lets_the_write_go_on(
    http: aiohttp.ClientSession,
) -> None:
    name = "kv_write_before_apply"
    async with FakeNode(breakpoint_timeout=0.05) as node:
        async with open_stream(http, node.url, {"injection": name}) as stream:
            await enable(http, node, name)
            assert (await call(http, "PUT", f"{node.url}/kv/k", data=b"v"))[0] == 200
            phases = [(await next_event(stream))["phase"] for _ in range(3)]
        assert phases == ["enable", "enter", "timeout"]
        assert await call(http, "GET", f"{node.url}/kv/k") == (200, b"v")
        assert f"{name}: no message within 0.05s" in _read(node.log_path)


@pytest.mark.asyncio
async def test_kv_write_error_fails_the_write_and_stores_nothing(
    node: FakeNode, http: aiohttp.ClientSession
) -> None:
    name = "kv_write_error"
    async with watch(http, node, [name]) as stream:
        await enable(http, node, name, one_shot=True)
        status, body = await call(http, "PUT", f"{node.url}/kv/k", data=b"v")
        assert (status, body) == (500, {"error": "injected error: kv_write_error"})
        event = await next_event(stream)
        assert (event["type"], event["enter_count"]) == ("exception", 1)
    assert (await call(http, "GET", f"{node.url}/kv/k"))[0] == 404
    assert (await call(http, "PUT", f"{node.url}/kv/k", data=b"v"))[0] == 200  # one shot spent


@pytest.mark.asyncio
async def test_kv_write_delay_sleeps_ms(node: FakeNode, http: aiohttp.ClientSession) -> None:
    name = "kv_write_delay"
    async with watch(http, node, [name]) as stream:
        await enable(http, node, name, parameters={"ms": "150"})
        start = time.monotonic()
        assert (await call(http, "PUT", f"{node.url}/kv/k", data=b"v"))[0] == 200
        assert time.monotonic() - start >= 0.15  # lower bounds only: a sleep never ends early
        event = await next_event(stream)
        assert (event["type"], event["parameters"]) == ("sleep", {"ms": "150"})

        await enable(http, node, name)  # no `ms`: the default 100
        start = time.monotonic()
        assert (await call(http, "PUT", f"{node.url}/kv/k", data=b"v"))[0] == 200
        assert time.monotonic() - start >= 0.1
        assert (await next_event(stream))["parameters"] == {}


@pytest.mark.asyncio
async def test_writes_on_a_sharded_node_hit_their_key_s_shard(
    http: aiohttp.ClientSession,
) -> None:
    """A one-shot fires once per shard: two keys on two shards both fail, then writes pass."""
    async with FakeNode(shards=2) as node:
        keys = {node.workload.shard_of(k): k for k in ("a", "b", "c", "d", "e", "f")}
        assert set(keys) == {0, 1}
        async with watch(http, node, ["kv_write_error"]) as stream:
            await enable(http, node, "kv_write_error", one_shot=True)
            state = await call(http, "GET", f"{node.url}{API}/injection/kv_write_error")
            assert state[1] == [{"enabled": True, "parameters": []}] * 2
            for shard in (0, 1):
                assert (await call(http, "PUT", f"{node.url}/kv/{keys[shard]}"))[0] == 500
                assert (await next_event(stream))["shard"] == shard
            for shard in (0, 1):
                assert (await call(http, "PUT", f"{node.url}/kv/{keys[shard]}"))[0] == 200
        assert await enters(http, node, "kv_write_error") == 2


@pytest.mark.asyncio
async def test_cluster_replicates_writes(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    first, second, third = cluster
    status, body = await call(http, "PUT", f"{first.url}/kv/k", data=b"v")
    assert status == 200
    assert sorted(body["replicated_to"]) == sorted([second.node_id, third.node_id])
    assert (body["dropped"], body["failed"]) == ([], [])
    for node in cluster:
        assert await call(http, "GET", f"{node.url}/kv/k") == (200, b"v")

    status, body = await call(http, "PUT", f"{second.url}/kv/local?replicate=false", data=b"x")
    assert (status, body["replicated_to"]) == (200, [])
    assert (await call(http, "GET", f"{first.url}/kv/local"))[0] == 404


@pytest.mark.asyncio
async def test_replication_before_send_pauses_only_that_peer(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    first, second, third = cluster
    name = "replication_before_send"
    async with watch(http, first, [name]) as paused, watch(http, second, ["kv_write_delay"]) as got:
        await enable(http, first, name, parameters={"peer": third.node_id})
        await enable(http, second, "kv_write_delay", parameters={"ms": "0"})  # marks arrival
        put = asyncio.create_task(call(http, "PUT", f"{first.url}/kv/k", data=b"v"))
        event = await next_event(paused)
        assert (event["type"], event["parameters"]) == ("wait_for_message", {"peer": third.node_id})
        await next_event(got)  # the other peer got its copy while this one is held back
        assert (await call(http, "GET", f"{third.url}/kv/k"))[0] == 404
        assert not put.done()
        assert await message(http, first, name) == 1
        status, body = await asyncio.wait_for(put, 5)
    assert status == 200
    assert sorted(body["replicated_to"]) == sorted([second.node_id, third.node_id])
    assert await enters(http, first, name) == 1  # only the forward to `peer` was paused
    for node in cluster:
        assert await call(http, "GET", f"{node.url}/kv/k") == (200, b"v")


@pytest.mark.asyncio
async def test_replication_before_send_without_peer_pauses_every_forward(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    first, second, third = cluster
    name = "replication_before_send"
    async with watch(http, first, [name]) as stream:
        await enable(http, first, name)
        put = asyncio.create_task(call(http, "PUT", f"{first.url}/kv/k", data=b"v"))
        await next_event(stream)
        await next_event(stream)
        assert await message(http, first, name) == 2  # one message releases both (shared)
        assert (await asyncio.wait_for(put, 5))[0] == 200
    for node in (second, third):
        assert await call(http, "GET", f"{node.url}/kv/k") == (200, b"v")


@pytest.mark.asyncio
async def test_replication_drop(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    first, second, third = cluster
    name = "replication_drop"
    async with watch(http, first, [name]) as stream:
        await enable(http, first, name, parameters={"peer": second.node_id})
        status, body = await call(http, "PUT", f"{first.url}/kv/k", data=b"v")
        assert status == 200
        assert (body["dropped"], body["replicated_to"]) == ([second.node_id], [third.node_id])
        event = await next_event(stream)
        assert (event["type"], event["enter_count"]) == ("lambda", 1)
        assert (await call(http, "GET", f"{second.url}/kv/k"))[0] == 404
        assert (await call(http, "GET", f"{third.url}/kv/k"))[0] == 200

        await enable(http, first, name)  # no peer: every forward is dropped
        status, body = await call(http, "PUT", f"{first.url}/kv/j", data=b"v")
        assert sorted(body["dropped"]) == sorted([second.node_id, third.node_id])
        assert body["replicated_to"] == []
    for node in (second, third):
        assert (await call(http, "GET", f"{node.url}/kv/j"))[0] == 404


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
@pytest.mark.asyncio
async def test_peer_parameter_takes_the_node_id_on_ipv6(http: aiohttp.ClientSession) -> None:
    """A node's own id is the id its peers report and match `peer` against."""
    async with FakeCluster(2, host="::1") as (first, second):
        assert second.node_id == second.url.removeprefix("http://")
        await enable(http, first, "replication_drop", parameters={"peer": second.node_id})
        status, body = await call(http, "PUT", f"{first.url}/kv/k", data=b"v")
        assert (status, body["dropped"], body["replicated_to"]) == (200, [second.node_id], [])


@pytest.mark.asyncio
async def test_coordinator_pause_and_batch_size(
    node: FakeNode, http: aiohttp.ClientSession
) -> None:
    pause, batch = "coordinator_pause_before_processing_backlog", "coordinator_batch_size"

    async def status_of(request_id: str) -> str:
        status, body = await call(http, "GET", f"{node.url}/topology/requests/{request_id}")
        assert status == 200, body
        return body["status"]

    async def add() -> str:
        status, body = await call(http, "POST", f"{node.url}/topology/requests", json={})
        assert status == 200, body
        return body["id"]

    async with watch(http, node, [pause, batch]) as stream:
        await enable(http, node, pause, one_shot=True)
        await enable(http, node, batch, parameters={"value": "2"})
        ids = [await add()]
        event = await next_event(stream)
        assert (event["injection"], event["type"]) == (pause, "wait_for_message")
        ids += [await add(), await add()]  # queued behind the paused coordinator
        assert [await status_of(i) for i in ids] == ["queued"] * 3
        assert await message(http, node, pause) == 1
        rounds = [await next_event(stream), await next_event(stream)]
        assert [(e["injection"], e["type"], e["enter_count"]) for e in rounds] == [
            (batch, "parameter", 1),
            (batch, "parameter", 2),
        ]
        # The second round's event comes after the first round's requests were marked done,
        # in the same loop step as its own: by now all three are done, in two rounds of 2 + 1.
        assert [await status_of(i) for i in ids] == ["done"] * 3
    assert await enters(http, node, batch) == 2
    assert await enters(http, node, pause) == 1


# -- threads, lifecycle, bad input ---------------------------------------------------------------


def _urlopen(method: str, url: str, data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def test_node_serves_while_the_calling_thread_blocks(node: FakeNode) -> None:
    """Plain blocking urllib from the test thread while a write parks and resumes."""
    name = "kv_write_before_apply"
    assert _urlopen("POST", f"{node.url}{API}/injection/{name}?one_shot=true")[0] == 200
    events_url = f"{node.url}{API}/events?injection={name}&phase=enter"
    with (
        urllib.request.urlopen(events_url, timeout=10) as stream,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        put = pool.submit(_urlopen, "PUT", f"{node.url}/kv/k", b"v")
        line = stream.readline()
        while not line.startswith(b"data:"):  # this thread blocks; the node goes on
            line = stream.readline()
        assert json.loads(line[5:])["injection"] == name
        assert _urlopen("GET", f"{node.url}/kv/k")[0] == 404
        assert not put.done()
        assert _urlopen("POST", f"{node.url}{API}/injection/{name}/message")[0] == 200
        assert put.result(timeout=10)[0] == 200
    assert _urlopen("GET", f"{node.url}/kv/k") == (200, b"v")
    assert node.call(node.injector.enter_count, name) == 1


def _open_fds() -> int:
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def _assert_port_free(port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))  # fails while anything still listens there


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open fds in /proc")
def test_start_stop_twice_leaves_nothing_behind() -> None:
    threads = set(threading.enumerate())
    fds = _open_fds()
    node = FakeNode()
    for _ in range(2):
        node.start()
        assert node.running
        assert _urlopen("PUT", f"{node.url}/kv/k", b"v")[0] == 200
        loop = node._loop
        node.stop()
        assert not node.running
        assert loop is not None and loop.is_closed()  # so no task of it can still run
        assert set(threading.enumerate()) == threads
        _assert_port_free(node.port)
        assert _open_fds() == fds  # no socket, loop or log file left open
    node.stop()  # stopping a stopped node is harmless

    with FakeNode() as node:
        with pytest.raises(RuntimeError, match="already running"):
            node.start()
    _assert_port_free(node.port)
    with FakeCluster(2) as cluster:
        ports = [n.port for n in cluster]
        assert all(n.peers == [o.url for o in cluster if o is not n] for n in cluster)
    for port in ports:
        _assert_port_free(port)
    assert set(threading.enumerate()) == threads
    assert _open_fds() == fds


@pytest.mark.asyncio
async def test_async_context_managers(http: aiohttp.ClientSession) -> None:
    async with FakeNode(node_id="n1") as node:
        assert node.node_id == "n1"
        assert await call(http, "GET", f"{node.url}{API}/injection") == (200, [])
    _assert_port_free(node.port)
    async with FakeCluster(2) as cluster:
        status, body = await call(http, "PUT", f"{cluster[0].url}/kv/k", data=b"v")
        assert (status, body["replicated_to"]) == (200, [cluster[1].node_id])
    for node in cluster:
        _assert_port_free(node.port)


@pytest.mark.asyncio
async def test_stop_cancels_parked_work_promptly(http: aiohttp.ClientSession) -> None:
    """Work parked at a breakpoint never ends by itself: stop aborts it instead of waiting."""
    before_apply, before_send = "kv_write_before_apply", "replication_before_send"
    pause = "coordinator_pause_before_processing_backlog"
    cluster = FakeCluster(2)
    first = cluster[0]
    with cluster:
        async with watch(http, first, [before_apply, before_send, pause]) as stream:
            await enable(http, first, before_apply, one_shot=True)
            write = asyncio.create_task(call(http, "PUT", f"{first.url}/kv/k", data=b"v"))
            assert (await next_event(stream))["injection"] == before_apply
            await enable(http, first, before_send)
            forward = asyncio.create_task(call(http, "PUT", f"{first.url}/kv/j", data=b"v"))
            assert (await next_event(stream))["injection"] == before_send
            await enable(http, first, pause)
            await call(http, "POST", f"{first.url}/topology/requests", json={})
            assert (await next_event(stream))["injection"] == pause
            start = time.monotonic()
            cluster.stop()
            # aiohttp's graceful wait would hold it 2 s; a generous bound, far from both.
            assert time.monotonic() - start < 1.5
            with pytest.raises(EOFError):
                await stream.next(5)
    for request in (write, forward):
        with pytest.raises(aiohttp.ClientError):
            await request
    assert first.injector.waiters(before_apply) == first.injector.waiters(before_send) == 0
    assert "k" not in first.workload.store  # aborted, not let through
    assert "j" not in cluster[1].workload.store
    for node in cluster:
        _assert_port_free(node.port)


def test_bad_constructor_input_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match=r"refusing to listen on '10\.1\.2\.3'.*allow_remote"):
        FakeNode(host="10.1.2.3")
    assert FakeNode(host="10.1.2.3", allow_remote=True).url == "http://10.1.2.3:0"  # not started
    with pytest.raises(ValueError, match="shards must be at least 1, got 0"):
        FakeNode(shards=0)
    with pytest.raises(ValueError, match="negative number of nodes, got n=-1"):
        FakeCluster(-1)
    assert len(FakeCluster(0)) == 0  # grown with add_node, as ScyllaDB's test manager does
    with pytest.raises(ValueError, match="not a TCP port: 70000"):
        FakeNode(port=70000)
    node = FakeNode()
    node.port = 65536  # as `serve --port 65535 --nodes 2` sets its second node
    with pytest.raises(ValueError, match="not a TCP port: 65536"):
        node.start()
    assert not node.running


def test_start_on_a_taken_port_fails_and_cleans_up() -> None:
    threads = set(threading.enumerate())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        node = FakeNode(port=taken.getsockname()[1])
        with pytest.raises(OSError):
            node.start()
    assert not node.running
    assert set(threading.enumerate()) == threads
