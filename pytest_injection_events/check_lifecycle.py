"""A stream's life: resume by Last-Event-ID, gaps, many clients, a client that does not read.

See docs/conformance.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from .check_events import seq_of, seq_problems
from .check_run import CheckRun, record_failure
from .check_transport import Received, StreamReader, StreamRefused

#: Control events made at a time while looking for a gap, and for the slow client.
GAP_BATCH = 250
SLOW_EVENTS = 400
#: Concurrent enable/disable loops that make control events (each on its own name).
MAKERS = 8


def seqs(reader: StreamReader, point: str) -> list[int | None]:
    return [seq_of(r) for r in reader.events(point, "enter")]


def holds_all(
    reader: StreamReader, point: str, expected: Sequence[int | None]
) -> Callable[[], bool]:
    """A condition: `reader` has every seq of `expected` among the point's enter events."""
    return lambda: set(expected) <= set(seqs(reader, point))


async def make_control_events(run: CheckRun, count: int) -> None:
    """About `count` numbered events without the trigger: enable/disable pairs."""
    names = [f"{run.scratch}_{i}" for i in range(MAKERS)]
    pairs = max(1, count // 2)

    async def maker(name: str, n: int) -> None:
        for _ in range(n):
            await run.enable(name)
            await run.disable(name)

    share = [pairs // MAKERS + (1 if i < pairs % MAKERS else 0) for i in range(MAKERS)]
    await asyncio.gather(*(maker(name, n) for name, n in zip(names, share, strict=True) if n))


async def check_lifecycle(run: CheckRun) -> None:
    assert run.trigger is not None
    point = run.trigger.point
    try:
        await run.enable_point()
        ref = await run.open_stream([("injection", point)])
    except (ConnectionError, StreamRefused) as exc:
        record_failure(run.report, "lifecycle", exc, prefix="could not set up: ", checked=False)
        return
    for step in (check_reconnect, check_clients):
        try:
            await step(run, ref)
        except (ConnectionError, StreamRefused) as exc:
            record_failure(run.report, f"lifecycle.{step.__name__[6:]}", exc)
    for other in (check_slow_client, check_gap):
        try:
            await other(run)
        except (ConnectionError, StreamRefused) as exc:
            record_failure(run.report, f"lifecycle.{other.__name__[6:]}", exc)


def _shard(run: CheckRun) -> int | None:
    assert run.trigger is not None
    return 0 if run.trigger.chooses_shard else None


async def check_reconnect(run: CheckRun, ref: StreamReader) -> None:
    """Disconnect, miss two hits, resume by the header and by the query: no dup, no hole."""
    assert run.trigger is not None
    point, report = run.trigger.point, run.report
    first = await run.open_stream([("injection", point)])
    for _ in range(2):
        await run.hit(first, _shard(run))
    seen = first.events(point, "enter")
    if not seen or seen[-1].message.id is None:
        report.failed("lifecycle.reconnect", "no event with an id to resume from", first.request)
        return
    last = seen[-1].message.id
    await first.close()
    for _ in range(2):
        await run.hit(ref, _shard(run))
    resumed = await run.open_stream([("injection", point)], {"Last-Event-ID": last})
    by_query = await run.open_stream([("injection", point), ("last_event_id", last)])
    await run.hit(ref, _shard(run))
    try:
        after = int(last)
    except ValueError:
        report.failed("lifecycle.reconnect", f"the last id {last!r} is not a number", first.request)
        return
    expected = [s for s in seqs(ref, point) if s is not None and s > after]
    for check, reader in (("lifecycle.reconnect", resumed), ("lifecycle.last_event_id", by_query)):
        await reader.wait(holds_all(reader, point, expected), run.timeout)
        got = seqs(reader, point)
        problems = []
        missing = sorted(set(expected) - set(got))
        if missing:
            problems.append(f"missing seq {missing} (hit while disconnected: not replayed)")
        if len(got) != len(set(got)):
            problems.append(f"duplicates in {got}")
        if any(s is not None and s <= after for s in got):
            problems.append(f"seq at or before {after} sent again: {got}")
        if not problems and got != expected:
            problems.append(f"got {got}, expected {expected}")
        report.verdict(
            check,
            problems,
            f"resumed after {after}: {len(expected)} events, none twice, none missing",
            reader.request,
        )


async def check_clients(run: CheckRun, ref: StreamReader) -> None:
    """Many clients at once, one leaving early: each gets every event."""
    assert run.trigger is not None
    point, report = run.trigger.point, run.report
    opened = await asyncio.gather(
        *(run.open_stream([("injection", point)]) for _ in range(run.clients)),
        return_exceptions=True,
    )
    readers = [r for r in opened if isinstance(r, StreamReader)]
    refused = [r for r in opened if not isinstance(r, StreamReader)]
    leaver = await run.open_stream([("injection", point)])
    await leaver.close()
    before = len(ref.events(point, "enter"))
    for i in range(3):
        await run.hit(ref, i % run.shards if run.trigger.chooses_shard else None)
    expected = seqs(ref, point)[before:]
    await asyncio.gather(*(r.wait(holds_all(r, point, expected), run.timeout) for r in readers))
    problems = []
    if refused:
        problems.append(f"{len(refused)} of {run.clients} clients refused: {refused[0]}")
    short = [r for r in readers if seqs(r, point) != expected]
    if short:
        problems.append(
            f"{len(short)} of {len(readers)} clients did not get exactly {expected} "
            f"(one got {seqs(short[0], point)})"
        )
    report.verdict(
        "lifecycle.clients",
        problems,
        f"{run.clients} concurrent clients each got all {len(expected)} events",
        ref.request,
    )
    await asyncio.gather(*(r.close() for r in readers))


async def check_slow_client(run: CheckRun) -> None:
    """A client that reads nothing while events pour: the others are not held back, and
    it either gets everything later or a `gap` and a disconnect (best effort)."""
    report = run.report
    slow = await run.open_stream([("phase", "all")], read=False)
    fast = await run.open_stream([("phase", "all")])
    sentinel = f"{run.scratch}_end"
    await make_control_events(run, SLOW_EVENTS)
    await run.enable(sentinel)
    await run.disable(sentinel)

    def done(reader: StreamReader) -> bool:
        return bool(reader.events(sentinel, "disable")) or any(
            r.phase == "gap" for r in reader.messages
        )

    await fast.wait(lambda: done(fast), run.timeout)
    fast_problems = seq_problems(fast, contiguous=True)
    if not fast.events(sentinel, "disable"):
        fast_problems.append(f"a reading client did not get all {SLOW_EVENTS} events in time")
    slow.start_reading()
    await slow.wait(lambda: done(slow) and (slow.ended or not _gap(slow)), run.timeout)
    problems = [f"{p} (the client that read)" for p in fast_problems]
    gap = _gap(slow)
    if gap is not None:
        detail = (
            f"cut off with a gap (missed {gap.data.get('missed_from')}.."
            f"{gap.data.get('missed_to')})"
            + (" and disconnected" if slow.ended else ", but left connected")
        )
        if not slow.ended:
            problems.append(detail)
    elif slow.events(sentinel, "disable"):
        holes = seq_problems(slow, contiguous=True)
        problems += [f"{p} (the client that did not read)" for p in holes]
        detail = (
            f"a client that read nothing while about {SLOW_EVENTS} events were sent got them "
            "all afterwards (the server's queue bound was not reached, so how it overflows "
            "was not seen)"
        )
    else:
        problems.append("the client that did not read got neither every event nor a gap")
        detail = ""
    report.verdict("lifecycle.slow_client", problems, detail, slow.request)


def _gap(reader: StreamReader) -> Received | None:
    return next((r for r in reader.messages if r.phase == "gap"), None)


async def _replay_head(run: CheckRun) -> list[Received]:
    """The first two messages of a replay of everything kept (`Last-Event-ID: 0`)."""
    reader = await run.open_stream([("phase", "all")], {"Last-Event-ID": "0"})
    try:
        await reader.wait(lambda: len(reader.messages) >= 2, run.timeout)
        return reader.messages[:2]
    finally:
        await reader.close()


async def check_gap(run: CheckRun) -> None:
    """A resume from before what the server keeps starts with a `gap` (best effort: the
    check makes up to `gap_budget` events to push the first ones out)."""
    report, made = run.report, 0
    request = "GET /v2/error_injection/events?phase=all [Last-Event-ID: 0]"
    while True:
        head = await _replay_head(run)
        if not head:
            report.failed(
                "lifecycle.gap",
                f"a resume from 0 (everything kept) sent nothing within {run.timeout:g}s",
                request,
            )
            return
        first = head[0]
        if first.phase == "gap":
            data = first.data
            problems = []
            if data.get("missed_from") != 1:
                problems.append(f"missed_from {data.get('missed_from')!r}, expected 1")
            missed_to = data.get("missed_to")
            if not isinstance(missed_to, int) or isinstance(missed_to, bool):
                problems.append(f"missed_to {missed_to!r} is not an integer")
            elif len(head) > 1 and seq_of(head[1]) != missed_to + 1:
                problems.append(
                    f"the gap ends at {missed_to} but the next event is {seq_of(head[1])}"
                )
            report.verdict(
                "lifecycle.gap",
                problems,
                f"a gap event for seq 1..{missed_to}, then the events after it",
                request,
            )
            return
        seq = seq_of(first)
        if seq != 1:
            report.failed(
                "lifecycle.gap",
                f"the replay began at seq {seq} with no gap event before it: loss is silent",
                request,
            )
            return
        if made >= run.gap_budget:
            report.not_checked(
                "lifecycle.gap",
                f"the server still keeps every event it numbered after {made} more: it keeps "
                f"more than the check makes (limit {run.gap_budget}), so no range was dropped",
                request,
            )
            return
        batch = min(GAP_BATCH, run.gap_budget - made)
        await make_control_events(run, batch)
        made += batch
