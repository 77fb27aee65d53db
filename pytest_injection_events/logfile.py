"""A drop-in for ScyllaDB's test log object, fed by the event stream (docs/migration.md).

`InjectionLogFile(stream, node, log=None)` answers `mark()`, `wait_for()` and
`grep()` for the injection framework's own lines from the node's events, at push
speed, by rendering each event as the line ScyllaDB writes for it. Every other
pattern, and every other method or attribute (`grep_for_errors`,
`find_backtraces`, `.file`, ...), goes to the real log object when one is given.
Like ScyllaDB's log object (wrapped with `universalasync`), its methods are
awaitable on a running loop and run to completion when called from sync code.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import InjectionEventsError
from .event_schema import InjectionEvent
from .protocol import (
    BREAKPOINT_SUFFIXES,
    DISABLING,
    DISABLING_ALL,
    ENABLING,
    MESSAGE_RECEIVED,
    ONE_SHOT_WORD,
    TRIGGERING,
    TRIGGERING_EXCEPTION,
    TRIGGERING_HANDLER,
    TRIGGERING_SLEEP,
    WAITING_FOR_MESSAGE,
    format_log_line,
    parse_framework_message,
)

__all__ = [
    "FrameworkPattern",
    "InjectionLogFile",
    "LogMark",
    "NotAFrameworkLine",
    "framework_pattern",
    "log_line",
    "log_message",
    "regex_literal",
]

T = TypeVar("T")
_PHASE_OF_SUFFIX = dict(zip(BREAKPOINT_SUFFIXES, ("enter", "resume"), strict=True))
_META = set(".^$*+?{}[]|()")


class NotAFrameworkLine(InjectionEventsError, ValueError):
    """A pattern the events cannot answer (not an injection framework line) and no real log."""


# -- which patterns are the framework's lines ---------------------------------------


def regex_literal(pattern: str) -> tuple[str, bool] | None:
    """The exact text a regex matches, and whether it ends with `$`; None if it uses
    regex features (classes, repetition, alternation, groups, anchors elsewhere)."""
    text: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 == len(pattern) or pattern[i + 1].isalnum():
                return None  # \d, \b, \1, \n ...: not a plain character
            text.append(pattern[i + 1])
            i += 2
            continue
        if char == "$" and i == len(pattern) - 1:
            return "".join(text), True
        if char in _META:
            return None
        text.append(char)
        i += 1
    return "".join(text), False


@dataclass(frozen=True)
class FrameworkPattern:
    """A log pattern that matches one of the injection framework's own lines."""

    name: str
    phase: str
    #: the whole framework message, not a shorter prefix that other code's line could share
    full: bool


def framework_pattern(pattern: str) -> FrameworkPattern | None:
    """What framework line a log-wait pattern waits for, if it waits for one.

    `NAME: ` followed by a prefix of `waiting for message` or `message received`
    (full when it is all of it), or a whole DEBUG line of the framework (not the
    parameter line, whose key and value an event does not carry). Names hold any
    character but a quote.
    """
    literal = regex_literal(pattern)
    if literal is None:
        return None
    text, anchored = literal
    start = 0
    while (cut := text.find(": ", start)) > 0:
        name, rest = text[:cut], text[cut + 2 :]
        start = cut + 1
        if '"' in name or "'" in name:
            continue
        for suffix, phase in _PHASE_OF_SUFFIX.items():
            if rest and suffix.startswith(rest) and (rest == suffix or not anchored):
                return FrameworkPattern(name, phase, rest == suffix)
    line = parse_framework_message(text)
    if line is None or line.injection is None or line.kind == "parameter":
        return None
    return FrameworkPattern(line.injection, line.phase, True)


# -- events as lines -----------------------------------------------------------------


