"""The injection library (SPEC §3) and the events it emits (SPEC §4), on one asyncio loop.

Synchronisation is by events and futures only: a test waits for the event an
injection emits, or for a task to finish; it never sleeps to let things happen.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Mapping
from typing import Any

import pytest
from helpers import EVENT_KEYS

from pytest_injection_events.events import EventLog
from pytest_injection_events.injector import (
    KINDS,
    BreakpointTimeout,
    InjectedError,
    InjectionHandler,
    Injector,
    PointInfo,
)


class Events:
    """A listener that keeps every event and lets a test await one."""

    def __init__(self, injector: Injector) -> None:
        self.items: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self.remove = injector.add_listener(self)

    def __call__(
        self,
        injection: str,
        kind: str | None,
        phase: str,
        shard: int | None,
        enter_count: int,
        one_shot: bool,
        parameters: Mapping[str, str],
    ) -> None:
        self.items.append(
            {
                "injection": injection,
                "type": kind,
                "phase": phase,
                "shard": shard,
                "enter_count": enter_count,
                "one_shot": one_shot,
                "parameters": dict(parameters),
            }
        )
        self._changed.set()

    def select(self, phase: str, name: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.items if e["phase"] == phase and name in (None, e["injection"])]

    def phases(self, name: str) -> list[str]:
        return [e["phase"] for e in self.items if e["injection"] == name]

    async def wait(
        self, phase: str, name: str | None = None, count: int = 1, timeout: float = 5.0
    ) -> dict[str, Any]:
        """The `count`-th event of `phase` (for `name`), waiting for it if need be."""

        async def until() -> None:
            while len(self.select(phase, name)) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)
        return self.select(phase, name)[count - 1]


async def settle() -> None:
    """Let every callback that is already scheduled run (not a timed wait)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def parked(injector: Injector, name: str, n: int = 1) -> None:
    """Let the loop turn until `n` handlers are parked on `name`: a few turns, not a timed wait."""
    for _ in range(100):
        if injector.waiters(name) >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{n} handler(s) never parked on {name!r}: {injector.waiters(name)}")


def park(injector: Injector, name: str, shard: int = 0, timeout: float = 5.0) -> asyncio.Task:
    return asyncio.create_task(injector.inject_wait_for_message(name, timeout, shard=shard))


# -- defaults and the disabled path ----------------------------------------------------------


def test_everything_is_disabled_by_default() -> None:
    injector = Injector()
    called = []
    assert injector.enabled_injections() == []
    assert not injector.is_enabled("p")
    assert injector.inject("p", lambda: called.append(1)) is None
    assert injector.inject_parameter("p") is None
    injector.inject_exception("p")  # does not raise
    assert injector.enter_count("p") == 0
    assert injector.waiters("p") == 0
    assert called == []


@pytest.mark.asyncio
async def test_disabled_point_does_nothing_but_look_up() -> None:
    """A disabled async point hands back an already-done awaitable: no coroutine to
    schedule, no suspension, no listener call, no catalog entry."""
    injector = Injector()
    calls: list[tuple] = []
    injector.add_listener(lambda *event: calls.append(event))

    async def handler(h: InjectionHandler) -> None:
        raise AssertionError("a disabled handler point must not run its handler")

    awaitables = [
        injector.inject_sleep("s", 60),
        injector.inject_handler("h", handler),
        injector.inject_wait_for_message("w", 60),
    ]
    for awaitable in awaitables:
        assert not inspect.iscoroutine(awaitable)  # nothing to leak if never awaited
        with pytest.raises(StopIteration):
            next(iter(awaitable.__await__()))  # completes without ever suspending
        await awaitable
    assert injector.inject("l", lambda: 1) is None
    assert injector.inject_parameter("p") is None
    injector.inject_exception("e")
    assert calls == []
    assert injector.catalog() == []


# -- the kinds of point ----------------------------------------------------------------------


def test_lambda_point_calls_after_its_event() -> None:
    injector = Injector()
    order: list[str] = []
    injector.add_listener(lambda name, kind, phase, *rest: order.append(f"{phase}:{kind}"))
    injector.enable("l")
    assert injector.inject("l", lambda: order.append("call") or 42) == 42
    assert order == ["enable:None", "enter:lambda", "call"]
    assert injector.enter_count("l") == 1


