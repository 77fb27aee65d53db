"""The errors the package raises: one base, each also the builtin it resembles."""

from __future__ import annotations


class InjectionEventsError(Exception):
    """Base of every error this package raises, so `except InjectionEventsError` catches all."""


class NotAnInjectionNode(InjectionEventsError, ConnectionError):
    """A target that does not answer the injection API (`GET .../injection` is no JSON array)."""


class UnsupportedWait(InjectionEventsError, ValueError):
    """A wait the node's event source cannot satisfy (e.g. phase `resume` by polling /enters)."""