def log_message(event: InjectionEvent) -> tuple[str, str] | None:
    """(level, message) that ScyllaDB's injection framework logs for this event, if any."""
    name = event.injection
    if event.phase == "disable":
        return ("DEBUG", DISABLING.format(name=name) if name else DISABLING_ALL)
    if name is None:
        return None
    if event.phase == "enable":
        return (
            "DEBUG",
            ENABLING.format(one_shot=ONE_SHOT_WORD if event.one_shot else "", name=name),
        )
    if event.type == "wait_for_message":
        texts = {"enter": WAITING_FOR_MESSAGE, "resume": MESSAGE_RECEIVED}
        return ("INFO", texts[event.phase].format(name=name)) if event.phase in texts else None
    if event.phase != "enter" or event.type == "parameter":
        return None
    if event.type == "sleep":
        ms = (event.parameters or {}).get("ms")
        text = TRIGGERING_SLEEP.format(name=name, ms=ms)
        return ("DEBUG", text if ms is not None else text.split(" (", 1)[0])
    formats = {"exception": TRIGGERING_EXCEPTION, "handler": TRIGGERING_HANDLER}
    return ("DEBUG", formats.get(event.type or "", TRIGGERING).format(name=name))


def log_line(event: InjectionEvent) -> str | None:
    """The whole line a ScyllaDB node writes for this event (with its newline), if any."""
    message = log_message(event)
    if message is None:
        return None
    shard = event.shard if isinstance(event.shard, int) else 0
    return format_log_line(message[0], event.timestamp, shard, message[1])


# -- marks ---------------------------------------------------------------------------


class LogMark(int):
    """A mark of both logs: the real log's byte offset (its int value, so code that hands
    it to the real log keeps working), the stream's mark on the node, and the last
    event a `wait_for` matched (events up to it are not seen again from this mark)."""

    stream: Any
    through: tuple[int, float] | None

    def __new__(
        cls, offset: int, stream: Any = None, through: tuple[int, float] | None = None
    ) -> LogMark:
        mark = super().__new__(cls, offset)
        mark.stream = stream
        mark.through = through
        return mark

    def __repr__(self) -> str:
        return f"LogMark({int(self)}, stream={self.stream!r}, through={self.through!r})"

    def excludes(self, event: InjectionEvent) -> bool:
        if self.through is None:
            return False
        seq, timestamp = self.through
        return event.seq is not None and event.seq <= seq and event.timestamp <= timestamp


def _as_mark(mark: Any) -> LogMark | None:
    if mark is None or isinstance(mark, LogMark):
        return mark
    if isinstance(mark, int) and not isinstance(mark, bool):
        return LogMark(mark)  # a byte offset taken from the real log
    raise TypeError(f"from_mark must be a mark from mark() or a byte offset, got {mark!r}")


def _split_positional(
    args: tuple[Any, ...], from_mark: Any, timeout: float
) -> tuple[tuple[str | re.Pattern[str], ...], Any, float]:
    """ScyllaDB's older `wait_for(pattern, from_mark, timeout)` passes both positionally."""
    count = 0
    while count < len(args) and isinstance(args[count], (str, re.Pattern)):
        count += 1
    rest = args[count:]
    if not count or len(rest) > 2:
        raise TypeError(
            "wait_for(*patterns, from_mark=None, timeout=600): give at least one pattern "
            f"(str or re.Pattern), then at most a mark and a timeout; got {args!r}"
        )
    if rest:
        from_mark = rest[0]
    if len(rest) == 2:
        timeout = rest[1]
    return args[:count], from_mark, timeout


def _universal(call: Coroutine[Any, Any, T]) -> Any:
    """Awaitable on a running loop; run to completion from sync code (as universalasync)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(call)
    return call


async def _resolve(value: Any) -> Any:
    """A real log's method may be async, or universal (a result when called in sync code)."""
    if isinstance(value, Awaitable):
        return await value
    return value