@pytest.mark.asyncio
async def test_sleep_event_comes_before_the_sleep() -> None:
    injector = Injector()
    events = Events(injector)
    injector.enable("s")
    task = asyncio.create_task(injector.inject_sleep("s", 60))
    event = await events.wait("enter", "s")
    assert event["type"] == "sleep"
    assert not task.done()  # the hit was announced while the 60 s sleep is still ahead
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_sleep_duration_of_parameters_and_deadline() -> None:
    injector = Injector()
    order: list[str] = []
    injector.add_listener(lambda name, kind, phase, *rest: order.append(phase))
    loop = asyncio.get_running_loop()
    injector.enable("s", parameters={"ms": "20"})

    def duration(parameters: Mapping[str, str]) -> float:
        order.append(f"duration{dict(parameters)}")
        return int(parameters["ms"]) / 1000

    start = loop.time()
    await injector.inject_sleep("s", duration)
    assert loop.time() - start >= 0.019  # a lower bound only: a sleep never ends early
    assert order == ["enable", "enter", "duration{'ms': '20'}"]

    start = loop.time()
    await injector.inject_sleep("s", 0.01)
    assert loop.time() - start >= 0.009

    deadline = loop.time() + 0.02
    await injector.inject_sleep("s", deadline=deadline)
    assert loop.time() >= deadline - 0.001
    await injector.inject_sleep("s", deadline=loop.time() - 10)  # past: no sleep, no error
    assert injector.enter_count("s") == 4


class CustomError(RuntimeError):
    pass


_INSTANCE = CustomError("the very instance")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(None, InjectedError, id="default"),
        pytest.param(_INSTANCE, CustomError, id="instance"),
        pytest.param(CustomError, CustomError, id="class"),
        pytest.param(lambda: CustomError("made"), CustomError, id="factory"),
    ],
)
def test_exception_point(error: Any, expected: type[BaseException]) -> None:
    injector = Injector()
    seen: list[str] = []
    injector.add_listener(lambda name, kind, phase, *rest: seen.append(f"{phase}:{kind}"))
    injector.enable("e")
    with pytest.raises(expected) as raised:
        injector.inject_exception("e", error)
    assert seen == ["enable:None", "enter:exception"]  # announced before the raise
    if error is None:
        assert raised.value.injection == "e"
        assert str(raised.value) == "injected error: e"
    if error is _INSTANCE:
        assert raised.value is _INSTANCE


def test_exception_factory_runs_after_the_event() -> None:
    injector = Injector()
    order: list[str] = []
    injector.add_listener(lambda name, kind, phase, *rest: order.append(phase))
    injector.enable("e")

    def factory() -> BaseException:
        order.append("factory")
        return CustomError()

    with pytest.raises(CustomError):
        injector.inject_exception("e", factory)
    assert order == ["enable", "enter", "factory"]


@pytest.mark.asyncio
async def test_handler_get_set_poll_and_wait() -> None:
    injector = Injector()
    events = Events(injector)
    injector.enable("h", parameters={"k": "v"})
    seen: dict[str, Any] = {}

    async def handler(h: InjectionHandler) -> str:
        seen["order"] = [e["phase"] for e in events.items]  # the event came first
        seen["name"], seen["shard"], seen["k"], seen["missing"] = (
            h.name,
            h.shard,
            h.get("k"),
            h.get("x"),
        )
        h.set("out", 3)
        seen["poll_before"] = h.poll_for_message()
        await h.wait_for_message(5)
        seen["poll_after"] = h.poll_for_message()
        return "ignored"

    task = asyncio.create_task(injector.inject_handler("h", handler))
    await parked(injector, "h")
    assert injector.get_parameters("h") == {"k": "v", "out": "3"}  # set() exports, as a str
    injector.receive_message("h")
    await asyncio.wait_for(task, 5)
    assert seen == {
        "order": ["enable", "enter"],
        "name": "h",
        "shard": 0,
        "k": "v",
        "missing": None,
        "poll_before": False,
        "poll_after": False,  # the one message was consumed by the wait
    }
    assert events.phases("h") == ["enable", "enter", "wait", "message", "resume"]
    assert events.select("resume")[0]["type"] == "handler"


