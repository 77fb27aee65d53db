"""Fake nodes as a cluster test uses them: restarts are new lives, logs outlive nodes,
nodes without `/events`, and a cluster changed while the test runs."""

from __future__ import annotations

import asyncio
import gc
import json
import os
from typing import Any

import aiohttp
import pytest
from sse import open_stream

from pytest_injection_events.event_schema import PHASES
from pytest_injection_events.node import FakeCluster, FakeNode
from pytest_injection_events.protocol import BOOT_HEADER, PREFIX


async def call(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> Any:
    async with http.request(method, url, **kwargs) as response:
        body = await response.read()
        if response.content_type == "application/json" and body:
            return response.status, json.loads(body)
        return response.status, body


async def enable(http: aiohttp.ClientSession, node: FakeNode, name: str, **params: str) -> None:
    status, body = await call(http, "POST", f"{node.url}{PREFIX}/injection/{name}", json=params)
    assert status == 200, body


async def boot_of(http: aiohttp.ClientSession, node: FakeNode) -> str:
    async with open_stream(http, node.url) as stream:
        return stream.response.headers[BOOT_HEADER]


def log_text(node: FakeNode) -> str:
    node.call(lambda: None)  # the node's pending log callbacks run before this one
    assert node.log_path is not None
    with open(node.log_path, encoding="utf-8") as log:
        return log.read()


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["restart", "stop_start"])
async def test_a_restart_is_a_new_life_on_the_same_address_and_log(how: str) -> None:
    """Same host, port, node id and log file (appended); a fresh injector (nothing
    enabled, counters at 0, the same declared points) and event log (seq from 1, a
    new boot id in `X-Injection-Boot`); the stored data survives, as on disk."""
    async with aiohttp.ClientSession() as http:
        node = FakeNode(breakpoint_timeout=0.05)
        with node:
            await enable(http, node, "kv_write_before_apply")
            assert (await call(http, "PUT", f"{node.url}/kv/k", data=b"v"))[0] == 200
            before = (node.port, node.node_id, node.log_path, node.url)
            old_boot, old_injector, old_log = (
                await boot_of(http, node),
                node.injector,
                node.event_log,
            )
            assert old_boot == node.boot_id
            first_life = log_text(node)
            if how == "restart":
                node.restart()
            else:
                node.stop()
                node.start()
            assert (node.port, node.node_id, node.log_path, node.url) == before
            assert node.injector is not old_injector and node.event_log is not old_log
            new_boot = await boot_of(http, node)
            assert new_boot == node.boot_id != old_boot
            status, enabled = await call(http, "GET", f"{node.url}{PREFIX}/injection")
            assert (status, enabled) == (200, [])
            url = f"{node.url}{PREFIX}/injection/kv_write_before_apply/enters"
            assert await call(http, "GET", url) == (200, 0)
            status, points = await call(http, "GET", f"{node.url}{PREFIX}/points")
            assert [p["name"] for p in points] == [p.name for p in old_injector.catalog()]
            assert node.event_log.last_seq == 0
            assert (await call(http, "GET", f"{node.url}/kv/k"))[0] == 200  # data kept
            await enable(http, node, "kv_write_before_apply")
            assert (await call(http, "PUT", f"{node.url}/kv/k2", data=b"v"))[0] == 200
            assert [r.seq for r in node.call(node.event_log.since, 0)] == [1, 2, 3]
            second = log_text(node)
    assert second.startswith(first_life)  # appended, not truncated
    assert second.count("kv_write_before_apply: waiting for message") == 2
    node.close()


@pytest.mark.asyncio
async def test_restart_rebinds_its_port_while_clients_were_connected() -> None:
    """A stream open at the stop ends; the port is taken again at once, every time."""
    async with aiohttp.ClientSession() as http:
        with FakeNode() as node:
            port = node.port
            for _ in range(5):
                async with open_stream(http, node.url) as stream:
                    node.restart()
                    with pytest.raises(EOFError):
                        await stream.next(5)
                assert node.port == port
                assert (await call(http, "PUT", f"{node.url}/kv/k", data=b"v"))[0] == 200
        node.close()


