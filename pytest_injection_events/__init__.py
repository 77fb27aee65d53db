"""Push error-injection events from servers under test to pytest.

The library: importing it does not import pytest, so a service can embed the
`Injector`. The pytest plugin is `pytest_injection_events.plugin` (entry point
`pytest_injection_events`). See docs/design.md.
"""

from .client import (
    ApiError,
    BadParameters,
    InjectionApi,
    NodeUnreachable,
    RemoteCluster,
    RemoteNode,
    SyncCallInLoop,
    SyncInjectionApi,
    UnknownNode,
    resolve_node,
)
from .errors import InjectionEventsError, NotAnInjectionNode, UnsupportedWait
from .event_schema import InjectionEvent
from .events import EventLog
from .injector import (
    BreakpointTimeout,
    InjectedError,
    InjectionHandler,
    Injector,
    PointInfo,
)
from .node import FakeCluster, FakeNode
from .server import InjectionRoutes, InjectionServer
from .stream import (
    EventsLost,
    InjectionEventStream,
    InjectionTimeout,
    StreamConnectError,
    injection_event_stream,
)
from .summary import Hit, hit_summary

__version__ = "0.1.0"

#: Where pytest finds the plugin when this package is named in `pytest_plugins` or `-p`
#: without being installed (installed, the entry point loads the plugin module directly).
pytest_plugins = ["pytest_injection_events.plugin"]

__all__ = [
    "ApiError",
    "BadParameters",
    "BreakpointTimeout",
    "EventLog",
    "EventsLost",
    "FakeCluster",
    "FakeNode",
    "Hit",
    "InjectedError",
    "InjectionApi",
    "InjectionEvent",
    "InjectionEventStream",
    "InjectionEventsError",
    "InjectionHandler",
    "InjectionRoutes",
    "InjectionServer",
    "InjectionTimeout",
    "Injector",
    "NodeUnreachable",
    "NotAnInjectionNode",
    "PointInfo",
    "RemoteCluster",
    "RemoteNode",
    "StreamConnectError",
    "SyncCallInLoop",
    "SyncInjectionApi",
    "UnknownNode",
    "UnsupportedWait",
    "hit_summary",
    "injection_event_stream",
    "resolve_node",
]