class InjectionLogFile:
    """`mark()`, `wait_for()` and `grep()` of ScyllaDB's log object for one node, answered
    from the stream for the injection framework's lines; the rest goes to `log`."""

    def __init__(self, stream: Any, node: Any = None, log: Any = None) -> None:
        self.stream = stream
        self._node = node
        self._log = log
        self._attached = False

    @property
    def node(self) -> Any:
        """The server this log is of; if not given, the stream's one node."""
        if self._node is not None:
            return self._node
        nodes = self.stream.nodes
        if len(nodes) != 1:
            raise ValueError(
                f"InjectionLogFile(stream) needs the node when the stream follows {len(nodes)} "
                "nodes: InjectionLogFile(stream, server, log)"
            )
        return nodes[0].url

    def __getattr__(self, name: str) -> Any:
        log = self.__dict__.get("_log")
        if log is None or name.startswith("__"):
            raise AttributeError(
                f"{type(self).__name__} has no attribute {name!r} without the real log "
                "object: pass log=... (e.g. await manager.server_open_log(server.server_id))"
            )
        attribute = getattr(log, name)
        if inspect.iscoroutinefunction(attribute):  # an async-only log: usable from sync code too

            @functools.wraps(attribute)
            def universal(*args: Any, **kwargs: Any) -> Any:
                return _universal(attribute(*args, **kwargs))

            return universal
        return attribute

    def __repr__(self) -> str:
        return f"InjectionLogFile(node={self.node!r}, log={self._log!r})"

    # -- the three methods the stream answers ----------------------------------------

    def mark(self) -> Any:
        """A mark of both the stream (on this node) and the real log, taken now."""
        return _universal(self._mark())

    def wait_for(
        self, *patterns: str | re.Pattern[str], from_mark: Any = None, timeout: float = 600
    ) -> Any:
        """Wait until every pattern matched a line after `from_mark`; return
        `(new_mark, [(line, match), ...])` as ScyllaDB's `wait_for` does."""
        patterns, from_mark, timeout = _split_positional(patterns, from_mark, timeout)
        return _universal(self._wait_for(patterns, _as_mark(from_mark), timeout))

    def grep(
        self,
        expr: str | re.Pattern[str],
        filter_expr: str | re.Pattern[str] | None = None,
        from_mark: Any = None,
        max_count: int = 0,
    ) -> Any:
        """Lines so far that match `expr` (and not `filter_expr`), without waiting."""
        return _universal(self._grep(expr, filter_expr, _as_mark(from_mark), max_count))

    # -- implementation ----------------------------------------------------------------

    async def _attach(self) -> None:
        if not self._attached:
            await self.stream.add_node(self.node, log=self._log)
            self._attached = True

    async def _mark(self) -> LogMark:
        await self._attach()
        stream_mark = await self.stream.mark(self.node)
        offset = await _resolve(self._log.mark()) if self._log is not None else 0
        return LogMark(int(offset), stream_mark)

    def _route(self, pattern: str | re.Pattern[str]) -> tuple[FrameworkPattern | None, bool]:
        """(framework line it waits for, whether the real log must be read too)."""
        text = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
        found = framework_pattern(text) if isinstance(text, str) else None
        if found is None:
            if self._log is None:
                raise NotAFrameworkLine(
                    f"{text!r} is not an injection framework line (NAME: waiting for message, "
                    "NAME: message received, or a DEBUG line of the framework), so the event "
                    "stream cannot see it; pass log=... (the real log object) to wait for it"
                )
            return None, True
        # `NAME: waiting` is also what a handler's own code may log: read both
        return found, self._log is not None and not found.full

    async def _wait_for(
        self,
        patterns: tuple[str | re.Pattern[str], ...],
        from_mark: LogMark | None,
        timeout: float,
    ) -> tuple[LogMark, list[tuple[str, re.Match[str]]]]:
        routes = [self._route(p) for p in patterns]  # bad patterns fail before any wait
        await self._attach()
        jobs = [
            asyncio.ensure_future(self._wait_one(p, found, both, from_mark, timeout))
            for p, (found, both) in zip(patterns, routes, strict=True)
        ]
        try:
            results = await _all_or_first_error(jobs)
        finally:
            for job in jobs:
                job.cancel()
        matches = [(line, match) for line, match, _, _ in results]
        events = [event for _, _, event, _ in results if event is not None]
        offsets = [offset for _, _, _, offset in results if offset is not None]
        if self._log is not None and len(offsets) < len(results):
            offsets.append(int(await _resolve(self._log.mark())))
        through = max(((e.seq, e.timestamp) for e in events if e.seq is not None), default=None)
        if from_mark is not None and from_mark.through is not None and through is not None:
            through = max(through, from_mark.through)
        elif through is None and from_mark is not None:
            through = from_mark.through
        stream_mark = from_mark.stream if from_mark is not None else None
        return LogMark(max(offsets, default=0), stream_mark, through), matches

    async def _wait_one(
        self,
        pattern: str | re.Pattern[str],
        found: FrameworkPattern | None,
        both: bool,
        from_mark: LogMark | None,
        timeout: float,
    ) -> tuple[str, re.Match[str], InjectionEvent | None, int | None]:
        jobs = []
        if found is not None:
            jobs.append(
                asyncio.ensure_future(self._from_events(pattern, found, from_mark, timeout))
            )
        if found is None or both:
            jobs.append(asyncio.ensure_future(self._from_log(pattern, from_mark, timeout)))
        try:
            return await _first_success(jobs)
        finally:
            for job in jobs:
                job.cancel()

    async def _from_events(
        self,
        pattern: str | re.Pattern[str],
        found: FrameworkPattern,
        from_mark: LogMark | None,
        timeout: float,
    ) -> tuple[str, re.Match[str], InjectionEvent | None, int | None]:
        regex = re.compile(pattern)

        def matches(event: InjectionEvent) -> bool:
            line = log_line(event)
            return (
                line is not None
                and not (from_mark is not None and from_mark.excludes(event))
                and regex.search(line) is not None
            )

        event = await self.stream.wait_for_injection(
            found.name,
            timeout,
            phase=found.phase,
            node=self.node,
            after=from_mark.stream if from_mark is not None else None,
            predicate=matches,
            consume=False,
        )
        line = log_line(event)
        assert line is not None
        match = regex.search(line)
        assert match is not None
        return line, match, event, None

    async def _from_log(
        self, pattern: str | re.Pattern[str], from_mark: LogMark | None, timeout: float
    ) -> tuple[str, re.Match[str], InjectionEvent | None, int | None]:
        offset = int(from_mark) if from_mark is not None else None
        position, found = await _resolve(
            self._log.wait_for(pattern, from_mark=offset, timeout=timeout)
        )
        line, match = found[0]
        return line, match, None, int(position)

    async def _grep(
        self,
        expr: str | re.Pattern[str],
        filter_expr: str | re.Pattern[str] | None,
        from_mark: LogMark | None,
        max_count: int,
    ) -> list[tuple[str, re.Match[str]]]:
        found, both = self._route(expr)
        if found is None or both:  # the real log holds every line it wrote: ask it
            offset = int(from_mark) if from_mark is not None else None
            kwargs: dict[str, Any] = {"filter_expr": filter_expr, "from_mark": offset}
            if max_count:
                kwargs["max_count"] = max_count
            return list(await _resolve(self._log.grep(expr, **kwargs)))
        await self._attach()
        regex = re.compile(expr)
        refuse = re.compile(filter_expr) if filter_expr else None
        node_id = self.stream.node_id(self.node)
        lines: list[tuple[str, re.Match[str]]] = []
        for event in list(self.stream.events):
            if event.node != node_id or (from_mark is not None and from_mark.excludes(event)):
                continue
            line = log_line(event)
            if line is None or (refuse is not None and refuse.search(line)):
                continue
            if match := regex.search(line):
                lines.append((line, match))
                if len(lines) == max_count:
                    break
        return lines


async def _first_success(jobs: Sequence[asyncio.Future[T]]) -> T:
    """The first job to succeed; if all fail, the first one's error."""
    pending = set(jobs)
    first_error: BaseException | None = None
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for job in jobs:
            if job not in done:
                continue
            if job.exception() is None:
                return job.result()
            first_error = first_error or job.exception()
    assert first_error is not None
    raise first_error


async def _all_or_first_error(jobs: Sequence[asyncio.Future[T]]) -> list[T]:
    """Every job's result, in order; the first error as soon as one fails."""
    done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_EXCEPTION)
    for job in jobs:
        if job in done and job.exception() is not None:
            raise job.exception()  # type: ignore[misc]
    return [job.result() for job in jobs]
