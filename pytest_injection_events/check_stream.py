"""The stream's format, content and filters, delivery from every shard, and one-shot.

See docs/conformance.md for what each finding means.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from .check_rest import is_int, json_200
from .check_run import CheckRun, Hit
from .check_transport import Received, StreamReader, StreamRefused
from .protocol import BOOT_HEADER, LAST_SEQ_HEADER, NODE_HEADER

#: The keys of an event and their types, as the check states the protocol (not the server's).
ENTER_KEYS: dict[str, Any] = {
    "injection": str,
    "type": str,
    "phase": str,
    "shard": int,
    "node": str,
    "seq": int,
    "timestamp": (int, float),
    "enter_count": int,
    "one_shot": bool,
    "parameters": dict,
}
DEFAULT_PHASES = frozenset({"enter", "gap"})
CONTROL_PHASES = frozenset({"enable", "disable", "message"})
HEARTBEAT = "0.2"


def seq_of(received: Received) -> int | None:
    """The event's number: its `id:` if numeric, else its `seq` key."""
    ident = received.message.id
    if ident is not None and ident.isdigit():
        return int(ident)
    return received.seq if is_int(received.seq) else None


def framing_problems(reader: StreamReader) -> list[str]:
    """`id: <seq>`, one `data:` line of a JSON object, no `event:` field."""
    problems = []
    for received in reader.messages:
        message, data = received.message, received.data
        shown = message.data[:60]
        if message.event != "message":
            problems.append(f"an `event: {message.event}` field (EventSource.onmessage misses it)")
        if "\n" in message.data:
            problems.append(f"data over several `data:` lines: {shown!r}")
        if not isinstance(data, dict):
            problems.append(f"data is not a JSON object: {shown!r}")
            continue
        if message.id is None:
            problems.append(f"an event without an `id:` line: {shown!r}")
        elif data.get("phase") != "gap" and message.id != str(data.get("seq")):
            problems.append(f"`id: {message.id}` but seq {data.get('seq')!r}")
    return problems


def seq_problems(reader: StreamReader, *, contiguous: bool, first: int | None = None) -> list[str]:
    """Seqs strictly increasing; with `contiguous`, no holes (an unfiltered stream)."""
    problems = []
    previous = None if first is None else first - 1
    for received in reader.messages:
        if received.phase == "gap":
            missed_to = received.data.get("missed_to")
            previous = missed_to if is_int(missed_to) else previous
            continue
        seq = seq_of(received)
        if seq is None:
            continue  # framing_problems says so
        if previous is not None and seq <= previous:
            problems.append(f"seq {seq} after {previous}: not strictly increasing")
        elif previous is not None and contiguous and seq != previous + 1:
            problems.append(f"seq jumps from {previous} to {seq}: {seq - previous - 1} missing")
        previous = seq
    return problems


def event_problems(received: Received) -> list[str]:
    """§4's keys and types: every key on an enter event; shard null on a control event."""
    data = received.data
    if not isinstance(data, dict):
        return []  # framing_problems says so
    phase = data.get("phase")
    if phase == "gap":
        return [
            f"gap without integer {key}: {data!r}"[:160]
            for key in ("missed_from", "missed_to")
            if not is_int(data.get(key))
        ]
    problems = []
    for key, kind in ENTER_KEYS.items():
        value = data.get(key)
        if phase in CONTROL_PHASES and key in ("type", "shard", "enter_count"):
            if key == "shard" and value is not None:
                problems.append(f"control event {phase!r} with shard {value!r}, not null")
            continue
        if key == "parameters" and value is None and data.get("parameters_truncated") is True:
            continue
        if key not in data:
            problems.append(f"{phase} event without key {key!r} (seq {data.get('seq')!r})")
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            problems.append(f"{phase} event: {key} is {value!r}, not {_type_name(kind)}")
    return problems


def default_problems(reader: StreamReader) -> list[str]:
    """The proposal's stream: only `enter` (and `gap`), `injection`/`type` str, `shard` int."""
    problems = []
    for received in reader.messages:
        data = received.data
        if not isinstance(data, dict):
            continue
        phase = data.get("phase")
        if phase not in DEFAULT_PHASES:
            problems.append(f"a {phase!r} event (id {received.message.id}) in the default stream")
            continue
        if phase == "enter":
            for key, kind in (("injection", str), ("type", str), ("shard", int)):
                value = data.get(key)
                if not isinstance(value, kind) or isinstance(value, bool):
                    problems.append(
                        f"enter event with {key} {value!r}: the proposal's is a {kind.__name__}"
                    )
    return problems


def _type_name(kind: Any) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


