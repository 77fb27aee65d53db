"""Faults (issue 6, item 2): nothing is lost and nothing breaks when a connection is cut
mid-stream while nodes publish without pause, when a node is replaced on its port (or
restarted in place), when a reader stops reading, and when a test fails, errors, times
out or is interrupted (the marker's injections are still disabled, and nothing is left
running).

The single cut, the single slow client and the single restart, on a quiet node, are
proved in test_event_stream_client.py, test_stream_clients.py and test_stream.py; here
they happen under load, on clusters, many times, with the product's client and an
independent reader side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import Publisher
from proxy import HOLD, Proxy
from sse import RawStream
from test_plugin import make_ini, make_tests, port_is_closed
from test_reliability_soak import RawClient, Recorder

from pytest_injection_events import InjectionEventStream, SyncInjectionApi
from pytest_injection_events.event_schema import GAP, GAP_SLOW_CLIENT
from pytest_injection_events.node import KV_WRITE_DELAY, FakeCluster, FakeNode

EVENTS = "/v2/error_injection/events"
#: Filled by the tests, for docs/reliability.md.
FIGURES: dict[str, Any] = {}


class ResumingReader:
    """An independent reader (tests/sse.py) that does what an EventSource does when its
    connection drops: reconnect with Last-Event-ID (and the `?boot=` it saw)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.seqs: list[int] = []
        self.reconnects = 0
        self.boot: str | None = None
        self.last_id: str | None = None
        self._target: tuple[int, asyncio.Event] | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._connected.wait(), 10)

    async def _run(self) -> None:
        while True:
            params = {"boot": self.boot, "phase": "all"} if self.boot else {"phase": "all"}
            headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
            try:
                async with self.session.get(
                    self.url + EVENTS, params=params, headers=headers
                ) as response:
                    assert response.status == 200
                    self.boot = response.headers["X-Injection-Boot"]
                    if self.last_id is None:
                        self.last_id = response.headers["X-Injection-Last-Seq"]
                    self._connected.set()
                    stream = RawStream(response)
                    while True:
                        message = await stream._next()  # the caller bounds the whole read
                        data = message.json
                        assert data["phase"] != GAP, data
                        self.seqs.append(data["seq"])
                        self.last_id = message.id
                        self._check()
            except (aiohttp.ClientError, EOFError, OSError):
                self.reconnects += 1

    def _check(self) -> None:
        if self._target is not None and self.seqs and self.seqs[-1] >= self._target[0]:
            self._target[1].set()

    async def until(self, seq: int, timeout: float = 15) -> None:
        self._target = (seq, asyncio.Event())
        self._check()
        await asyncio.wait_for(self._target[1].wait(), timeout)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def fresh_event(stream: InjectionEventStream, node_id: str, timeout: float = 10) -> None:
    """Wait for an event of that node that arrived after now."""
    await stream.wait_for_event(lambda e: e.node == node_id, timeout, start=len(stream.events))


# -- a connection cut, again and again, under load -----------------------------------------

CUTS = 30


