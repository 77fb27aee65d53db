"""What a failed wait says: what it waited for, what arrived, what the nodes have enabled,
and did-you-mean hints from their catalogs. See docs/design.md."""

from __future__ import annotations

import asyncio
import difflib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from .client import InjectionApi
from .errors import InjectionTimeout
from .event_schema import ENTER, GAP, InjectionEvent
from .log_source import LogSource
from .source import NodeSource

#: The time the hints of a timeout may take, all nodes asked at once.
HINT_TIME = 0.5

event_logger = logging.getLogger("pytest_injection_events.events")
_log = logging.getLogger("pytest_injection_events.client")


def format_event(event: InjectionEvent) -> str:
    """One line a person reads: time, node, shard, injection, phase (and seq)."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.timestamp))
    micros = int(event.timestamp % 1 * 1_000_000)
    shard = "-" if event.shard is None else event.shard
    if event.phase == GAP:
        return (
            f"{stamp}.{micros:06d} node {event.node} gap: seq {event.missed_from} to "
            f"{event.missed_to} lost ({event.reason})"
        )
    return (
        f"{stamp}.{micros:06d} node {event.node} shard {shard} {event.injection} "
        f"{event.phase} (seq {event.seq})"
    )


def log_events(events: Sequence[InjectionEvent]) -> None:
    """Each event as a line of the events logger, asked once per batch whether it is on."""
    if event_logger.isEnabledFor(logging.INFO):
        for event in events:
            event_logger.info("%s", format_event(event))


def describe(event: InjectionEvent) -> str:
    if event.phase == GAP:
        return f"gap: seq {event.missed_from} to {event.missed_to} lost on {event.node}"
    seq = "" if event.seq is None else f"seq {event.seq} "
    shard = "" if event.shard is None else f" shard {event.shard}"
    return f"{seq}{event.injection} {event.phase}{shard} on {event.node}"


def wanted(
    name: str, phase: str, count: int, shard: int | None, predicate: object, after: object
) -> str:
    """A wait in words: `injection 'x' (phase 'enter', count 2, shard 1, with a predicate)`."""
    details = [f"phase {phase!r}"]
    if count > 1:
        details.append(f"count {count}")
    if shard is not None:
        details.append(f"shard {shard}")
    if predicate is not None:
        details.append("with a predicate")
    if after is not None:
        details.append("after a mark")
    return f"injection {name!r} ({', '.join(details)})"


@dataclass
class NodeState:
    """What the message says of one node."""

    url: str
    node_id: str
    source: str  # "event stream", "log PATH", "/enters polling"
    down_since: float | None


@dataclass
class WaitReport:
    """A failed wait and what the stream knew when it failed."""

    name: str
    phase: str
    count: int
    timeout: float
    wanted: str
    where: str
    events: Sequence[InjectionEvent]
    matched: int  # how many of the events the wait's filters accept
    got: int
    filters: Sequence[str]
    nodes: Sequence[NodeState]
    gaps: Sequence[InjectionEvent]
    restarts: Sequence[tuple[str, float]]
    asked: str  # the stream's own filters, in words ("" if none)


async def timeout_error(
    report: WaitReport, session: aiohttp.ClientSession | None, token: str | None
) -> InjectionTimeout:
    """The InjectionTimeout of a failed wait; asking the nodes takes HINT_TIME at most."""
    name, phase = report.name, report.phase
    lines = [f"timed out after {report.timeout:g}s waiting for {report.wanted} on {report.where}"]
    hits = [e for e in report.events if e.injection == name and e.phase == phase]
    if hits:
        lines.append(f"  {name!r} {phase} arrived {len(hits)} time(s): {_why_not(hits, report)}")
    arrived = Counter(f"{e.injection} {e.phase}" for e in report.events if e.phase != GAP)
    if arrived:
        summary = ", ".join(f"{key} x{n}" for key, n in arrived.most_common(10))
        last = "; ".join(describe(e) for e in report.events[-3:])
        lines.append(f"  events that did arrive: {summary}")
        lines.append(f"  last: {last}")
    else:
        hint = (
            f"it asks the nodes only for {report.asked}"
            if report.asked
            else "not even an 'enable': is the stream on the node the test drives?"
        )
        lines.append(f"  no events arrived at all since the stream opened ({hint})")
    for node in report.nodes:
        if node.source != "event stream":
            lines.append(f"  {node.node_id} is read through {node.source}")
    for gap in report.gaps:
        lines.append(f"  events lost on {gap.node}: seq {gap.missed_from} to {gap.missed_to}")
    for node in report.nodes:
        if node.down_since is not None:
            lines.append(
                f"  the stream of {node.url} has been down for "
                f"{time.time() - node.down_since:.1f}s; reconnecting"
            )
    for node_id, _ in report.restarts:
        lines.append(
            f"  node {node_id} restarted while the stream was open: what was enabled on it "
            "before is gone"
        )
    known: set[str] = {e.injection for e in report.events if e.injection}
    real = {e.injection for e in report.events if e.phase == ENTER and e.injection}
    answers = await _ask_nodes(report.nodes, session, token)
    for node, (enabled, points) in zip(report.nodes, answers, strict=True):
        if enabled is not None:
            lines.append(f"  enabled on {node.node_id}: {', '.join(enabled) or 'none'}")
        known.update(points)
        real.update(points)
    if name not in real:  # a declared point is not a near miss of another one
        known.discard(name)
        suggestion = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        if suggestion:
            lines.append(f"  did you mean {suggestion[0]!r}?")
    return InjectionTimeout("\n".join(lines), injection=name, timeout=report.timeout)


def _why_not(hits: list[InjectionEvent], report: WaitReport) -> str:
    """Why the hits of the awaited name and phase did not make the wait succeed."""

    matched = report.matched
    consumed, refused = matched - report.got, len(hits) - matched
    parts = [f"{report.got} matched this wait (it needs {report.count})"] if report.got else []
    if consumed == 1:
        parts.append("1 was consumed by another wait")
    elif consumed > 1:
        parts.append(f"{consumed} were consumed by other waits")
    if refused:
        plural = "s" if len(report.filters) > 1 else ""
        parts.append(f"{refused} did not pass its {'/'.join(report.filters)} filter{plural}")
    return ", ".join(parts) or "none matched"


async def _ask_nodes(
    nodes: Sequence[NodeState], session: aiohttp.ClientSession | None, token: str | None
) -> list[tuple[list[str] | None, list[str]]]:
    """What each node has enabled and declares: all asked at once, HINT_TIME at most."""
    if session is None or session.closed:
        return [(None, []) for _ in nodes]
    tasks = [asyncio.ensure_future(_ask(node.url, session, token)) for node in nodes]
    if tasks:
        await asyncio.wait(tasks, timeout=HINT_TIME)
    answers: list[tuple[list[str] | None, list[str]]] = []
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is None:
            answers.append(task.result())
        else:
            task.cancel()
            answers.append((None, []))
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    return answers


async def _ask(
    url: str, session: aiohttp.ClientSession, token: str | None
) -> tuple[list[str] | None, list[str]]:
    api = InjectionApi(url, token, session=session, timeout=HINT_TIME)
    enabled: list[str] | None = None
    points: list[str] = []
    try:
        enabled = await api.get_enabled_injections()
        # Asked apart: ScyllaDB has no /points, and its 404 must not hide what is enabled.
        points = [p["name"] for p in await api.points()]
    except Exception as exc:
        _log.debug("could not ask %s for hints: %s", url, exc)
    return enabled, points


def unsupported(sources: Sequence[NodeSource], phase: str, shard: int | None) -> str:
    names = ", ".join(f"{s.node_id} ({s.describe()})" for s in sources)
    if shard is not None and any(s.gives(phase) for s in sources):
        return f"a shard filter needs events that carry shards; {names} cannot give them"
    fix = (
        "attach the node with its log (add_node(node, log=...)) or use a node with /events"
        if phase in LogSource.phases
        else "use a node with /events"
    )
    return f"phase {phase!r} cannot be seen on {names}: {fix}"


def asked(injections: Sequence[str], phases: Sequence[str]) -> str:
    asked = [f"injections {', '.join(injections)}"] if injections else []
    asked += [f"phases {', '.join(phases)}"] if phases else []
    return " and ".join(asked)