@pytest.mark.asyncio
async def test_handler_poll_takes_a_message_without_waiting() -> None:
    injector = Injector()
    injector.enable("h")
    results: list[bool] = []
    injector.receive_message("h")

    async def handler(h: InjectionHandler) -> None:
        results.extend([h.poll_for_message(), h.poll_for_message()])

    await injector.inject_handler("h", handler)
    assert results == [True, False]


@pytest.mark.asyncio
async def test_handler_wait_times_out() -> None:
    injector = Injector()
    events = Events(injector)
    injector.enable("h")

    async def handler(h: InjectionHandler) -> None:
        await h.wait_for_message(0.05)

    with pytest.raises(BreakpointTimeout):
        await injector.inject_handler("h", handler)
    assert events.phases("h") == ["enable", "enter", "wait", "timeout"]
    assert events.select("timeout")[0]["type"] == "handler"
    assert injector.waiters("h") == 0


@pytest.mark.asyncio
async def test_breakpoint_events_and_scylla_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    """enter (parked) -> message -> resume, and the INFO lines come after their events."""
    injector = Injector()
    timeline: list[str] = []
    injector.add_listener(lambda name, kind, phase, *rest: timeline.append(f"event {phase}"))

    class Timeline(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            timeline.append(f"log {record.levelname} {record.getMessage()}")

    log = logging.getLogger("pytest_injection_events.injector")
    handler = Timeline()
    log.addHandler(handler)
    caplog.set_level(logging.INFO, logger=log.name)
    events = Events(injector)
    try:
        injector.enable("bp")
        task = park(injector, "bp")
        enter = await events.wait("enter", "bp")
        assert enter["type"] == "wait_for_message"
        assert (enter["enter_count"], enter["shard"]) == (1, 0)
        await parked(injector, "bp")
        assert not task.done()
        injector.receive_message("bp")
        await asyncio.wait_for(task, 5)
        await settle()  # the "received" line is scheduled right after the resume event
    finally:
        log.removeHandler(handler)
    assert events.phases("bp") == ["enable", "enter", "message", "resume"]
    waiting = timeline.index("log INFO bp: waiting for message")
    received = timeline.index("log INFO bp: message received")
    assert timeline.index("event enter") < waiting < received
    assert timeline.index("event resume") < received
    assert injector.waiters("bp") == 0


@pytest.mark.asyncio
async def test_lines_are_logged_before_the_released_work_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As in ScyllaDB: once the point lets the caller go on, both lines are in the log."""
    caplog.set_level(logging.INFO, logger="pytest_injection_events.injector")
    injector = Injector()
    injector.enable("bp")
    injector.receive_message("bp")  # already there: the breakpoint goes straight on
    await injector.inject_wait_for_message("bp", 5)
    assert [r.getMessage() for r in caplog.records] == [
        "bp: waiting for message",
        "bp: message received",
    ]


@pytest.mark.asyncio
async def test_breakpoint_timeout(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pytest_injection_events.injector")
    injector = Injector()
    events = Events(injector)
    injector.enable("bp", one_shot=True)
    with pytest.raises(BreakpointTimeout) as raised:
        await injector.inject_wait_for_message("bp", 0.05)
    assert isinstance(raised.value, TimeoutError)
    assert (raised.value.injection, raised.value.timeout) == ("bp", 0.05)
    assert "bp" in str(raised.value)
    assert events.phases("bp") == ["enable", "enter", "timeout"]
    assert injector.waiters("bp") == 0
    assert injector.enabled_injections() == []  # the one shot is spent
    assert injector.enter_count("bp") == 1
    await settle()
    lines = [r.getMessage() for r in caplog.records]
    assert "bp: waiting for message" in lines
    assert "bp: message received" not in lines


def test_parameter_point() -> None:
    injector = Injector()
    events = Events(injector)
    assert injector.inject_parameter("p") is None
    injector.enable("p", parameters={"value": "7", "other": "x"})
    assert injector.inject_parameter("p") == "7"
    assert injector.inject_parameter("p", key="other") == "x"
    assert injector.inject_parameter("p", key="missing") is None
    assert [e["type"] for e in events.select("enter")] == ["parameter"] * 3
    assert injector.enter_count("p") == 3


def test_parameters_are_strings() -> None:
    injector = Injector()
    injector.enable("p", parameters={"n": 5, "flag": True})  # type: ignore[dict-item]
    assert injector.get_parameters("p") == {"n": "5", "flag": "True"}


# -- one_shot, re-enable, disable ------------------------------------------------------------


def test_one_shot_fires_once_then_disables_itself() -> None:
    injector = Injector()
    calls: list[int] = []
    injector.enable("l", one_shot=True)
    assert injector.is_enabled("l")
    assert injector.inject("l", lambda: calls.append(1) or "hit") == "hit"
    assert injector.inject("l", lambda: calls.append(2)) is None
    assert calls == [1]
    assert not injector.is_enabled("l")
    assert injector.enabled_injections() == []
    assert injector.enter_count("l") == 1  # counters outlive the one shot


@pytest.mark.asyncio
async def test_one_shot_handler_still_running() -> None:
    """Not listed, does not fire again, but still gets messages and answers enter_count 1."""
    injector = Injector()
    events = Events(injector)
    injector.enable("h", one_shot=True)

    async def handler(h: InjectionHandler) -> None:
        await h.wait_for_message(5)

    task = asyncio.create_task(injector.inject_handler("h", handler))
    await events.wait("enter", "h")
    assert not injector.is_enabled("h")
    assert injector.enabled_injections() == []
    assert injector.enter_count("h") == 1

    async def must_not_run(h: InjectionHandler) -> None:
        raise AssertionError("a spent one-shot fired again")

    await injector.inject_handler("h", must_not_run)
    assert injector.enter_count("h") == 1
    await parked(injector, "h")
    injector.receive_message("h")  # still reachable by messages
    await asyncio.wait_for(task, 5)
    assert events.phases("h") == ["enable", "enter", "wait", "message", "resume"]
    assert injector.enter_count("h") == 1
    injector.receive_message("h")  # now retired: ignored, no event
    assert events.phases("h")[-1] == "resume"


@pytest.mark.asyncio
async def test_one_shot_breakpoint_parked_answers_enter_count() -> None:
    injector = Injector()
    events = Events(injector)
    injector.enable("bp", one_shot=True)
    task = park(injector, "bp")
    await events.wait("enter", "bp")
    second = park(injector, "bp")  # the second hit does not fire: it goes straight on
    await asyncio.wait_for(second, 5)
    await parked(injector, "bp")
    assert (injector.enter_count("bp"), injector.waiters("bp")) == (1, 1)
    assert not injector.is_enabled("bp")
    injector.receive_message("bp")
    await asyncio.wait_for(task, 5)
    assert events.phases("bp") == ["enable", "enter", "message", "resume"]


def test_reenable_replaces_parameters_and_resets_counters() -> None:
    injector = Injector()
    events = Events(injector)
    injector.enable("p", parameters={"a": "1"})
    injector.inject_parameter("p", "a")
    injector.inject_parameter("p", "a")
    assert injector.enter_count("p") == 2
    injector.enable("p", one_shot=True, parameters={"b": "2"})
    assert injector.get_parameters("p") == {"b": "2"}  # replaced, not merged
    assert injector.enter_count("p") == 0
    assert injector.inject_parameter("p", "a") is None
    assert events.items[-1]["enter_count"] == 1
    assert events.items[-1]["one_shot"] is True
    assert events.items[-1]["parameters"] == {"b": "2"}
    assert not injector.is_enabled("p")  # the new one_shot applies


@pytest.mark.asyncio
async def test_reenable_keeps_parked_handlers_reachable() -> None:
    injector = Injector()
    events = Events(injector)
    injector.enable("bp", one_shot=True, parameters={"v": "1"})
    old = park(injector, "bp")
    await events.wait("enter", "bp")
    injector.enable("bp", one_shot=True, parameters={"v": "2"})
    assert injector.enter_count("bp") == 0
    assert injector.is_enabled("bp")  # re-armed
    new = park(injector, "bp")
    second = await events.wait("enter", "bp", count=2)
    assert (second["enter_count"], second["parameters"]) == (1, {"v": "2"})
    await parked(injector, "bp", 2)
    injector.receive_message("bp")  # one message releases the old and the new handler
    await asyncio.wait_for(asyncio.gather(old, new), 5)


@pytest.mark.asyncio
async def test_message_before_reenable_is_not_news() -> None:
    injector = Injector()
    injector.enable("bp")
    injector.receive_message("bp")
    injector.enable("bp")
    task = park(injector, "bp")
    await parked(injector, "bp")
    injector.receive_message("bp")
    await asyncio.wait_for(task, 5)


@pytest.mark.asyncio
async def test_message_to_a_disabled_injection_is_ignored() -> None:
    injector = Injector()
    events = Events(injector)
    injector.receive_message("bp")
    injector.enable("bp")
    task = park(injector, "bp")
    await parked(injector, "bp")
    assert events.phases("bp") == ["enable", "enter"]
    injector.receive_message("bp")
    await asyncio.wait_for(task, 5)


@pytest.mark.asyncio
async def test_shared_messages_reach_every_handler_even_before_it_waits() -> None:
    injector = Injector()
    events = Events(injector)
    injector.enable("bp")
    first = park(injector, "bp")
    await events.wait("enter", "bp")
    await parked(injector, "bp")
    injector.receive_message("bp")
    await asyncio.wait_for(first, 5)
    # A handler that began after the message arrived still sees it: it does not park.
    late = park(injector, "bp")
    await asyncio.wait_for(late, 5)
    assert events.phases("bp") == ["enable", "enter", "message", "resume", "enter", "resume"]
    assert injector.waiters("bp") == 0

    # And a message sent after enable, before anyone hit the point, counts too.
    injector.enable("other")
    injector.receive_message("other")
    await asyncio.wait_for(asyncio.gather(park(injector, "other"), park(injector, "other")), 5)


@pytest.mark.asyncio
async def test_unshared_messages_wake_exactly_one_handler() -> None:
    injector = Injector()
    events = Events(injector)
    injector.enable("h")

    async def handler(h: InjectionHandler) -> None:
        await h.wait_for_message(5)

    tasks = [
        asyncio.create_task(injector.inject_handler("h", handler, share_messages=False))
        for _ in range(3)
    ]
    await events.wait("enter", "h", count=3)
    await parked(injector, "h", 3)
    for released in (1, 2, 3):
        injector.receive_message("h")
        await events.wait("resume", "h", count=released)
        await settle()  # every woken handler has had its turn to take or not take it
        assert sum(t.done() for t in tasks) == released
        assert injector.waiters("h") == 3 - released
    await asyncio.gather(*tasks)


@pytest.mark.asyncio
async def test_disable_releases_every_parked_handler() -> None:
    injector = Injector()
    events = Events(injector)
    injector.enable("bp")

    async def handler(h: InjectionHandler) -> None:
        await h.wait_for_message(5)

    tasks = [park(injector, "bp"), asyncio.create_task(injector.inject_handler("bp", handler))]
    await events.wait("enter", "bp", count=2)
    await parked(injector, "bp", 2)
    injector.disable("bp")
    assert not injector.is_enabled("bp")
    await asyncio.wait_for(asyncio.gather(*tasks), 5)  # released, not timed out
    assert events.phases("bp") == [
        "enable",
        "enter",  # the breakpoint: parked
        "enter",  # the handler: entered...
        "wait",  # ...and waits
        "disable",
        "resume",
        "resume",
    ]
    assert injector.waiters("bp") == 0
    assert injector.inject("bp", lambda: 1) is None
    injector.disable("bp")  # disabling twice is harmless and silent
    assert events.phases("bp")[-1] == "resume"


def test_disable_all() -> None:
    injector = Injector()
    for name in ("a", "b", "c"):
        injector.enable(name)
    assert sorted(injector.enabled_injections()) == ["a", "b", "c"]
    injector.disable("b")
    assert sorted(injector.enabled_injections()) == ["a", "c"]
    injector.disable_all()
    assert injector.enabled_injections() == []
    assert not any(injector.is_enabled(name) for name in ("a", "b", "c"))


# -- shards ----------------------------------------------------------------------------------


def test_one_shot_fires_at_most_once_per_shard() -> None:
    injector = Injector(shards=3)
    events = Events(injector)
    injector.enable("l", one_shot=True)
    assert [s.enabled for s in injector.injection_state("l")] == [True, True, True]
    fired = [injector.inject("l", lambda: True, shard=shard) for shard in (0, 0, 1, 1)]
    assert fired == [True, None, True, None]
    assert [s.enabled for s in injector.injection_state("l")] == [False, False, True]
    assert injector.is_enabled("l")  # shard 2 still holds it
    assert injector.enabled_injections() == ["l"]
    assert injector.inject("l", lambda: True, shard=2)
    assert not injector.is_enabled("l")
    assert injector.enter_count("l") == 3  # summed over shards
    enters = events.select("enter")
    assert [(e["shard"], e["enter_count"]) for e in enters] == [(0, 1), (1, 2), (2, 3)]
    assert [e["shard"] for e in events.items if e["phase"] == "enable"] == [None]


@pytest.mark.asyncio
async def test_enable_message_and_disable_apply_to_every_shard() -> None:
    injector = Injector(shards=3)
    events = Events(injector)
    injector.enable("bp", parameters={"k": "v"})
    assert [(s.enabled, s.parameters) for s in injector.injection_state("bp")] == [
        (True, {"k": "v"})
    ] * 3
    tasks = [park(injector, "bp", shard=shard) for shard in range(3)]
    await events.wait("enter", "bp", count=3)
    await parked(injector, "bp", 3)
    injector.receive_message("bp")  # one message, every shard
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert sorted(e["shard"] for e in events.select("resume")) == [0, 1, 2]

    injector.enable("d")
    tasks = [park(injector, "d", shard=shard) for shard in range(3)]
    await events.wait("enter", "d", count=3)
    await parked(injector, "d", 3)
    injector.disable("d")  # releases every shard
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert [s.enabled for s in injector.injection_state("d")] == [False] * 3
    assert injector.enter_count("d") == 3


@pytest.mark.parametrize("shard", [2, -1, "0"])
def test_shard_out_of_range_is_refused(shard: Any) -> None:
    injector = Injector(shards=2)
    events = Events(injector)
    injector.enable("l")
    with pytest.raises(ValueError, match="shard"):
        injector.inject("l", lambda: True, shard=shard)
    assert events.select("enter") == []
    assert injector.enter_count("l") == 0


def test_at_least_one_shard() -> None:
    with pytest.raises(ValueError, match="shards must be at least 1"):
        Injector(shards=0)


# -- catalog, events, listeners --------------------------------------------------------------


def test_catalog_declared_and_added_at_first_hit() -> None:
    declared = [PointInfo("a", "sleep", "sleeps"), PointInfo("b", "wait_for_message", "parks")]
    injector = Injector(points=declared)
    assert injector.catalog() == declared
    with pytest.raises(ValueError, match="unknown kind"):
        injector.declare("c", "teleport")
    injector.enable("new")
    injector.inject_parameter("new")
    injector.inject_parameter("new")
    assert injector.catalog() == [*declared, PointInfo("new", "parameter", "")]
    injector.declare("c", "lambda", "calls")
    assert injector.catalog()[-1] == PointInfo("c", "lambda", "calls")
    assert set(KINDS) == {
        "lambda",
        "sleep",
        "exception",
        "handler",
        "wait_for_message",
        "parameter",
    }


@pytest.mark.asyncio
async def test_events_carry_the_spec_keys() -> None:
    """Through the node's EventLog: §4 keys, seq from 1 without gaps, the type of each point."""
    injector = Injector(shards=2, points=[PointInfo("bp", "wait_for_message")])
    log = EventLog("node-1")
    injector.add_listener(log.publish)
    before = time.time()
    injector.enable("bp", one_shot=True, parameters={"k": "v"})
    task = park(injector, "bp", shard=1)
    await parked(injector, "bp")
    injector.receive_message("bp")
    await asyncio.wait_for(task, 5)
    injector.disable("bp")
    records = [r.data for r in log.since(0)]
    for data in records:
        assert set(data) == EVENT_KEYS
        assert data["node"] == "node-1"
        assert isinstance(data["timestamp"], float)
        assert before - 1 <= data["timestamp"] <= time.time() + 1
        assert round(data["timestamp"], 6) == data["timestamp"]
        assert (data["injection"], data["type"]) == ("bp", "wait_for_message")
        assert data["one_shot"] is True and data["parameters"] == {"k": "v"}
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert [(r["phase"], r["shard"], r["enter_count"]) for r in records] == [
        ("enable", None, 0),
        ("enter", 1, 1),
        ("message", None, 1),
        ("resume", 1, 1),
        ("disable", None, 1),
    ]


@pytest.mark.asyncio
async def test_every_kind_announces_its_hit_before_acting() -> None:
    injector = Injector()
    order: list[str] = []
    injector.add_listener(
        lambda name, kind, phase, *rest: phase == "enter" and order.append(f"{kind} event")
    )
    for name in KINDS:
        injector.enable(name)
    injector.receive_message("wait_for_message")  # so the breakpoint goes straight on

    injector.inject("lambda", lambda: order.append("lambda acts"))
    await injector.inject_sleep("sleep", lambda p: order.append("sleep acts") or 0)
    with pytest.raises(CustomError):
        injector.inject_exception(
            "exception", lambda: order.append("exception acts") or CustomError()
        )

    async def handler(h: InjectionHandler) -> None:
        order.append("handler acts")

    await injector.inject_handler("handler", handler)
    injector.add_listener(
        lambda name, kind, phase, *rest: (
            phase == "enter" and order.append(f"waiters {injector.waiters(name)}")
        )
    )
    await injector.inject_wait_for_message("wait_for_message", 5)
    assert injector.inject_parameter("parameter") is None
    assert order == [
        "lambda event",
        "lambda acts",
        "sleep event",
        "sleep acts",
        "exception event",
        "exception acts",
        "handler event",
        "handler acts",
        "wait_for_message event",
        "waiters 0",  # announced before it parked
        "parameter event",
        "waiters 0",
    ]


def test_a_failing_listener_does_not_break_the_point(caplog: pytest.LogCaptureFixture) -> None:
    injector = Injector()
    seen: list[str] = []

    def broken(*event: object) -> None:
        raise RuntimeError("listener bug")

    injector.add_listener(broken)
    injector.add_listener(lambda name, kind, phase, *rest: seen.append(phase))
    with caplog.at_level(logging.ERROR, logger="pytest_injection_events.injector"):
        injector.enable("l")
        assert injector.inject("l", lambda: "ok") == "ok"
    assert seen == ["enable", "enter"]  # the next listener still hears every event
    failures = [r for r in caplog.records if r.getMessage() == "injection event listener failed"]
    assert len(failures) == 2
    assert failures[0].exc_info is not None


def test_removed_listener_hears_nothing() -> None:
    injector = Injector()
    seen: list[str] = []
    remove = injector.add_listener(lambda *event: seen.append(event[2]))
    injector.enable("l")
    remove()
    injector.inject("l", lambda: None)
    assert seen == ["enable"]


def test_a_listener_may_remove_itself_or_another_while_called() -> None:
    """Changing the listeners during an event does not make another listener miss it."""
    injector = Injector()
    seen: list[str] = []

    def once(name: str, kind: str | None, phase: str, *rest: object) -> None:
        remove_once()
        seen.append(f"once {phase}")

    remove_once = injector.add_listener(once)
    injector.add_listener(lambda name, kind, phase, *rest: seen.append(f"other {phase}"))
    injector.enable("l")
    injector.inject("l", lambda: None)
    assert seen == ["once enable", "other enable", "other enter"]
    remove_once()  # removing twice is harmless