def test_the_log_outlives_stop_and_goes_at_close(tmp_path: Any) -> None:
    node = FakeNode()
    assert node.log_path is None  # made at the first start
    with node:
        path = node.log_path
        assert path is not None
    with open(path, encoding="utf-8"):
        pass  # still there after stop
    node.start()
    node.stop()
    assert node.log_path == path and os.path.exists(path)
    node.close()
    assert not os.path.exists(os.path.dirname(path))
    node.close()  # twice is harmless

    collected = FakeNode().start()
    path = collected.log_path
    assert path is not None
    collected.stop()
    del collected
    gc.collect()
    assert not os.path.exists(path)  # the temp dir goes with the node, without a warning

    given = tmp_path / "node.log"
    with FakeNode(log_path=given) as mine:
        pass
    mine.close()
    assert given.exists()  # a log the caller named is the caller's


@pytest.mark.asyncio
async def test_a_node_started_again_on_the_same_path_appends(tmp_path: Any) -> None:
    """As a restarted ScyllaDB server does, also as a new FakeNode object; `log_file`,
    the old name of `log_path`, still works."""
    path = tmp_path / "server.log"
    async with aiohttp.ClientSession() as http:
        for keyword in ("log_path", "log_file"):
            with FakeNode(breakpoint_timeout=0.01, **{keyword: path}) as node:
                assert node.log_path == str(path)
                await enable(http, node, "kv_write_before_apply")
                assert (await call(http, "PUT", f"{node.url}/kv/k", data=b"v"))[0] == 200
                log_text(node)
    assert path.read_text(encoding="utf-8").count("waiting for message") == 2


def test_bad_log_options_are_refused_clearly(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="log_level must be one of info, debug, got 'trace'"):
        FakeNode(log_level="trace")
    with pytest.raises(ValueError, match="log_path or log_file"):
        FakeNode(log_path=tmp_path / "a", log_file=tmp_path / "b")
    node = FakeNode(log_path=tmp_path / "missing" / "node.log")
    with pytest.raises(FileNotFoundError):
        node.start()
    assert not node.running
    assert FakeNode(log_level="DEBUG").log_level == "debug"


@pytest.mark.asyncio
async def test_a_node_without_events_serves_scylla_s_api_only() -> None:
    """`events=False`: no `/events`, no `/points` (404 JSON as any unknown path), the
    rest of ScyllaDB's API and the workload as usual, and the log file."""
    async with aiohttp.ClientSession() as http:
        with FakeNode(events=False) as node:
            for method, path in [
                ("GET", "/events"),
                ("HEAD", "/events"),
                ("POST", "/events"),
                ("GET", "/points"),
            ]:
                status, body = await call(http, method, f"{node.url}{PREFIX}{path}")
                assert status == 404
                if method != "HEAD":
                    assert body == {"error": f"no such endpoint: {method} {PREFIX}{path}"}
            name = "kv_write_delay"
            await enable(http, node, name, ms="1")
            status, enabled = await call(http, "GET", f"{node.url}{PREFIX}/injection")
            assert enabled == [name]
            status, state = await call(http, "GET", f"{node.url}{PREFIX}/injection/{name}")
            assert state == [{"enabled": True, "parameters": [{"key": "ms", "value": "1"}]}]
            assert (await call(http, "PUT", f"{node.url}/kv/k", data=b"v"))[0] == 200
            assert await call(http, "GET", f"{node.url}{PREFIX}/injection/{name}/enters") == (
                200,
                1,
            )
            node.restart()  # still without events in its new life
            assert (await call(http, "GET", f"{node.url}{PREFIX}/events"))[0] == 404
        node.close()