@pytest.mark.asyncio
async def test_repeated_cuts_under_load_lose_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """Three nodes publish without pause, each behind a proxy. The product's client (one
    stream merging the three) and an independent reader per node go through the proxies,
    which cut their connections 30 times: at once, in the middle of a frame (a cut after
    a number of bytes that varies), and with the reconnect held while the node goes on
    publishing. Every event of every node arrives exactly once, in order, with no gap;
    a wait pending across a cut returns."""
    caplog.set_level(logging.WARNING, logger="pytest_injection_events.events")
    with FakeCluster(3, event_capacity=100_000) as cluster:
        async with contextlib.AsyncExitStack() as stack:
            proxies = [await stack.enter_async_context(Proxy(node.url)) for node in cluster]
            stream = await stack.enter_async_context(
                InjectionEventStream([proxy.url for proxy in proxies])
            )
            session = await stack.enter_async_context(aiohttp.ClientSession())
            readers = [ResumingReader(session, proxy.url) for proxy in proxies]
            for reader in readers:
                stack.push_async_callback(reader.close)
                await reader.start()
            ids = [node.node_id for node in cluster]
            publishers = [Publisher(node).start() for node in cluster]
            try:
                pending = asyncio.create_task(
                    stream.wait_for_injection("p", count=200, node=ids[0], timeout=30)
                )
                for cut in range(CUTS):
                    index = cut % 3
                    proxy, node_id = proxies[index], ids[index]
                    await fresh_event(stream, node_id)
                    forwarded = proxy.forwarded
                    mode = cut % 4
                    if mode == 0:
                        assert proxy.cut() >= 2
                    elif mode in (1, 2):  # in the middle of a frame, at a varying byte
                        proxy.cut_after(37 * cut + 11)
                    else:  # the reconnects wait while the node publishes, more than usual
                        proxy.down(HOLD)
                        proxy.cut()
                        await proxy.wait_for(held=2)
                        hit(cluster[index], "p", 50)
                        proxy.up()
                    await proxy.wait_for(forwarded=forwarded + 2)
                    await fresh_event(stream, node_id)
                event = await pending
                assert event.node == ids[0]
            finally:
                lasts = [await publisher.stop() for publisher in publishers]
            for node_id, last in zip(ids, lasts, strict=True):
                await stream.wait_for_event(lambda e, n=node_id, s=last: (e.node, e.seq) == (n, s))
            for reader, last in zip(readers, lasts, strict=True):
                await reader.until(last)
            for node_id, reader, last in zip(ids, readers, lasts, strict=True):
                got = [e.seq for e in stream.events if e.node == node_id]
                assert got == list(range(1, last + 1)), node_id
                assert reader.seqs == list(range(1, last + 1)), node_id
            assert stream.gaps == []
            assert stream.reconnects >= CUTS
            assert sum(reader.reconnects for reader in readers) >= CUTS
    FIGURES["cuts"] = {
        "cuts": CUTS,
        "events": sum(lasts),
        "stream_reconnects": stream.reconnects,
        "reader_reconnects": sum(reader.reconnects for reader in readers),
    }


# -- a node replaced on its port, a node restarted in place ---------------------------------


def hit(node: FakeNode, name: str, times: int = 1) -> None:
    def run() -> None:
        for _ in range(times):
            node.injector.inject(name, lambda: None)

    node.call(run)


@pytest.mark.asyncio
async def test_a_node_replaced_on_its_port_is_a_new_life_read_from_its_start() -> None:
    """The middle node of three is stopped and a new one (a new process, in real life)
    starts on its port while the two others go on publishing. The stream reports the
    restart once, reads the new life from seq 1 (also what it published before the
    stream reconnected: nothing lost), does not take the new life's seqs 1, 2, ... for
    duplicates of the old life's, and the other nodes' streams never notice. A wait for
    an event that only the new life has, pending across the restart, returns it."""
    first, middle, last = FakeNode().start(), FakeNode().start(), FakeNode().start()
    replacement: FakeNode | None = None
    try:
        async with InjectionEventStream([first.url, middle.url, last.url]) as stream:
            publishers = [Publisher(first).start(), Publisher(last).start()]
            try:
                middle.call(middle.injector.enable, "p", False, {})
                hit(middle, "p", 5)  # seq 1-6 of the old life
                await stream.wait_for_injection("p", count=5, node=middle.node_id, timeout=10)
                pending = asyncio.create_task(
                    stream.wait_for_injection("q", node=middle.node_id, timeout=20)
                )
                middle.stop()
                replacement = FakeNode(port=middle.port).start()
                replacement.call(replacement.injector.enable, "p", False, {})
                hit(replacement, "p", 3)
                replacement.call(replacement.injector.enable, "q", False, {})
                hit(replacement, "q")  # seq 6 of the new life
                event = await pending
            finally:
                lasts = [await publisher.stop() for publisher in publishers]
            for node, seq in zip((first, last), lasts, strict=True):
                await stream.wait_for_event(
                    lambda e, n=node.node_id, s=seq: (e.node, e.seq) == (n, s)
                )
    finally:
        for node in (first, middle, last, replacement):
            if node is not None:
                node.stop()
    assert (event.injection, event.seq, event.enter_count) == ("q", 6, 1)
    assert [node for node, _ in stream.restarts] == [middle.node_id]
    seen = [(e.phase, e.injection, e.seq) for e in stream.events if e.node == middle.node_id]
    old_life = [("enable", "p", 1)] + [("enter", "p", s) for s in range(2, 7)]
    new_life = [("enable", "p", 1)] + [("enter", "p", s) for s in range(2, 5)]
    new_life += [("enable", "q", 5), ("enter", "q", 6)]
    assert seen == old_life + new_life
    for node, seq in zip((first, last), lasts, strict=True):
        assert [e.seq for e in stream.events if e.node == node.node_id] == list(range(1, seq + 1))
    assert stream.gaps == []
    FIGURES["replaced"] = {"events": len(stream.events), "restarts": len(stream.restarts)}


