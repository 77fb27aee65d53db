"""injection_event_stream (SPEC §7) against real nodes over real HTTP: connected on entry,
consume-once waits and their filters, merged nodes, sync use, reconnects that lose
nothing (cut through tests/proxy.py), explicit loss, node restarts, the /enters
fallback, connection errors, and the words of InjectionTimeout."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from helpers import closed_port
from proxy import HOLD, REFUSE, Proxy

from pytest_injection_events import (
    EventsLost,
    InjectionApi,
    InjectionEvent,
    InjectionEventStream,
    InjectionTimeout,
    StreamConnectError,
    UnsupportedWait,
    injection_event_stream,
)
from pytest_injection_events.node import FakeCluster, FakeNode


def enable(node: FakeNode, name: str, one_shot: bool = False, **parameters: str) -> None:
    node.call(node.injector.enable, name, one_shot, parameters)


def hit(node: FakeNode, name: str, times: int = 1, *, shard: int = 0) -> None:
    """Enter a `lambda` point `times` times in one go on the node's loop (one burst)."""

    def burst() -> None:
        for _ in range(times):
            node.injector.inject(name, lambda: None, shard=shard)

    node.call(burst)


def seqs(events: list[InjectionEvent]) -> list[int | None]:
    return [event.seq for event in events]


def no_other_task() -> bool:
    return asyncio.all_tasks() == {asyncio.current_task()}


# -- connected on entry, consume-once waits ---------------------------------------


@pytest.mark.asyncio
async def test_connected_when_aenter_returns(node: FakeNode) -> None:
    async with injection_event_stream(node.url) as stream:
        enable(node, "p")  # at once: no await between entry and the publish
        hit(node, "p")
        event = await stream.wait_for_injection("p", timeout=5)
    assert (event.injection, event.phase, event.seq, event.enter_count) == ("p", "enter", 2, 1)
    assert (event.node, event.shard, event.type, event.one_shot) == (
        node.node_id,
        0,
        "lambda",
        False,
    )
    assert [(e.injection, e.phase) for e in stream.events] == [("p", "enable"), ("p", "enter")]


@pytest.mark.asyncio
async def test_a_second_wait_returns_a_later_hit(node: FakeNode) -> None:
    async with injection_event_stream(node.url) as stream:
        enable(node, "p")
        hit(node, "p", 2)
        first = await stream.wait_for_injection("p", timeout=5)
        second = await stream.wait_for_injection("p", timeout=5)
        assert (first.enter_count, second.enter_count) == (1, 2)
        later = asyncio.create_task(stream.wait_for_injection("p", timeout=5))
        hit(node, "p")
        assert (await later).enter_count == 3
        with pytest.raises(InjectionTimeout):
            await stream.wait_for_injection("p", timeout=0.05)  # all three were consumed


@pytest.mark.asyncio
async def test_an_event_already_arrived_returns_at_once(node: FakeNode) -> None:
    async with injection_event_stream(node.url) as stream:
        enable(node, "p")
        hit(node, "p")
        await stream.wait_for_injection("p", phase="enable", timeout=5)  # both arrived
        started = time.monotonic()
        event = await stream.wait_for_injection("p", timeout=0)
        assert event.enter_count == 1
        assert time.monotonic() - started < 0.05


@pytest.mark.asyncio
async def test_count_returns_the_nth_hit(node: FakeNode) -> None:
    async with injection_event_stream(node.url) as stream:
        enable(node, "p")
        hit(node, "p", 2)
        pending = asyncio.create_task(stream.wait_for_injection("p", count=3, timeout=5))
        await stream.wait_for_injection("p", phase="enable", timeout=5)
        assert not pending.done()  # two of three
        hit(node, "p", 2)
        assert (await pending).enter_count == 3
        assert (await stream.wait_for_injection("p", timeout=5)).enter_count == 4


@pytest.mark.asyncio
async def test_consume_false_counts_everything_and_takes_nothing(node: FakeNode) -> None:
    async with injection_event_stream(node.url) as stream:
        enable(node, "p")
        hit(node, "p", 2)
        assert (await stream.wait_for_injection("p", timeout=5)).enter_count == 1
        peek = await stream.wait_for_injection("p", count=2, timeout=5, consume=False)
        assert peek.enter_count == 2  # the consumed first hit still counts
        assert (await stream.wait_for_injection("p", timeout=5)).enter_count == 2


