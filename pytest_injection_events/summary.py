"""What a test's stream saw, summed up per injection (`--injection-report`).

Pure: it reads events, so a runner other than pytest can print the same
summary. See docs/design.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from .event_schema import ENTER, InjectionEvent


class Hit(NamedTuple):
    """One injection entered during a test: how often, and when first."""

    injection: str
    entered: int
    first: float  # seconds from `opened_at` to the first enter, rounded to microseconds


def hit_summary(events: Iterable[InjectionEvent], opened_at: float) -> list[Hit]:
    """One `Hit` per injection entered, in the order of first entry."""
    first: dict[str, float] = {}
    counts: dict[str, int] = {}
    for event in events:
        if event.phase == ENTER and event.injection:
            first.setdefault(event.injection, event.timestamp - opened_at)
            counts[event.injection] = counts.get(event.injection, 0) + 1
    return [Hit(name, counts[name], round(first[name], 6)) for name in counts]