@pytest.mark.asyncio
async def test_handler_point_waits_past_its_filter() -> None:
    """`kv_write_key_pause` (key=k): every write enters; only a write of k waits (phase
    `wait`, after its own `kv` line), until a message lets it go on."""
    async with aiohttp.ClientSession() as http, FakeNode() as node:
        name = "kv_write_key_pause"
        await enable(http, node, name, key="k")
        params = [("injection", name), ("last_event_id", "0")]
        params += [("phase", p) for p in PHASES if p != "gap"]
        async with open_stream(http, node.url, params) as stream:
            assert (await stream.next()).json["phase"] == "enable"
            assert (await call(http, "PUT", f"{node.url}/kv/other", data=b"v"))[0] == 200
            assert (await stream.next()).json["phase"] == "enter"  # filtered out: no wait
            write = asyncio.create_task(call(http, "PUT", f"{node.url}/kv/k", data=b"v"))
            entered, waiting = [m.json for m in await stream.take(2)]
            assert (entered["phase"], waiting["phase"]) == ("enter", "wait")
            assert (waiting["type"], waiting["shard"], waiting["enter_count"]) == ("handler", 0, 2)
            assert "kv_write_key_pause: waiting (key k)" in log_text(node)
            assert not write.done()
            status, _ = await call(http, "POST", f"{node.url}{PREFIX}/injection/{name}/message")
            assert status == 200
            assert [m.json["phase"] for m in await stream.take(2)] == ["message", "resume"]
            assert (await write)[0] == 200
    assert "kv_write_key_pause: waiting (key other)" not in log_text(node)


# -- a cluster changed while the test runs ----------------------------------------------------


@pytest.mark.asyncio
async def test_cluster_adds_stops_restarts_and_removes_nodes() -> None:
    async with aiohttp.ClientSession() as http:
        cluster = FakeCluster(2)
        with cluster:
            first, second = cluster
            third = cluster.add_node()
            assert third.running and len(cluster) == 3
            for node in cluster:
                assert sorted(node.peers) == sorted(o.url for o in cluster if o is not node)
            status, body = await call(http, "PUT", f"{first.url}/kv/a", data=b"1")
            assert (status, sorted(body["replicated_to"])) == (
                200,
                sorted([second.node_id, third.node_id]),
            )
            plain = cluster.add_nodes(2, events=False, log_level="debug")
            assert [n.events for n in cluster] == [True, True, True, False, False]
            assert all(n.log_level == "debug" for n in plain)
            assert (await call(http, "GET", f"{plain[0].url}{PREFIX}/events"))[0] == 404
            assert (await call(http, "GET", f"{first.url}{PREFIX}/points"))[0] == 200

            cluster.stop_node(second)
            assert not second.running and second.url in first.peers  # down, still a member
            status, body = await call(http, "PUT", f"{first.url}/kv/b", data=b"2")
            assert body["failed"] == [second.node_id]
            boot = second.boot_id
            cluster.start_node(second)
            assert second.running and second.boot_id != boot
            boot = third.boot_id
            cluster.restart_node(third)
            assert third.boot_id != boot

            cluster.remove_node(plain[1])
            assert not plain[1].running and plain[1] not in cluster.nodes
            assert all(plain[1].url not in node.peers for node in cluster)
            status, body = await call(http, "PUT", f"{first.url}/kv/c", data=b"3")
            assert sorted(body["replicated_to"]) == sorted(n.node_id for n in cluster[1:])
            with pytest.raises(ValueError, match="not a node of this cluster"):
                cluster.restart_node(plain[1])
            with pytest.raises(ValueError, match="at least one"):
                cluster.add_nodes(0)
        assert not any(node.running for node in cluster)
        removed_log = plain[1].log_path
        assert removed_log is not None
        assert await asyncio.to_thread(os.path.exists, removed_log)  # still readable
        cluster.close()  # removed nodes' logs go too
    assert not await asyncio.to_thread(os.path.exists, removed_log)