@pytest.mark.asyncio
async def test_a_wait_that_times_out_gives_back_what_it_took(node: FakeNode) -> None:
    async with injection_event_stream(node.url) as stream:
        enable(node, "p")
        hit(node, "p", 2)
        with pytest.raises(InjectionTimeout):
            await stream.wait_for_injection("p", count=3, timeout=0.2)
        assert (await stream.wait_for_injection("p", timeout=0)).enter_count == 1
        assert (await stream.wait_for_injection("p", timeout=0)).enter_count == 2


@pytest.mark.asyncio
async def test_a_cancelled_wait_gives_back_what_it_took(node: FakeNode) -> None:
    async with injection_event_stream(node.url) as stream:
        enable(node, "p")
        pending = asyncio.create_task(stream.wait_for_injection("p", count=2, timeout=5))
        hit(node, "p")
        await stream.wait_for_injection("p", phase="enable", timeout=5)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        assert (await stream.wait_for_injection("p", timeout=0)).enter_count == 1


# -- filters -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_phase_filter_on_a_real_breakpoint(
    node: FakeNode, http: aiohttp.ClientSession
) -> None:
    api = InjectionApi(node.url)
    async with injection_event_stream(node.url) as stream:
        await api.enable_injection("kv_write_before_apply", one_shot=True)
        put = asyncio.create_task(http.put(f"{node.url}/kv/k", data=b"v"))
        enter = await stream.wait_for_injection("kv_write_before_apply", timeout=5)
        await api.message_injection("kv_write_before_apply")
        resume = await stream.wait_for_injection("kv_write_before_apply", timeout=5, phase="resume")
        message = await stream.wait_for_injection(
            "kv_write_before_apply", timeout=0, phase="message"
        )
        async with await put as response:
            assert response.status == 200
    assert (enter.type, enter.one_shot) == ("wait_for_message", True)
    assert enter.seq < message.seq < resume.seq


@pytest.mark.asyncio
async def test_shard_filter() -> None:
    with FakeNode(shards=2) as node:
        async with injection_event_stream(node.url) as stream:
            enable(node, "p")
            hit(node, "p", shard=0)
            hit(node, "p", shard=1)
            on_1 = await stream.wait_for_injection("p", shard=1, timeout=5)
            on_0 = await stream.wait_for_injection("p", shard=0, timeout=0)  # not taken by on_1
            with pytest.raises(InjectionTimeout):
                await stream.wait_for_injection("p", shard=1, timeout=0.05)
    assert (on_0.shard, on_0.enter_count, on_1.shard, on_1.enter_count) == (0, 1, 1, 2)


@pytest.mark.asyncio
async def test_predicate_filter(node: FakeNode) -> None:
    async with injection_event_stream(node.url) as stream:
        enable(node, "p", peer="a")
        hit(node, "p")
        enable(node, "p", peer="b")
        hit(node, "p")
        event = await stream.wait_for_injection(
            "p", timeout=5, predicate=lambda e: e.parameters.get("peer") == "b"
        )
        assert event.parameters == {"peer": "b"}
        assert (await stream.wait_for_injection("p", timeout=0)).parameters == {"peer": "a"}


@pytest.mark.asyncio
async def test_several_nodes_merge_and_node_filter_takes_id_url_or_node() -> None:
    with FakeCluster(3) as cluster:
        a, b, c = cluster
        async with injection_event_stream(cluster.urls) as stream:
            for node in cluster:
                enable(node, "p")
            for node in (c, b, a, c):
                hit(node, "p")
            by_object = await stream.wait_for_injection("p", node=b, timeout=5)
            by_url = await stream.wait_for_injection("p", node=c.url, timeout=5)
            by_id = await stream.wait_for_injection("p", node=c.node_id, timeout=5)
            unfiltered = await stream.wait_for_injection("p", timeout=5)
        assert (by_object.node, by_url.node, by_id.node) == (b.node_id, c.node_id, c.node_id)
        assert unfiltered.node == a.node_id
        assert {e.node for e in stream.events} == {a.node_id, b.node_id, c.node_id}
        for node in cluster:  # per node, its own seq from 1 with no hole
            assert seqs([e for e in stream.events if e.node == node.node_id]) == list(
                range(1, 1 + len([e for e in stream.events if e.node == node.node_id]))
            )


