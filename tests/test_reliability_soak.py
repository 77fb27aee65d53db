"""Soak (issue 6, item 1): 50 stream clients on a 3-node FakeCluster while a mixed
workload hits points without pause; every client gets every event of every node exactly
once and in seq order, and the nodes' memory stays bounded by their settings.

The clients are of two kinds, half each: the product's `InjectionEventStream` (one per
client, merging the three nodes) and the independent reader of tests/sse.py (one
connection per node). The workload is real HTTP (replicated `PUT /kv/...` through
`kv_write_delay` with ms=0, topology requests through `coordinator_batch_size`) plus
bursts of hits driven on each node's own loop with `node.call`, to reach volume.

What every client got is compared, event by event, with what each node published,
as recorded by a listener the test adds to the node's injector after the event log's
own; the same listener samples the event log and every subscription at every event,
which is where their sizes peak.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from polling import wait_until
from sse import RawStream

from pytest_injection_events import InjectionApi, InjectionEventStream
from pytest_injection_events.event_schema import GAP, GAP_SLOW_CLIENT
from pytest_injection_events.node import (
    COORDINATOR_BATCH_SIZE,
    KV_WRITE_DELAY,
    FakeCluster,
    FakeNode,
)

EVENTS = "/v2/error_injection/events"
NODES = 3
STREAM_CLIENTS = 25  # InjectionEventStream, each on the three nodes
RAW_CLIENTS = 25  # tests/sse.py readers, one connection per node each
ROUNDS = 15  # workload rounds; each one writes, queues a topology request and bursts
WRITES_PER_ROUND = 3  # replicated PUTs (3 events each: the node and its two peers)
TICKS_PER_ROUND = 20  # node.call-driven hits per node per round, in one burst
CAPACITY = 150  # events each node keeps for replay: far fewer than it publishes
MAX_PENDING = 50  # per-subscription bound (below CAPACITY: a reader cut off can resume)
TICK = "soak_tick"
END = "soak_end"

#: Filled by the test, for docs/reliability.md and whoever reads a failure.
FIGURES: dict[str, Any] = {}

Key = tuple[int, str, str, int]  # seq, injection, phase, enter_count


@dataclass
class Recorder:
    """An injector listener added after the event log's: sees each event just published,
    so `last_seq` is its seq, and every subscription at its fullest."""

    node: FakeNode
    published: list[Key] = field(default_factory=list)
    peak_kept: int = 0
    peak_pending: int = 0
    over_bound: list[tuple[int, int, int]] = field(default_factory=list)

    def __call__(
        self,
        name: str,
        kind: str | None,
        phase: str,
        shard: int | None,
        enter_count: int,
        one_shot: bool,
        parameters: Mapping[str, str],
    ) -> None:
        log = self.node.event_log
        self.published.append((log.last_seq, name, phase, enter_count))
        self.peak_kept = max(self.peak_kept, log.kept)
        for subscription in log._subscriptions:
            pending = subscription.backlog  # how far behind the newest event it is
            self.peak_pending = max(self.peak_pending, pending)
            if pending > subscription.max_pending:
                self.over_bound.append((log.last_seq, pending, subscription.max_pending))


class RawClient:
    """One reader per node, with tests/sse.py; resumes by Last-Event-ID if the node ever
    cuts it off as too slow (counted), as any EventSource would."""

    def __init__(self, session: aiohttp.ClientSession, nodes: list[FakeNode]) -> None:
        self.session = session
        self.nodes = nodes
        self.got: dict[str, list[Key]] = {node.node_id: [] for node in nodes}
        self.resumed = 0
        self._responses: list[aiohttp.ClientResponse] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        for node in self.nodes:
            response = await self._get(node, None)
            self._tasks.append(asyncio.create_task(self._read(node, response)))

    async def _get(self, node: FakeNode, last_id: str | None) -> aiohttp.ClientResponse:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        response = await self.session.get(
            node.url + EVENTS, params={"phase": "all"}, headers=headers
        )
        assert response.status == 200, await response.text()
        self._responses.append(response)
        return response

    async def _read(self, node: FakeNode, response: aiohttp.ClientResponse) -> None:
        got = self.got[node.node_id]
        stream = RawStream(response)
        while True:
            message = await stream.next(timeout=30)
            data = message.json
            if data["phase"] == GAP:
                assert data["reason"] == GAP_SLOW_CLIENT, data  # nothing is ever dropped
                self.resumed += 1
                response.close()
                response = await self._get(node, stream.last_id)
                stream = RawStream(response)
                continue
            assert message.id == str(data["seq"]) and data["node"] == node.node_id, message
            got.append((data["seq"], data["injection"], data["phase"], data["enter_count"]))
            if data["injection"] == END and data["phase"] == "enter":
                return

    async def finished(self) -> None:
        await asyncio.gather(*self._tasks)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for response in self._responses:
            response.close()


def burst(node: FakeNode, times: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(times):
            node.injector.inject(TICK, lambda: None)

    return run


async def run_workload(
    cluster: FakeCluster, http: aiohttp.ClientSession, driver: InjectionEventStream
) -> dict[str, int]:
    """ROUNDS rounds of: replicated writes on every node at once, one topology request
    (awaited through its `coordinator_batch_size` event on `driver`, so the coordinator's
    events all land before the end marker) and a burst of hits on each node."""
    nodes = list(cluster)
    for node in nodes:
        api = InjectionApi(node.url, session=http)
        await api.enable_injection(KV_WRITE_DELAY, parameters={"ms": 0})
        await api.enable_injection(COORDINATOR_BATCH_SIZE, parameters={"value": 8})
        await api.enable_injection(TICK)
        await api.enable_injection(END, one_shot=True)
    writes = topology = ticks = 0

    async def put(node: FakeNode, key: str) -> None:
        async with http.put(f"{node.url}/kv/{key}", data=key.encode()) as response:
            body = await response.json()
            assert response.status == 200, body
            assert len(body["replicated_to"]) == NODES - 1, body

    for round_ in range(ROUNDS):
        await asyncio.gather(
            *(put(nodes[(round_ + i) % NODES], f"k{round_}-{i}") for i in range(WRITES_PER_ROUND))
        )
        writes += WRITES_PER_ROUND
        target = nodes[round_ % NODES]
        async with http.post(f"{target.url}/topology/requests", json={"op": round_}) as response:
            assert response.status == 200
        await driver.wait_for_injection(COORDINATOR_BATCH_SIZE, timeout=10, node=target)
        topology += 1
        for node in nodes:
            node.call(burst(node, TICKS_PER_ROUND))
        ticks += TICKS_PER_ROUND * NODES
    for node in nodes:
        node.call(lambda node=node: node.injector.inject(END, lambda: None))
    return {"writes": writes, "topology": topology, "ticks": ticks}


@pytest.mark.asyncio
async def test_fifty_clients_get_every_event_exactly_once_in_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 25 clients x 3 nodes x thousands of events would fill the captured log: only warnings.
    caplog.set_level(logging.WARNING, logger="pytest_injection_events.events")
    started = time.monotonic()
    with FakeCluster(NODES, event_capacity=CAPACITY, max_pending=MAX_PENDING) as cluster:
        recorders = [Recorder(node) for node in cluster]
        removers = [
            node.call(node.injector.add_listener, r)
            for node, r in zip(cluster, recorders, strict=True)
        ]
        urls = cluster.urls
        streams = [InjectionEventStream(urls) for _ in range(STREAM_CLIENTS)]
        connector = aiohttp.TCPConnector(limit=0)
        async with (
            aiohttp.ClientSession(connector=connector) as raw_session,
            aiohttp.ClientSession() as http,
            contextlib.AsyncExitStack() as stack,
        ):
            raws = [RawClient(raw_session, list(cluster)) for _ in range(RAW_CLIENTS)]
            for raw in raws:
                stack.push_async_callback(raw.close)
            for stream in streams:
                await stack.enter_async_context(stream)
            await asyncio.gather(*(raw.open() for raw in raws))
            for node in cluster:
                assert node.call(lambda node=node: node.event_log.subscriber_count) == 50
            connected = time.monotonic()

            counts = await run_workload(cluster, http, streams[0])
            produced = time.monotonic()
            await asyncio.wait_for(
                asyncio.gather(
                    *(s.wait_for_injection(END, count=NODES, timeout=40) for s in streams),
                    *(raw.finished() for raw in raws),
                ),
                45,
            )
            delivered = time.monotonic()

            expected = {
                node.node_id: r.published for node, r in zip(cluster, recorders, strict=True)
            }
            for recorder in recorders:
                # The end marker is each node's last event: nothing came after it.
                assert recorder.published[-1][1:3] == (END, "enter")
                assert [key[0] for key in recorder.published] == list(
                    range(1, len(recorder.published) + 1)
                )
            for index, stream in enumerate(streams):
                assert stream.gaps == [], index
                for node_id, published in expected.items():
                    got = [
                        (e.seq, e.injection, e.phase, e.enter_count)
                        for e in stream.events
                        if e.node == node_id
                    ]
                    assert got == published, (index, node_id)
            for index, raw in enumerate(raws):
                assert raw.got == expected, index
            stream_reconnects = sum(s.reconnects for s in streams)
            raw_resumes = sum(raw.resumed for raw in raws)

        for node, recorder in zip(cluster, recorders, strict=True):
            log = node.event_log
            assert log.kept == CAPACITY  # it published many more; it keeps CAPACITY
            assert recorder.peak_kept <= CAPACITY
            assert recorder.over_bound == []
            assert recorder.peak_pending <= MAX_PENDING
            # Every client gone, no subscription (and so nothing pending) is left.
            await wait_until(
                lambda node=node, log=log: node.call(lambda: log.subscriber_count) == 0,
                timeout=10.0,
                period=0.01,
            )
        for node, remove in zip(cluster, removers, strict=True):
            node.call(remove)
    finished = time.monotonic()
    published = [len(r.published) for r in recorders]
    FIGURES.update(
        clients=STREAM_CLIENTS + RAW_CLIENTS,
        connections=(STREAM_CLIENTS + RAW_CLIENTS) * NODES,
        events_per_node=published,
        events=sum(published),
        deliveries=sum(published) * (STREAM_CLIENTS + RAW_CLIENTS),
        **counts,
        peak_pending=max(r.peak_pending for r in recorders),
        peak_kept=max(r.peak_kept for r in recorders),
        stream_reconnects=stream_reconnects,
        raw_resumes=raw_resumes,
        connect_s=round(connected - started, 2),
        workload_s=round(produced - connected, 2),
        drain_s=round(delivered - produced, 2),
        total_s=round(finished - started, 2),
    )
    print("soak figures:", FIGURES)
    # The bound on the log is only shown if the nodes published well past it.
    assert min(published) > 2 * CAPACITY
