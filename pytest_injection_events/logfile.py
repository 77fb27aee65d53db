"""A stand-in for ScyllaDB's test log object, backed by the event stream (SPEC §9).

Unconverted tests keep `mark = await log.mark()` and
`await log.wait_for("my_injection: waiting", from_mark=mark)`: the regexes are
matched against the log lines the events stand for, so they keep their
meaning, at push speed and independent of log levels and flushes.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

from .events import ENABLE, ENTER, RESUME, TIMEOUT, InjectionEvent
from .stream import InjectionEventStream

_TRIGGER = {
    "sleep": 'Triggering sleep injection "{name}"',
    "exception": 'Triggering exception injection "{name}"',
    "handler": 'Triggering injection "{name}" with injection handler',
}


def log_message(event: InjectionEvent) -> str | None:
    """What ScyllaDB's error-injection logger says for this event, if anything."""
    name = event.injection
    if name is None:
        return None
    if event.type == "wait_for_message":
        if event.phase == ENTER:
            return f"{name}: waiting for message"
        if event.phase == RESUME:
            return f"{name}: message received"
        if event.phase == TIMEOUT:
            return f"{name}: timed out waiting for message"
    if event.phase == ENTER:
        return _TRIGGER.get(event.type or "", 'Triggering injection "{name}"').format(name=name)
    if event.phase == ENABLE:
        return f'Enabling injection {"one-shot " if event.one_shot else ""}"{name}"'
    return None


def log_line(event: InjectionEvent) -> str | None:
    """The whole line, in the fake node's ScyllaDB-like format."""
    message = log_message(event)
    if message is None:
        return None
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.timestamp))
    millis = int(event.timestamp % 1 * 1000)
    shard = 0 if event.shard is None else event.shard
    return f"INFO  {stamp},{millis:03d} [shard {shard}] error_injection - {message}\n"


def _split_positional(
    args: tuple[Any, ...], from_mark: int | None, timeout: float
) -> tuple[tuple[str | re.Pattern[str], ...], int | None, float]:
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


class InjectionLogFile:
    """`mark()`, `wait_for()` and `grep()` of ScyllaDB's `ScyllaLogFile`, over a stream.

    A mark is a position in `stream.events`; `node` limits it to one node's events,
    as a log file is one node's.
    """

    def __init__(self, stream: InjectionEventStream, node: Any = None) -> None:
        self.stream = stream
        self._node = node

    def _lines(self, start: int = 0) -> Iterator[tuple[int, str]]:
        events = self.stream.events
        for index in range(max(0, start), len(events)):
            line = self._line(events[index])
            if line is not None:
                yield index, line

    def _line(self, event: InjectionEvent) -> str | None:
        if self._node is not None and event.node != self.stream.node_id(self._node):
            return None
        return log_line(event)

    async def mark(self) -> int:
        """The current position: `wait_for(..., from_mark=mark)` sees only what comes after."""
        return len(self.stream.events)

    async def wait_for(
        self,
        *exprs: str | re.Pattern[str],
        from_mark: int | None = None,
        timeout: float = 600,
    ) -> tuple[int, list[tuple[str, re.Match[str]]]]:
        """Wait until every pattern matched a line; return the position after the last
        line read and the (line, match) pairs, as ScyllaDB's `wait_for` does.

        ScyllaDB's older `wait_for(pattern, from_mark, timeout)` passes the mark and
        the timeout positionally: trailing non-pattern arguments are taken as those.
        """
        exprs, from_mark, timeout = _split_positional(exprs, from_mark, timeout)
        patterns = [re.compile(expr) for expr in exprs]
        matches: list[tuple[str, re.Match[str]]] = []
        position = from_mark or 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def scan(line: str) -> bool:
            for pattern in list(patterns):
                if match := pattern.search(line):
                    matches.append((line, match))
                    patterns.remove(pattern)
            return not patterns

        while patterns:

            def wanted(event: InjectionEvent) -> bool:
                line = self._line(event)
                return line is not None and any(p.search(line) for p in patterns)

            try:
                index = await self.stream.wait_for_event(
                    wanted, max(0.0, deadline - loop.time()), start=position
                )
            except asyncio.TimeoutError:
                unmatched = ", ".join(repr(p.pattern) for p in patterns)
                raise TimeoutError(
                    f"no event line matched {unmatched} within {timeout:g}s "
                    f"(from mark {from_mark}); lines seen: {self._recent(position)}"
                ) from None
            line = self._line(self.stream.events[index])
            assert line is not None
            scan(line)
            position = index + 1
        return position, matches

    def _recent(self, start: int) -> str:
        lines = [line.split(" - ", 1)[-1].strip() for _, line in self._lines(start)]
        return "; ".join(lines[-5:]) or "none"

    async def grep(
        self,
        expr: str | re.Pattern[str],
        filter_expr: str | re.Pattern[str] | None = None,
        from_mark: int | None = None,
        max_count: int = 0,
    ) -> list[tuple[str, re.Match[str]]]:
        """The lines so far that match `expr` (and not `filter_expr`), without waiting."""
        pattern = re.compile(expr)
        refuse = re.compile(filter_expr) if filter_expr else None
        found: list[tuple[str, re.Match[str]]] = []
        for _, line in self._lines(from_mark or 0):
            if refuse is not None and refuse.search(line):
                continue
            if match := pattern.search(line):
                found.append((line, match))
                if len(found) == max_count:
                    break
        return found