@pytest.mark.asyncio
async def test_node_filter_with_a_custom_node_id() -> None:
    with FakeNode(node_id="alpha") as alpha, FakeNode() as other:
        async with injection_event_stream([alpha.url, other.url, alpha.url]) as stream:
            assert stream.urls == [alpha.url, other.url]  # one reader per node
            enable(other, "p")
            hit(other, "p")
            enable(alpha, "p")
            hit(alpha, "p")
            for _ in range(3):
                enable(alpha, "p")
                hit(alpha, "p")
            events = [
                await stream.wait_for_injection("p", node=key, timeout=5)
                for key in (alpha, alpha.url, "alpha", f"127.0.0.1:{alpha.port}")
            ]
        assert {e.node for e in events} == {"alpha"}
        assert [e.phase for e in stream.events if e.node == other.node_id] == ["enable", "enter"]


@pytest.mark.asyncio
async def test_a_wait_naming_an_unreachable_node_fails_at_once(node: FakeNode) -> None:
    """node= attaches a node the stream does not follow yet: one that cannot be reached is
    a connect error now, not a timeout after the whole wait."""
    async with injection_event_stream(node.url) as stream:
        with pytest.raises(StreamConnectError, match="cannot open the event stream of"):
            await stream.wait_for_injection("p", node="127.0.0.1:1", timeout=30)
        with pytest.raises(ValueError, match="names no node this stream follows"):
            await stream.wait_for_injection("p", node="not an address", timeout=30)
        assert stream.urls == [node.url]


@pytest.mark.asyncio
async def test_server_side_filters(node: FakeNode) -> None:
    async with injection_event_stream(node.url, injections=["p"], phases=["enter"]) as stream:
        enable(node, "q")
        hit(node, "q")
        enable(node, "p")
        hit(node, "p", 2)
        node.call(node.injector.disable, "p")
        await stream.wait_for_injection("p", count=2, timeout=5)
        with pytest.raises(InjectionTimeout):
            await stream.wait_for_injection("p", phase="disable", timeout=0.1)
    assert [(e.injection, e.phase, e.seq) for e in stream.events] == [
        ("p", "enter", 4),
        ("p", "enter", 5),
    ]


def test_unknown_phase_filter_is_refused(node: FakeNode) -> None:
    with pytest.raises(ValueError, match=r"^unknown phase\(s\) \['entered'\]; expected some of"):
        injection_event_stream(node.url, phases=["entered"])


# -- iteration, sync use ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_for_yields_events_as_they_arrive(node: FakeNode) -> None:
    async with injection_event_stream(node.url) as stream:

        async def first(n: int) -> list[InjectionEvent]:
            got: list[InjectionEvent] = []
            async for event in stream:
                got.append(event)
                if len(got) == n:
                    return got
            raise AssertionError("the stream ended")

        enable(node, "p")
        hit(node, "p", 2)
        got = await asyncio.wait_for(first(3), 5)
        assert [(e.phase, e.seq) for e in got] == [("enable", 1), ("enter", 2), ("enter", 3)]
        assert stream.events == got
        # iterating consumes nothing
        assert (await stream.wait_for_injection("p", timeout=0)).seq == 2

        async def take(events: AsyncIterator[InjectionEvent], n: int) -> list[int | None]:
            got = []
            async for event in events:
                got.append(event.seq)
                if len(got) == n:
                    break
            return got

        # A new `async for` starts from the first event received; `live()` from the next.
        from_start = asyncio.create_task(take(aiter(stream), 4))
        live = asyncio.create_task(take(stream.live(), 1))
        await asyncio.sleep(0)  # both iterators are registered before the next hit
        hit(node, "p")
        assert await asyncio.wait_for(from_start, 5) == [1, 2, 3, 4]
        assert await asyncio.wait_for(live, 5) == [4]


def test_sync_use_with_plain_with(node: FakeNode) -> None:
    with injection_event_stream(node.url) as stream:
        enable(node, "p")
        hit(node, "p", 2)
        assert stream.wait_for_injection_sync("p", timeout=5).enter_count == 1
        assert stream.wait_for_injection_sync("p", timeout=5).enter_count == 2
        with pytest.raises(InjectionTimeout, match=r"^timed out after 0\.05s waiting for"):
            stream.wait_for_injection_sync("p", timeout=0.05)
    assert seqs(stream.events) == [1, 2, 3]


