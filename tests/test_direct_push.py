"""The hit writes its event straight to a reader waiting caught up (docs/design.md, the
path of an event): the same bytes the reader's task would write, never out of order,
never one write per event in a burst, and never when the reader's socket has anything
left to send (then the task writes it, under the stall watchdog, as always).

The servers here run on the test's own loop, so a hit made by the test is the node's
hit, and what a reader's task does in between is known."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

import pytest

from pytest_injection_events.events import WAKE_AT_ONCE, EventLog, Record, Subscription

EVENTS = "/v2/error_injection/events"
FRAME = re.compile(rb"id: (\d+)\ndata: ([^\n]*)\n\n")
PING = b": ping\n"


def nothing() -> None:
    return None


async def parked(*subscriptions: Subscription) -> None:
    """Let the loop turn until every reader's task waits in `next_batch`, at least once
    (so the log's callback after a hit ran: a hit finds them as after an idle time). A
    few turns: the servers run on this loop, nothing else is waited for."""
    for _ in range(1000):
        await asyncio.sleep(0)
        if all(s.waiting for s in subscriptions):
            return
    raise AssertionError("the readers' tasks did not come to wait")


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition the node's own timers change (nothing to await on for it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


# -- the log's side: no HTTP ---------------------------------------------------------


class Pushes:
    """A push hook that keeps what it is handed (and takes it, or not)."""

    def __init__(self, takes: bool = True) -> None:
        self.takes = takes
        self.seqs: list[int | None] = []

    def __call__(self, record: Record) -> bool:
        if self.takes:
            self.seqs.append(record.seq)
        return self.takes


def publish(log: EventLog, name: str = "a") -> None:
    log.publish(name, "lambda", "enter", 0, 1, False, {})


@pytest.mark.asyncio
async def test_a_hit_pushes_to_a_reader_waiting_caught_up_once_a_loop_turn() -> None:
    """A record the reader does not want only moves its cursor; one it wants is pushed
    by the hit and the reader goes on waiting; a second in the same turn wakes its task,
    which takes it (a burst goes out batched); after a turn, the hit pushes again."""
    log = EventLog("n")
    reader = log.subscribe(injections=["a"])
    reader.push = pushes = Pushes()
    task = asyncio.ensure_future(reader.next_batch())
    await parked(reader)

    publish(log, "b")
    assert (reader.cursor, reader.waiting, pushes.seqs) == (2, True, [])
    publish(log, "a")
    assert (reader.cursor, reader.waiting, pushes.seqs, reader.pushes) == (3, True, [2], 1)
    publish(log, "a")
    publish(log, "a")
    assert pushes.seqs == [2] and not reader.waiting
    assert [r.seq for r in await task] == [3, 4]

    task = asyncio.ensure_future(reader.next_batch())
    await parked(reader)
    publish(log, "a")
    await asyncio.sleep(0)  # the log's callback of this turn runs: pushes are allowed again
    publish(log, "a")
    assert (pushes.seqs, reader.waiting, reader.backlog) == ([2, 5, 6], True, 0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not log._waiting


@pytest.mark.asyncio
async def test_a_push_refused_or_failing_leaves_the_record_to_the_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = EventLog("n")
    reader = log.subscribe()
    reader.push = Pushes(takes=False)
    task = asyncio.ensure_future(reader.next_batch())
    await parked(reader)
    publish(log)
    assert [r.seq for r in await task] == [1]

    def broken(record: Record) -> bool:
        raise OSError("no")

    reader.push = broken
    task = asyncio.ensure_future(reader.next_batch())
    await parked(reader)
    with caplog.at_level(logging.ERROR, "pytest_injection_events.events"):
        publish(log)
    assert [r.seq for r in await task] == [2]
    assert "pushing an event to a reader failed" in caplog.text
    assert reader.pushes == 0


@pytest.mark.asyncio
async def test_many_readers_are_pushed_to_by_one_callback_not_by_the_hit() -> None:
    """Past WAKE_AT_ONCE waiting readers, the hit touches none of them: the log's one
    callback pushes to each that has exactly that record to take, and wakes each that
    has more (it takes them in one batch)."""
    log = EventLog("n")
    readers = [log.subscribe() for _ in range(WAKE_AT_ONCE + 3)]
    hooks = []
    for reader in readers:
        reader.push = hook = Pushes()
        hooks.append(hook)
    tasks = [asyncio.ensure_future(r.next_batch()) for r in readers]
    await parked(*readers)
    publish(log)
    assert all(h.seqs == [] for h in hooks)
    await asyncio.sleep(0)  # the callback
    assert all(h.seqs == [1] for h in hooks) and all(r.waiting for r in readers)
    publish(log)
    publish(log)
    await asyncio.sleep(0)
    assert all(h.seqs == [1] for h in hooks)
    assert [[r.seq for r in await t] for t in tasks] == [[2, 3]] * len(readers)


@pytest.mark.asyncio
async def test_a_replaying_reader_is_not_pushed_to_until_caught_up() -> None:
    log = EventLog("n")
    for _ in range(3):
        publish(log)
    reader = log.subscribe(after=0)
    reader.push = pushes = Pushes()
    assert [r.seq for r in await reader.next_batch()] == [1, 2, 3]
    task = asyncio.ensure_future(reader.next_batch())
    await parked(reader)
    publish(log)
    assert pushes.seqs == [4]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
