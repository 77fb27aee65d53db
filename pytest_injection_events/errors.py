"""The errors the package raises: one base, each also the builtin it resembles."""

from __future__ import annotations

from .event_schema import GAP_DROPPED, InjectionEvent


class InjectionEventsError(Exception):
    """Base of every error this package raises, so `except InjectionEventsError` catches all."""


class NotAnInjectionNode(InjectionEventsError, ConnectionError):
    """A target that does not answer the injection API (`GET .../injection` is no JSON array)."""


class UnsupportedWait(InjectionEventsError, ValueError):
    """A wait the node's event source cannot satisfy (e.g. phase `resume` by polling /enters)."""


class StreamConnectError(InjectionEventsError, ConnectionError):
    """A node's events could not be read (unreachable, refused, bad token, ...)."""


class InjectionTimeout(InjectionEventsError, TimeoutError):
    """No matching event in time; the message says what, where, what did arrive and hints."""

    def __init__(self, message: str, *, injection: str, timeout: float) -> None:
        super().__init__(message)
        self.injection = injection
        self.timeout = timeout


class EventsLost(InjectionEventsError):
    """Events that a wait may have needed were dropped by the node (a `gap`)."""

    def __init__(self, gap: InjectionEvent, waiting_for: str) -> None:
        why = (
            "the node no longer kept them when the stream resumed"
            if gap.reason in (GAP_DROPPED, None)
            else f"reason: {gap.reason}"
        )
        super().__init__(
            f"events lost on node {gap.node}: seq {gap.missed_from} to {gap.missed_to} "
            f"({why}), while waiting for {waiting_for}"
        )
        self.gap = gap