@pytest.mark.asyncio
async def test_a_sync_stream_can_be_awaited_from_another_loop(node: FakeNode) -> None:
    with injection_event_stream(node.url) as stream:  # its own loop, on its own thread
        enable(node, "p")
        hit(node, "p")
        assert (await stream.wait_for_injection("p", timeout=5)).seq == 2


@pytest.mark.asyncio
async def test_sync_wait_on_the_streams_own_loop_is_refused(node: FakeNode) -> None:
    async with injection_event_stream(node.url) as stream:
        with pytest.raises(RuntimeError, match="would block the event loop that reads"):
            stream.wait_for_injection_sync("p", timeout=1)
        enable(node, "p")
        hit(node, "p")
        assert (await stream.wait_for_injection("p", timeout=5)).seq == 2  # nothing was taken


# -- reconnects ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_cuts_mid_stream_lose_nothing(node: FakeNode) -> None:
    """Every seq arrives once and in order across a cut inside a frame and a cut
    followed by an outage during which the node keeps publishing."""
    async with Proxy(node.url) as proxy, injection_event_stream(proxy.url) as stream:
        enable(node, "p")
        hit(node, "p", 3)
        await stream.wait_for_injection("p", count=3, timeout=5)

        # 1. a burst on its way, cut in the middle of its second frame
        data = json.dumps(stream.events[-1].to_dict(), separators=(",", ":"))
        frame = len(f"id: 4\ndata: {data}\n\n")  # the next ones differ by a byte or two
        proxy.cut_after(frame + frame // 2)
        hit(node, "p", 50)
        await stream.wait_for_injection("p", count=50, timeout=5)
        assert stream.reconnects == 1

        # 2. the node goes on publishing while the reconnect is held, then after
        proxy.down(HOLD)
        assert proxy.cut() == 1
        hit(node, "p", 20)
        await proxy.wait_for(held=1)
        hit(node, "p", 20)
        proxy.up()
        hit(node, "p", 10)
        await stream.wait_for_injection("p", count=50, timeout=5)
        assert stream.reconnects == 2
    assert no_other_task()  # the proxy and the stream closed all they opened
    assert seqs(stream.events) == list(range(1, 105))
    assert [e.enter_count for e in stream.events[1:]] == list(range(1, 104))
    assert stream.gaps == []


@pytest.mark.asyncio
async def test_a_cut_before_any_event_still_loses_nothing(node: FakeNode) -> None:
    """Nothing arrived, so no id to resume from: X-Injection-Last-Seq gives one."""
    enable(node, "p")
    hit(node, "p", 2)  # seq 1-3, before the stream: not its business
    async with Proxy(node.url) as proxy, injection_event_stream(proxy.url) as stream:
        proxy.down(REFUSE)
        proxy.cut()
        hit(node, "p", 3)
        await proxy.wait_for(refused=2)  # it keeps trying
        proxy.up()
        await stream.wait_for_injection("p", count=3, timeout=5)
    assert seqs(stream.events) == [4, 5, 6]
    assert stream.reconnects == 1
    assert no_other_task()


@pytest.mark.asyncio
async def test_a_link_gone_silent_is_dropped_after_the_read_timeout_and_resumed(
    node: FakeNode,
) -> None:
    """A vanished host never closes the connection: no byte, not even a heartbeat, for
    read_timeout makes the stream reconnect and replay what it missed."""
    async with (
        Proxy(node.url) as proxy,
        InjectionEventStream(proxy.url, read_timeout=0.4) as stream,
    ):
        enable(node, "p")
        await stream.wait_for_injection("p", phase="enable", timeout=5)
        proxy.freeze()
        hit(node, "p", 5)  # swallowed by the silent link
        await stream.wait_for_injection("p", count=5, timeout=5)
        assert stream.reconnects == 1
        assert proxy.forwarded == 2
    assert seqs(stream.events) == [1, 2, 3, 4, 5, 6]
    assert no_other_task()


@pytest.mark.asyncio
async def test_a_slow_client_cut_off_by_the_node_resumes_silently() -> None:
    """A `slow_client` gap is not a loss: the node still keeps those events."""
    with FakeNode(max_pending=5) as node:
        async with injection_event_stream(node.url) as stream:
            enable(node, "p")
            hit(node, "p", 30)  # one burst: the subscription overflows before it is read
            await stream.wait_for_injection("p", count=30, timeout=5)
    assert seqs(stream.events) == list(range(1, 32))
    assert stream.gaps == []
    assert stream.reconnects >= 1


@pytest.mark.asyncio
async def test_events_dropped_while_down_raise_events_lost() -> None:
    """Loss is explicit: the pending wait fails with the range, then reading goes on."""
    with FakeNode(event_capacity=5) as node:
        async with Proxy(node.url) as proxy, injection_event_stream(proxy.url) as stream:
            enable(node, "p")
            await stream.wait_for_injection("p", phase="enable", timeout=5)
            pending = asyncio.create_task(stream.wait_for_injection("p", count=20, timeout=5))
            proxy.down(HOLD)
            proxy.cut()
            hit(node, "p", 12)  # seq 2-13; the node keeps only 9-13
            await proxy.wait_for(held=1)
            proxy.up()
            with pytest.raises(EventsLost) as caught:
                await pending
            kept = await stream.wait_for_injection("p", count=5, timeout=5)
    assert str(caught.value) == (
        f"events lost on node {node.node_id}: seq 2 to 8 (the node no longer kept them when "
        "the stream resumed), while waiting for injection 'p' (phase 'enter', count 20)"
    )
    assert [(g.missed_from, g.missed_to, g.reason) for g in stream.gaps] == [(2, 8, "dropped")]
    assert caught.value.gap is stream.gaps[0]
    assert (kept.seq, kept.enter_count) == (13, 12)
    assert [(e.phase, e.seq) for e in stream.events] == [
        ("enable", 1),
        ("gap", None),
        *[("enter", s) for s in range(9, 14)],
    ]


@pytest.mark.asyncio
async def test_a_node_restart_is_reported_and_its_new_life_read() -> None:
    """Same address, new life: its seq starts again at 1, and all of it is read (the
    resume asks with `?boot=` so the new node does not skip up to the old last id)."""
    first = FakeNode().start()
    try:
        async with injection_event_stream(first.url) as stream:
            enable(first, "p")
            hit(first, "p", 2)
            await stream.wait_for_injection("p", count=2, timeout=5)
            first.stop()
            with FakeNode(port=first.port) as second:
                enable(second, "p")
                hit(second, "p")
                event = await stream.wait_for_injection("p", timeout=5)
                with pytest.raises(InjectionTimeout) as caught:
                    await stream.wait_for_injection("p", timeout=0.05)
    finally:
        first.stop()
    assert (
        f"  node {second.node_id} restarted while the stream was open: what was enabled on it "
        "before is gone"
    ) in str(caught.value).splitlines()
    assert (event.seq, event.enter_count, event.node) == (2, 1, second.node_id)
    assert [node for node, _ in stream.restarts] == [second.node_id]
    assert [(e.phase, e.seq) for e in stream.events] == [
        ("enable", 1),
        ("enter", 2),
        ("enter", 3),
        ("enable", 1),  # the new life, from its start
        ("enter", 2),
    ]
    assert stream.gaps == []


# -- /enters fallback ----------------------------------------------------------------


@asynccontextmanager
async def scylla_like_node(counts: dict[str, int]) -> AsyncIterator[str]:
    """Only ScyllaDB's REST: enable, list, enters; no /events and no /points (404)."""

    async def enters(request: web.Request) -> web.Response:
        return web.json_response(counts.get(request.match_info["name"], 0))

    async def enabled(request: web.Request) -> web.Response:
        return web.json_response(sorted(counts))

    app = web.Application()
    app.router.add_get("/v2/error_injection/injection/{name}/enters", enters)
    app.router.add_get("/v2/error_injection/injection", enabled)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_no_event_stream_falls_back_to_polling_enters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counts: dict[str, int] = {}
    caplog.set_level(logging.WARNING, logger="pytest_injection_events")
    async with scylla_like_node(counts) as url, injection_event_stream(url) as stream:
        pending = asyncio.create_task(stream.wait_for_injection("x", timeout=5))
        counts["x"] = 1
        event = await pending
        assert (event.injection, event.phase, event.enter_count) == ("x", "enter", 1)
        assert event.node == url.removeprefix("http://")
        counts["x"] = 3
        assert (await stream.wait_for_injection("x", count=2, timeout=5)).enter_count == 3
        for phase in ("resume", "timeout", "message"):
            with pytest.raises(UnsupportedWait, match=f"^phase '{phase}' cannot be seen on"):
                await stream.wait_for_injection("x", phase=phase, timeout=1)
        with pytest.raises(UnsupportedWait, match="a shard filter needs events that carry"):
            await stream.wait_for_injection("x", shard=0, timeout=1)
        with pytest.raises(InjectionTimeout) as caught:
            await stream.wait_for_injection("x", timeout=0.05)
    assert caplog.records == []  # ScyllaDB's nodes all poll: no warning for each
    assert str(caught.value).splitlines()[0] == (
        f"timed out after 0.05s waiting for injection 'x' (phase 'enter') on {url}"
    )
    host = url.removeprefix("http://")
    assert str(caught.value).splitlines()[1:] == [
        "  'x' enter arrived 3 time(s): 3 were consumed by other waits",
        "  events that did arrive: x enter x3",
        f"  last: seq 1 x enter on {host}; seq 2 x enter on {host}; seq 3 x enter on {host}",
        f"  {host} is read through /enters polling",
        f"  enabled on {host}: x",  # though the node has no /points
    ]


# -- connection errors ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_wrong_token_is_a_clear_connect_error() -> None:
    with FakeNode(token="s3cret") as node:
        with pytest.raises(StreamConnectError) as caught:
            async with injection_event_stream(node.url):
                pass
        assert str(caught.value) == (
            f"cannot open the event stream of {node.url}: 401 missing or wrong bearer token"
        )
        async with injection_event_stream(node.url, token="s3cret") as stream:
            enable(node, "p")
            await stream.wait_for_injection("p", phase="enable", timeout=5)
    assert no_other_task()


@pytest.mark.asyncio
async def test_an_unreachable_node_is_a_clear_connect_error(node: FakeNode) -> None:
    port = closed_port()
    with pytest.raises(StreamConnectError) as caught:
        async with injection_event_stream(f"127.0.0.1:{port}"):
            pass
    assert isinstance(caught.value, ConnectionError)
    assert str(caught.value).startswith(
        f"cannot open the event stream of http://127.0.0.1:{port}: Cannot connect to host"
    )
    # one bad node among good ones: the whole stream fails, and nothing is left behind
    with pytest.raises(StreamConnectError, match=str(port)):
        async with injection_event_stream([node.url, f"127.0.0.1:{port}"]):
            pass
    assert no_other_task()


@pytest.mark.asyncio
async def test_a_node_that_accepts_but_never_answers_is_a_connect_error(node: FakeNode) -> None:
    """A stopped (SIGSTOP) or wedged node still completes the TCP handshake: opening
    must give up after connect_timeout, not hang the test."""
    async with Proxy(node.url) as proxy:
        proxy.down(HOLD)
        stream = InjectionEventStream(proxy.url, connect_timeout=0.2)
        with pytest.raises(StreamConnectError) as caught:
            await asyncio.wait_for(stream.__aenter__(), 5)
    assert str(caught.value) == (
        f"cannot open the event stream of {proxy.url}: no answer within 0.2s"
    )
    assert no_other_task()


@pytest.mark.asyncio
async def test_a_reconnect_that_gets_no_answer_is_retried(node: FakeNode) -> None:
    async with Proxy(node.url) as proxy:
        async with InjectionEventStream(proxy.url, connect_timeout=0.2) as stream:
            proxy.down(HOLD)
            proxy.cut()
            enable(node, "p")
            await proxy.wait_for(held=2)  # the first attempt gave up, a second one came
            proxy.up()
            await stream.wait_for_injection("p", phase="enable", timeout=5)
    assert seqs(stream.events) == [1]
    assert no_other_task()


def test_an_unreachable_node_in_sync_use() -> None:
    with pytest.raises(StreamConnectError, match=r"^cannot open the event stream of"):
        with injection_event_stream(f"127.0.0.1:{closed_port()}"):
            pass


# -- the InjectionTimeout message ------------------------------------------------------


@pytest.mark.asyncio
async def test_timeout_message_says_what_where_what_arrived_enabled_and_did_you_mean(
    node: FakeNode,
) -> None:
    api = InjectionApi(node.url)
    nid = node.node_id
    async with injection_event_stream(node.url) as stream:
        await api.enable_injection("kv_write_delay")
        await api.enable_injection("replication_drop")
        hit(node, "replication_drop", 4)
        await stream.wait_for_injection("replication_drop", count=4, timeout=5, consume=False)
        with pytest.raises(InjectionTimeout) as caught:
            await stream.wait_for_injection("kv_write_before_aply", timeout=0.1)
    error = caught.value
    assert isinstance(error, TimeoutError)
    assert (error.injection, error.timeout) == ("kv_write_before_aply", 0.1)
    assert str(error).splitlines() == [
        "timed out after 0.1s waiting for injection 'kv_write_before_aply' (phase 'enter') "
        f"on {node.url}",
        "  events that did arrive: replication_drop enter x4, kv_write_delay enable x1, "
        "replication_drop enable x1",
        f"  last: seq 4 replication_drop enter shard 0 on {nid}; seq 5 replication_drop enter "
        f"shard 0 on {nid}; seq 6 replication_drop enter shard 0 on {nid}",
        f"  enabled on {nid}: kv_write_delay, replication_drop",
        "  did you mean 'kv_write_before_apply'?",
    ]


@pytest.mark.asyncio
async def test_timeout_message_when_nothing_arrived(node: FakeNode) -> None:
    async with injection_event_stream(node.url) as stream:
        with pytest.raises(InjectionTimeout) as caught:
            await stream.wait_for_injection("kv_write_error", timeout=0.05, count=2)
    assert str(caught.value).splitlines() == [
        "timed out after 0.05s waiting for injection 'kv_write_error' (phase 'enter', count 2) "
        f"on {node.url}",
        "  no events arrived at all since the stream opened (not even an 'enable': is the "
        "stream on the node the test drives?)",
        f"  enabled on {node.node_id}: none",
    ]


@pytest.mark.asyncio
async def test_timeout_message_counts_what_the_wait_got_and_what_it_could_not_take() -> None:
    with FakeNode(shards=2) as node:
        nid = node.node_id
        async with injection_event_stream(node.url) as stream:
            enable(node, "p")
            hit(node, "p", shard=1)
            hit(node, "p", 2, shard=0)
            hit(node, "p", shard=0)
            await stream.wait_for_injection("p", shard=0, timeout=5)  # consumes one
            with pytest.raises(InjectionTimeout) as caught:
                await stream.wait_for_injection(
                    "p", count=3, shard=0, node=node, predicate=bool, timeout=0.05
                )
    lines = str(caught.value).splitlines()
    assert lines[:2] == [
        "timed out after 0.05s waiting for injection 'p' (phase 'enter', count 3, shard 0, "
        f"with a predicate) on {nid}",
        "  'p' enter arrived 4 time(s): 2 matched this wait (it needs 3), 1 was consumed by "
        "another wait, 1 did not pass its shard/node/predicate filters",
    ]
    assert lines[2] == "  events that did arrive: p enter x4, p enable x1"
    assert lines[-1] == f"  enabled on {nid}: p"


@pytest.mark.asyncio
async def test_timeout_message_reports_losses_and_a_stream_that_is_down() -> None:
    with FakeNode(event_capacity=2) as node:
        async with Proxy(node.url) as proxy, injection_event_stream(proxy.url) as stream:
            proxy.down(HOLD)
            proxy.cut()
            enable(node, "p")
            hit(node, "p", 3)  # seq 1-4, the node keeps 3-4
            await proxy.wait_for(held=1)
            proxy.up()
            with pytest.raises(EventsLost):  # waiting as the gap arrives
                await stream.wait_for_injection("p", count=2, timeout=5)
            await stream.wait_for_injection("p", count=2, timeout=5)  # what was kept
            proxy.down(REFUSE)
            proxy.cut()
            await proxy.wait_for(refused=1)
            with pytest.raises(InjectionTimeout) as caught:
                await stream.wait_for_injection("q", timeout=0.05)
    lines = str(caught.value).splitlines()
    nid = node.node_id
    assert f"  events lost on {nid}: seq 1 to 2" in lines
    assert (
        f"  last: gap: seq 1 to 2 lost on {nid}; seq 3 p enter shard 0 on {nid}; "
        f"seq 4 p enter shard 0 on {nid}"
    ) in lines
    assert any(
        line.startswith(f"  the stream of {proxy.url} has been down for ")
        and line.endswith("s; reconnecting")
        for line in lines
    ), lines
    assert "  did you mean 'p'?" not in lines  # 'q' is too far from anything


@pytest.mark.asyncio
async def test_did_you_mean_for_an_enabled_typo_but_not_for_a_declared_point(
    node: FakeNode,
) -> None:
    """The typo was enabled (so it is a known name), yet never hit and not declared."""
    api = InjectionApi(node.url)
    async with injection_event_stream(node.url) as stream:
        await api.enable_injection("kv_write_befor_apply")
        with pytest.raises(InjectionTimeout) as typo:
            await stream.wait_for_injection("kv_write_befor_apply", timeout=0.05)
        with pytest.raises(InjectionTimeout) as declared:
            await stream.wait_for_injection("kv_write_error", timeout=0.05)
    assert str(typo.value).splitlines()[-2:] == [
        f"  enabled on {node.node_id}: kv_write_befor_apply",
        "  did you mean 'kv_write_before_apply'?",
    ]
    assert "did you mean" not in str(declared.value)  # not 'kv_write_delay'


@pytest.mark.asyncio
async def test_async_for_ends_when_the_stream_closes(node: FakeNode) -> None:
    """A consumer task must not outlive the stream, waiting for events that cannot come."""
    async with injection_event_stream(node.url) as stream:
        got: list[InjectionEvent] = []

        async def collect() -> None:
            async for event in stream:
                got.append(event)

        consumer = asyncio.create_task(collect())
        enable(node, "p")
        await stream.wait_for_injection("p", phase="enable", timeout=5)
    await asyncio.wait_for(consumer, 5)
    assert [(e.injection, e.phase) for e in got] == [("p", "enable")]


@pytest.mark.asyncio
async def test_an_event_arriving_as_its_wait_is_cancelled_goes_to_the_next_wait(
    node: FakeNode,
) -> None:
    """Cancelling a task cancels its wait's future at once, but the wait leaves the list
    only when the task runs again: an event delivered in between must not be lost."""
    async with injection_event_stream(node.url) as stream:
        enable(node, "p")
        await stream.wait_for_injection("p", phase="enable", timeout=5)
        waiter = asyncio.create_task(stream.wait_for_injection("p", timeout=5))
        await asyncio.sleep(0)  # let it register
        (source,) = stream._following.sources.values()
        waiter.cancel()
        source.deliver(  # what the source does when a hit arrives, in the same loop turn
            InjectionEvent.from_dict(
                {"injection": "p", "phase": "enter", "seq": 99, "node": source.node_id}
            )
        )
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert (await stream.wait_for_injection("p", timeout=1)).seq == 99


@pytest.mark.asyncio
async def test_a_source_task_that_swallows_a_cancellation_still_stops() -> None:
    """On 3.10 and 3.11 `asyncio.wait_for` can swallow a cancellation that arrives with its
    result, and a reader task cancelled once would read on: closing a stream then hung a
    test. Stopping a source's task cancels until it is over."""
    from pytest_injection_events.source import stop_task

    swallowed = 0

    async def reads_on_after_a_spent_cancellation() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 3:
                    raise

    task = asyncio.create_task(reads_on_after_a_spent_cancellation())
    await asyncio.sleep(0)  # it is waiting
    await asyncio.wait_for(stop_task(task), 5)
    assert task.cancelled() and swallowed == 3


@pytest.mark.asyncio
async def test_events_kept_are_bounded_and_waits_still_work(node: FakeNode) -> None:
    async with InjectionEventStream(node.url, max_events=10) as stream:
        enable(node, "p")
        hit(node, "p", 30)
        last = await stream.wait_for_injection("p", count=30, consume=False, timeout=5)
        assert last.seq == 31 and len(stream.events) <= 11  # trimmed past 10 % over
        assert stream.events[-1] == last
        # What is kept and not consumed is still there to take, oldest first.
        first_kept = min(e.seq for e in stream.events if e.phase == "enter")
        assert (await stream.wait_for_injection("p", timeout=5)).seq == first_kept
        assert (await stream.wait_for_injection("p", timeout=5)).seq == first_kept + 1


def test_every_awaitable_of_the_stream_has_a_sync_twin() -> None:
    public = [n for n in dir(InjectionEventStream) if not n.startswith("_")]
    awaitables = [
        n for n in public if asyncio.iscoroutinefunction(getattr(InjectionEventStream, n))
    ]
    assert awaitables and all(f"{n}_sync" in public for n in awaitables), awaitables


def test_wait_for_event_from_sync_code(node: FakeNode) -> None:
    with injection_event_stream(node.url) as stream:
        enable(node, "p")
        hit(node, "p")
        index = stream.wait_for_event_sync(lambda e: e.phase == "enter", timeout=5)
        assert stream.events[index].injection == "p"