@pytest.mark.asyncio
async def test_a_node_restarted_in_place_is_a_new_life() -> None:
    """`FakeNode.stop()` then `start()` is a restarted server: the same address and id,
    a fresh injector and event log (nothing enabled, seq from 1, a new boot id). The
    stream reports the restart once and reads the new life from its first event."""
    with FakeNode() as node:
        port, ident, boot, old_injector = node.port, node.node_id, node.boot_id, node.injector
        async with InjectionEventStream(node.url) as stream:
            node.call(node.injector.enable, "p", False, {})
            hit(node, "p", 4)  # seq 1-5
            await stream.wait_for_injection("p", count=4, timeout=10)
            node.stop()
            node.start()
            assert (node.port, node.node_id) == (port, ident)
            assert node.boot_id != boot and node.injector is not old_injector
            assert node.call(node.injector.enabled_injections) == []
            node.call(node.injector.enable, "p", False, {})
            hit(node, "p", 2)  # seq 1-3 of the new life
            await stream.wait_for_injection("p", count=2, timeout=10)
    old_life = [("enable", 1)] + [("enter", s) for s in range(2, 6)]
    new_life = [("enable", 1), ("enter", 2), ("enter", 3)]
    assert [(e.phase, e.seq) for e in stream.events] == old_life + new_life
    assert [ident for ident, _ in stream.restarts] == [node.node_id]
    assert stream.gaps == []


# -- a reader that stops reading -------------------------------------------------------------

STALL_PENDING = 20
PAD = "x" * 4000  # big events (under the 4 KiB kept in events) fill a stalled reader's buffers


