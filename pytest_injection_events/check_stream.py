"""The stream's format, content and filters, heartbeat, and delivery from every shard.

See docs/conformance.md for what each finding means.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from .check_events import (
    default_problems,
    event_problems,
    framing_problems,
    seq_of,
    seq_problems,
)
from .check_report import CheckError
from .check_rest import json_200
from .check_run import CheckRun, Hit, record_failure
from .check_transport import StreamReader, StreamRefused
from .protocol import BOOT_HEADER, LAST_SEQ_HEADER, NODE_HEADER


async def open_or_fail(
    run: CheckRun, check: str, params: Sequence[tuple[str, str]]
) -> StreamReader | None:
    try:
        return await run.open_stream(params)
    except (StreamRefused, ConnectionError) as exc:
        record_failure(run.report, check, exc)
    return None


HEARTBEAT = "0.2"


def _has(reader: StreamReader, injection: str, phase: str) -> Callable[[], bool]:
    """A condition: `reader` got an event of `injection` in `phase`."""
    return lambda: bool(reader.events(injection, phase))


async def check_stream(run: CheckRun) -> bool:
    """Format, content, filters, heartbeat, `/enters` and shards; False if the stages
    after it cannot run (no stream, or hits that bring no event).

    Without a trigger it still checks what control events show (enable and disable
    of a name of its own): framing, numbering, keys, filters and the default stream."""
    report, scratch = run.report, run.scratch
    point = run.trigger.point if run.trigger is not None else None
    last = point or scratch  # the name whose disable is the last event the check makes
    default = await open_or_fail(run, "stream.open", [("heartbeat", HEARTBEAT)])
    if default is None:
        return False
    report.passed("stream.open", "200", default.request)
    kind = default.content_type.split(";")[0].strip()
    report.verdict(
        "stream.content_type",
        [] if kind == "text/event-stream" else [f"Content-Type {default.content_type!r}"],
        "text/event-stream",
        default.request,
    )
    headers = {k.lower(): v for k, v in default.response_headers.items()}
    missing = [
        f"no {h} header"
        for h in (BOOT_HEADER, NODE_HEADER, LAST_SEQ_HEADER)
        if h.lower() not in headers
    ]
    last_seq = headers.get(LAST_SEQ_HEADER.lower(), "")
    if not missing and not last_seq.isdigit():
        missing.append(f"{LAST_SEQ_HEADER} {last_seq!r} is not an integer")
    report.verdict(
        "stream.headers",
        missing,
        "X-Injection-Boot, -Node and -Last-Seq",
        default.request,
    )
    every = await open_or_fail(run, "stream.phase_all", [("phase", "all")])
    by_name = (
        await open_or_fail(run, "stream.filter_injection", [("injection", point)])
        if point is not None
        else None
    )
    scratch_all = await open_or_fail(
        run, "stream.filter_injection_phase_all", [("injection", scratch), ("phase", "all")]
    )
    disables = await open_or_fail(run, "stream.filter_phase", [("phase", "disable")])
    first_seq = int(last_seq) + 1 if last_seq.isdigit() else None

    try:
        await run.enable(scratch)
        await run.disable(scratch)
    except ConnectionError as exc:
        record_failure(report, "stream.control_events", exc)
        return False
    hits: list[tuple[int | None, Hit]] = []
    enters = None
    if point is not None:
        try:
            answer = await run.enable_point()
        except ConnectionError as exc:
            record_failure(report, "stream.enable_point", exc)
            return False
        if answer.status != 200:
            report.failed("stream.enable_point", "could not enable the point", answer.shown())
            return False
        hits = await _hit_every_shard(run, default)
        try:
            enters = await run.request("GET", run.path("injection", point, "enters"))
        except ConnectionError as exc:
            record_failure(report, "rest.enters_counted", exc)
        try:
            await run.disable(point)
        except ConnectionError as exc:
            record_failure(report, "stream.disable_point", exc)
        if not any(hit.event for _, hit in hits) and enters is not None and enters.json == 0:
            raise CheckError(
                f"the trigger ran {len(hits)} time(s) but the server never passed {point!r} "
                f"({enters.shown()}): check --point and --trigger"
            )

    seen_seqs = [seq_of(r) for r in default.events(point, "enter")] if point else []
    wait = run.timeout
    waits = [default.wait(lambda: default.comments > 0, max(1.0, wait / 2))]
    for reader in (every, disables):
        if reader is not None:
            waits.append(reader.wait(_has(reader, last, "disable"), wait))
    if scratch_all is not None:
        waits.append(scratch_all.wait(_has(scratch_all, scratch, "disable"), wait))
    if by_name is not None:
        named = by_name
        waits.append(
            named.wait(lambda: set(seen_seqs) <= set(map(seq_of, named.events(last))), wait)
        )
    await asyncio.gather(*waits)
    # A control event wrongly in the default stream went out with the one `every` got.
    await default.wait(_has(default, scratch, "disable"), 0.05)

    readers = [r for r in (default, every, by_name, scratch_all, disables) if r is not None]
    framing = [f"{p} (on {r.request})" for r in readers for p in framing_problems(r)]
    report.verdict(
        "stream.framing",
        framing,
        "`id: <seq>` + one `data:` JSON line, no `event:`",
        default.request,
    )
    head = default.head.lstrip(b"\r\n")
    first_line = head.splitlines()[0].decode(errors="replace") if head else ""
    report.verdict(
        "stream.retry",
        []
        if head.startswith(b"retry:")
        else [f"the stream begins {default.head[:40]!r}, not `retry:`"],
        f"`{first_line}` first",
        default.request,
    )
    report.verdict(
        "stream.default_content",
        default_problems(default),
        "only enter events, injection/type str, shard int",
        default.request,
    )
    keys = [p for r in readers for received in r.messages for p in event_problems(received)]
    report.verdict(
        "stream.event_keys",
        sorted(set(keys)),
        "every key of an event, typed",
        (every or default).request,
    )
    seq = (
        [f"{p} (on {every.request})" for p in seq_problems(every, contiguous=True, first=first_seq)]
        if every
        else []
    )
    for reader in (default, by_name, disables, scratch_all):
        if reader is not None:
            seq += [f"{p} (on {reader.request})" for p in seq_problems(reader, contiguous=False)]
    report.verdict(
        "stream.seq",
        seq,
        "strictly increasing, no hole (phase=all from the header's last seq)",
        (every or default).request,
    )
    if every is not None:
        wanted = ["enable", "enter", "disable"] if point else ["enable", "disable"]
        absent = set(wanted) - {r.phase for r in every.events(last)}
        report.verdict(
            "stream.phase_all",
            [f"no {sorted(absent)} event of {last!r}"] if absent else [],
            f"{', '.join(wanted)} of {last!r}",
            every.request,
        )
    if point is None:
        report.not_checked("stream.filter_injection", "needs hits (--point, --trigger)")
    elif by_name is not None:
        got = [seq_of(r) for r in by_name.events(point, "enter")]
        problems = [] if got == seen_seqs else [f"got seqs {got[:10]}, expected {seen_seqs[:10]}"]
        problems += [
            f"an event of {r.injection!r}"
            for r in by_name.messages
            if r.injection != point and r.phase != "gap"
        ][:1]
        report.verdict(
            "stream.filter_injection", problems, "only that injection's events", by_name.request
        )
    if scratch_all is not None:
        names = {r.injection for r in scratch_all.messages if r.phase != "gap"}
        order = [r.phase for r in scratch_all.messages]
        problems = [] if names == {scratch} else [f"events of {sorted(map(str, names))}"]
        if order[:2] != ["enable", "disable"]:
            problems.append(f"phases {order[:4]}, expected enable then disable")
        report.verdict(
            "stream.filter_injection_phase_all",
            problems,
            "with phase=all: that injection's enable and disable",
            scratch_all.request,
        )
    if disables is not None:
        kinds = {r.phase for r in disables.messages}
        problems = (
            []
            if kinds == {"disable"}
            else [f"phases {sorted(map(str, kinds))}, expected only disable"]
        )
        if not _has(disables, last, "disable")():
            problems.append(f"the disable of {last!r} did not come")
        report.verdict(
            "stream.filter_phase", problems, "only the phase asked for", disables.request
        )
    report.verdict(
        "stream.heartbeat",
        []
        if default.comments
        else [f"no `:` comment within {max(1.0, wait / 2):g}s with heartbeat={HEARTBEAT}"],
        f"{default.comments} comment(s) with heartbeat={HEARTBEAT}",
        default.request,
    )
    if point is None:
        return True
    _check_enters(run, hits, enters, default)
    _check_shards(run, hits, default)
    # With no enter event at all, every later stage would only wait out its timeouts.
    return any(hit.event for _, hit in hits)


async def _hit_every_shard(run: CheckRun, watch: StreamReader) -> list[tuple[int | None, Hit]]:
    """A hit aimed at each shard, or (a trigger that cannot aim) runs until all were seen."""
    assert run.trigger is not None
    hits: list[tuple[int | None, Hit]] = []
    if run.trigger.chooses_shard:
        for shard in range(run.shards):
            hits.append((shard, await run.hit(watch, shard)))
        return hits
    seen: set[Any] = set()
    for _ in range(max(2, 3 * run.shards)):
        hit = await run.hit(watch)
        hits.append((None, hit))
        if hit.event is not None:
            seen.add(hit.event.data.get("shard") if isinstance(hit.event.data, dict) else None)
        if len(hits) >= 2 and seen >= set(range(run.shards)):
            break
    return hits


def _check_enters(
    run: CheckRun, hits: list[tuple[int | None, Hit]], enters: Any, watch: StreamReader
) -> None:
    if enters is None:
        return
    assert run.trigger is not None
    events = len(watch.events(run.trigger.point, "enter"))
    expected = sum(1 for _, h in hits if h.error is None) if run.trigger.chooses_shard else events
    problems = json_200(enters)
    if not problems and enters.json != expected:
        problems.append(f"counts {enters.json!r} after {expected} hit(s) the stream showed")
    report = run.report
    report.verdict(
        "rest.enters_counted", problems, f"{expected} after {expected} hit(s)", enters.shown()
    )


def _check_shards(run: CheckRun, hits: list[tuple[int | None, Hit]], watch: StreamReader) -> None:
    report = run.report
    if run.trigger is not None and run.trigger.chooses_shard:
        problems = []
        for shard, hit in hits:
            if hit.event is None:
                problems.append(
                    f"no event within {run.timeout:g}s for a hit on shard {shard} ({hit.request})"
                )
            elif hit.event.data.get("shard") != shard:
                problems.append(
                    f"a hit on shard {shard} ({hit.request}) came as shard "
                    f"{hit.event.data.get('shard')!r}"
                )
        report.verdict(
            "shards.delivery",
            problems,
            f"an event from each of the {run.shards} shard(s)",
            watch.request,
        )
        return
    missed = [hit for _, hit in hits if hit.event is None]
    if missed:
        report.failed(
            "stream.enter_events",
            f"no event within {run.timeout:g}s for {missed[0].request}",
            watch.request,
        )
    seen = {
        h.event.data.get("shard")
        for _, h in hits
        if h.event is not None and isinstance(h.event.data, dict)
    }
    if seen >= set(range(run.shards)):
        report.passed(
            "shards.delivery", f"events from each of the {run.shards} shard(s)", watch.request
        )
    else:
        report.not_checked(
            "shards.delivery",
            f"{len(hits)} trigger runs reached shard(s) {sorted(map(str, seen))} of {run.shards}; "
            "a trigger cannot aim at a shard",
            watch.request,
        )