async def open_or_fail(
    run: CheckRun, check: str, params: Sequence[tuple[str, str]]
) -> StreamReader | None:
    try:
        return await run.open_stream(params)
    except StreamRefused as exc:
        run.report.failed(
            check, f"the stream refused: answered {exc.answer.status}", exc.answer.shown()
        )
    except ConnectionError as exc:
        run.report.failed(check, str(exc))
    return None


def _has(reader: StreamReader, injection: str, phase: str) -> bool:
    return bool(reader.events(injection, phase))


async def check_stream(run: CheckRun) -> bool:
    """Format, content, filters, heartbeat, `/enters` and shards; False if no stream."""
    assert run.trigger is not None
    report, point, scratch = run.report, run.trigger.point, run.scratch
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
    missing = [h for h in (BOOT_HEADER, NODE_HEADER, LAST_SEQ_HEADER) if h.lower() not in headers]
    last_seq = headers.get(LAST_SEQ_HEADER.lower(), "")
    if not missing and not last_seq.isdigit():
        missing.append(f"{LAST_SEQ_HEADER} {last_seq!r} is not an integer")
    report.verdict(
        "stream.headers",
        [f"no {h} header" if h.startswith("X-") else h for h in missing],
        "X-Injection-Boot, -Node and -Last-Seq",
        default.request,
    )
    every = await open_or_fail(run, "stream.phase_all", [("phase", "all")])
    by_name = await open_or_fail(run, "stream.filter_injection", [("injection", point)])
    scratch_all = await open_or_fail(
        run, "stream.filter_injection_phase_all", [("injection", scratch), ("phase", "all")]
    )
    disables = await open_or_fail(run, "stream.filter_phase", [("phase", "disable")])
    first_seq = int(last_seq) + 1 if last_seq.isdigit() else None

    try:
        await run.enable(scratch)
        await run.disable(scratch)
        answer = await run.enable_point()
    except ConnectionError as exc:
        report.failed("stream.enable_point", str(exc))
        return False
    if answer.status != 200:
        report.failed("stream.enable_point", "could not enable the point", answer.shown())
        return False
    hits = await _hit_every_shard(run, default)
    try:
        enters = await run.request("GET", run.path("injection", point, "enters"))
    except ConnectionError as exc:
        enters = None
        report.failed("rest.enters_counted", str(exc))
    try:
        await run.disable(point)
    except ConnectionError as exc:
        report.failed("stream.disable_point", str(exc))

    seen_seqs = [seq_of(r) for r in default.events(point, "enter")]
    wait = run.timeout
    await asyncio.gather(
        *(
            reader.wait(lambda r=reader: _has(r, point, "disable"), wait)
            for reader in (every, disables)
            if reader is not None
        ),
        *(
            [
                by_name.wait(
                    lambda: [seq_of(r) for r in by_name.events(point, "enter")] >= seen_seqs, wait
                )
            ]
            if by_name is not None
            else []
        ),
        *(
            [scratch_all.wait(lambda: _has(scratch_all, scratch, "disable"), wait)]
            if scratch_all
            else []
        ),
        default.wait(lambda: default.comments > 0, max(1.0, wait / 2)),
    )

    readers = [r for r in (default, every, by_name, scratch_all, disables) if r is not None]
    framing = [f"{p} (on {r.request})" for r in readers for p in framing_problems(r)]
    report.verdict(
        "stream.framing",
        framing,
        "`id: <seq>` + one `data:` JSON line, no `event:`",
        default.request,
    )
    head = default.head.lstrip(b"\r\n")
    report.verdict(
        "stream.retry",
        []
        if head.startswith(b"retry:")
        else [f"the stream begins {default.head[:40]!r}, not `retry:`"],
        f"`retry: {default.decoder.retry}` first",
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
        missing = {"enable", "enter", "disable"} - {r.phase for r in every.events(point)}
        report.verdict(
            "stream.phase_all",
            [f"no {sorted(missing)} event of the point"] if missing else [],
            "enable, enter and disable of the point",
            every.request,
        )
    if by_name is not None:
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
        phases = [r.phase for r in scratch_all.messages]
        problems = [] if names == {scratch} else [f"events of {sorted(map(str, names))}"]
        if phases[:2] != ["enable", "disable"]:
            problems.append(f"phases {phases[:4]}, expected enable then disable")
        report.verdict(
            "stream.filter_injection_phase_all",
            problems,
            "with phase=all: that injection's enable and disable",
            scratch_all.request,
        )
    if disables is not None:
        phases = {r.phase for r in disables.messages}
        problems = (
            []
            if phases == {"disable"}
            else [f"phases {sorted(map(str, phases))}, expected only disable"]
        )
        if not _has(disables, point, "disable"):
            problems.append("the point's disable did not come")
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
    _check_enters(run, hits, enters, default)
    _check_shards(run, hits, default)
    return True


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