@pytest.mark.asyncio
async def test_a_reader_that_stops_is_cut_off_and_nobody_else_notices(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On a 3-node cluster under a replicated HTTP workload plus bursts of big events on
    one node, a reader of that node stops reading. Its queue fills to max_pending and no
    further; the node never waits for it (the writes go on being answered); the other
    readers, three product streams on the whole cluster and two independent readers,
    get every event exactly once with no reconnect and no gap. When the stalled reader
    reads again it finds what was queued for it, then a `slow_client` gap, and a resume
    by Last-Event-ID brings the rest: all of it, once."""
    caplog.set_level(logging.WARNING, logger="pytest_injection_events.events")
    with FakeCluster(3, max_pending=STALL_PENDING, event_capacity=100_000) as cluster:
        busy = cluster[0]
        recorders = [Recorder(node) for node in cluster]
        for node, recorder in zip(cluster, recorders, strict=True):
            node.call(node.injector.add_listener, recorder)
        async with contextlib.AsyncExitStack() as stack:
            connector = aiohttp.TCPConnector(limit=0)
            session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
            stalled = await stack.enter_async_context(
                session.get(busy.url + EVENTS, params={"phase": "all"})
            )
            assert stalled.status == 200
            (watched,) = busy.call(lambda: list(busy.event_log._subscriptions))
            overflowed = threading.Event()
            busy.call(
                busy.injector.add_listener,
                lambda *_: watched.overflowed and overflowed.set(),
            )
            streams = [
                await stack.enter_async_context(InjectionEventStream(cluster.urls))
                for _ in range(3)
            ]
            raws = [RawClient(session, [busy]) for _ in range(2)]
            for raw in raws:
                stack.push_async_callback(raw.close)
                await raw.open()
            for node in cluster:
                node.call(node.injector.enable, KV_WRITE_DELAY, False, {"ms": "0"})
                node.call(node.injector.enable, "soak_end", True, {})
            busy.call(busy.injector.enable, "soak_tick", False, {"pad": PAD})

            latencies: list[float] = []
            rounds = 0
            while not overflowed.is_set():
                rounds += 1
                assert rounds <= 400, "the stalled reader's queue never overflowed"
                started = time.monotonic()
                async with session.put(f"{cluster[rounds % 3].url}/kv/k{rounds}", data=b"v") as r:
                    assert r.status == 200
                latencies.append(time.monotonic() - started)
                hit(busy, "soak_tick", 20)
            for _ in range(5):  # a few more rounds once it is cut off
                hit(busy, "soak_tick", 20)
            for node in cluster:
                hit(node, "soak_end")
            await asyncio.wait_for(
                asyncio.gather(
                    *(s.wait_for_injection("soak_end", count=3, timeout=30) for s in streams),
                    *(raw.finished() for raw in raws),
                ),
                40,
            )
            expected = {
                node.node_id: r.published for node, r in zip(cluster, recorders, strict=True)
            }
            for stream in streams:
                assert stream.gaps == [] and stream.reconnects == 0
                for node_id, published in expected.items():
                    got = [
                        (e.seq, e.injection, e.phase, e.enter_count)
                        for e in stream.events
                        if e.node == node_id
                    ]
                    assert got == published
            for raw in raws:
                assert raw.got == {busy.node_id: expected[busy.node_id]} and raw.resumed == 0
            # The stalled reader fell more than its bound behind; it holds no copy of what it
            # missed (a cursor on the shared log), and it slowed nobody down.
            assert watched.overflowed

            # It reads again: what was queued, then the gap; then it resumes.
            reader = RawStream(stalled)
            before: list[int] = []
            while True:
                message = await reader.next(timeout=10)
                data = message.json
                if data["phase"] == GAP:
                    break
                before.append(data["seq"])
            assert data["reason"] == GAP_SLOW_CLIENT
            assert data["missed_from"] == before[-1] + 1
            assert message.id is None and reader.last_id == str(before[-1])
            published = [key[0] for key in expected[busy.node_id]]
            headers = {"Last-Event-ID": reader.last_id}
            async with session.get(
                busy.url + EVENTS, params={"phase": "all"}, headers=headers
            ) as resumed:
                rest = await RawStream(resumed).take(len(published) - len(before), timeout=10)
            assert before + [m.json["seq"] for m in rest] == published
    FIGURES["slow_client"] = {
        "rounds": rounds,
        "events_on_busy_node": len(published),
        "queued_for_the_stalled_reader": len(before),
        "max_write_latency_ms": round(1000 * max(latencies), 1),
    }


# -- a test that fails, errors, times out or is interrupted ------------------------------------


@pytest.fixture
def outer_node() -> Iterator[FakeNode]:
    """A node started outside the inner runs, so its state can be read after them."""
    with FakeNode() as node:
        yield node


def lifecycle(node: FakeNode) -> dict[str, list[str]]:
    """Per injection, its control events on the node, in order (enable, disable...)."""
    records = node.call(lambda: node.event_log.since(0))
    phases: dict[str, list[str]] = {}
    for record in records:
        if record.data["phase"] in ("enable", "disable"):
            phases.setdefault(record.data["injection"], []).append(record.data["phase"])
    return phases


def marked(
    name: str, body: str, *, extra: str = "", fixtures: str = "", test: str | None = None
) -> str:
    args = ", ".join(["injection_node", *([fixtures] if fixtures else [])])
    return (
        f'\n@pytest.mark.wait_for_injection("{name}", one_shot=False, timeout=30)\n{extra}'
        f"def test_{test or name}({args}):\n    {body}\n"
    )


FAILING = (
    """
@pytest.fixture
def broken_setup():
    raise RuntimeError("fixture setup failed")


@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("fixture teardown failed")
"""
    + marked("m_fails", "assert False, 'the body failed'")
    + marked("m_raises", "raise RuntimeError('the body raised')")
    + marked("m_setup_error", "pass", fixtures="broken_setup")
    # The body passes and hits the injection (a real point of the fake node, so a write
    # enters it); the fixture's teardown fails after.
    + marked(
        KV_WRITE_DELAY,
        "put(injection_node.url)",
        fixtures="broken_teardown",
        test="m_teardown_error",
    )
    + marked("m_timeout_in_body", "import time; time.sleep(30)", extra="@pytest.mark.timeout(1)\n")
    + marked("m_timeout_in_check", "pass", extra="@pytest.mark.timeout(1)\n")
)
FAILING_NAMES = [
    "m_fails",
    "m_raises",
    "m_setup_error",
    KV_WRITE_DELAY,
    "m_timeout_in_body",
    "m_timeout_in_check",
]


def test_teardown_disables_the_markers_injections_whatever_the_test_did(
    pytester: pytest.Pytester, outer_node: FakeNode
) -> None:
    """Each marked test fails its own way, on a node the inner run did not start: an
    assertion, an exception, a fixture that fails in setup or in teardown, pytest-timeout
    firing in the body or while the plugin waits for the injection after it. Every
    injection the marker enabled is disabled again, and the run leaves no thread."""
    make_ini(pytester)
    make_tests(pytester, FAILING)
    threads = set(threading.enumerate())
    result = pytester.runpytest("-p", "no:randomly", f"--injection-node-url={outer_node.url}")
    result.assert_outcomes(passed=1, failed=4, errors=2)
    result.stdout.fnmatch_lines(["*Timeout*"])
    assert SyncInjectionApi(outer_node.url).get_enabled_injections() == []
    phases = lifecycle(outer_node)
    assert {name: phases.get(name) for name in FAILING_NAMES} == {
        name: ["enable", "disable"] for name in FAILING_NAMES
    }
    assert set(threading.enumerate()) <= threads


INTERRUPTED = marked("m_first", "{how}") + marked("m_never_run", "pass")
HOWS = {
    "pytest_exit": "pytest.exit('stop the session')",
    "keyboard_interrupt": "raise KeyboardInterrupt",
    "maxfail": "assert False, 'the first failure ends the run with -x'",
}


@pytest.mark.parametrize("how", sorted(HOWS))
def test_an_interrupted_run_still_disables_and_closes(
    pytester: pytest.Pytester, outer_node: FakeNode, tmp_path: Path, how: str
) -> None:
    """A run that ends in the middle (pytest.exit, KeyboardInterrupt, -x after a failure)
    still tears the interrupted test down: its injection is disabled on the node given
    by URL, the next test's is never enabled; and, on fake nodes, their ports are
    closed. No thread is left either way."""
    make_ini(pytester)
    make_tests(pytester, INTERRUPTED.replace("{how}", HOWS[how]))
    args = ["-p", "no:randomly", "-x"]
    threads = set(threading.enumerate())
    # no_reraise_ctrlc: the inner KeyboardInterrupt is the inner run's, not ours.
    result = pytester.runpytest(
        *args, f"--injection-node-url={outer_node.url}", no_reraise_ctrlc=True
    )
    assert result.ret == (1 if how == "maxfail" else 2)
    assert lifecycle(outer_node) == {"m_first": ["enable", "disable"]}
    assert SyncInjectionApi(outer_node.url).get_enabled_injections() == []
    assert set(threading.enumerate()) <= threads

    # On a fake node the inner run starts: stopped, its port closed.
    urls = tmp_path / "urls"
    pytester.makeconftest(
        f"""
        import pathlib
        import pytest

        @pytest.fixture(autouse=True)
        def _note_node(request):
            if "injection_node" in request.fixturenames:
                url = request.getfixturevalue("injection_node").url
                with open({str(urls)!r}, "a") as f:
                    f.write(url + "\\n")
            yield
        """
    )
    result = pytester.runpytest(*args, no_reraise_ctrlc=True)
    assert result.ret == (1 if how == "maxfail" else 2)
    noted = urls.read_text().split()
    assert len(noted) == 1
    assert port_is_closed(noted[0])
    assert set(threading.enumerate()) <= threads


CTRL_C = """
import sys


@pytest.mark.wait_for_injection("m_ctrl_c", one_shot=False, timeout=60)
def test_waits(injection_node, injection_event_stream):
    print("READY", flush=True)
    injection_event_stream.wait_for_injection_sync("never_hit", timeout=60)
"""


def test_ctrl_c_on_a_real_run_disables_and_exits(
    pytester: pytest.Pytester, outer_node: FakeNode
) -> None:
    """A real `pytest` process, SIGINT while a marked test waits on the stream (what
    Ctrl-C does): it exits 2 at once with pytest's KeyboardInterrupt summary and no
    other traceback, and the marker's injection is disabled on the node."""
    make_ini(pytester)
    make_tests(pytester, CTRL_C)
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "INJECTION_EVENTS_TOKEN")
    }
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-s",
        "-p",
        "no:randomly",
        "-W",
        "error::ResourceWarning",
        f"--injection-node-url={outer_node.url}",
    ]
    with subprocess.Popen(
        command,
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    ) as process:
        try:
            assert process.stdout is not None
            lines = []
            for line in process.stdout:
                lines.append(line)
                if "READY" in line:
                    break
            else:
                pytest.fail("".join(lines))
            assert SyncInjectionApi(outer_node.url).get_enabled_injections() == ["m_ctrl_c"]
            started = time.monotonic()
            process.send_signal(signal.SIGINT)
            out, _ = process.communicate(timeout=30)
            stopped = time.monotonic() - started
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    output = "".join(lines) + out
    assert process.returncode == 2, output
    assert "KeyboardInterrupt" in output
    assert "Exception in thread" not in output and "Exception ignored" not in output
    assert SyncInjectionApi(outer_node.url).get_enabled_injections() == []
    assert lifecycle(outer_node) == {"m_ctrl_c": ["enable", "disable"]}
    FIGURES["ctrl_c_exit_s"] = round(stopped, 2)


@pytest.fixture(scope="module", autouse=True)
def _report_figures() -> Iterator[None]:
    yield
    print("\nfault figures:", json.dumps(FIGURES))
