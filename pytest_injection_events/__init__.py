"""Push error-injection events from servers under test to pytest.

This package is also the pytest plugin (entry point and `pytest_plugins`
name `pytest_injection_events`): its hooks and fixtures are re-exported here
from `plugin`, so either way of loading registers the same module once.
"""

from .client import ApiError, InjectionApi, RemoteNode, SyncInjectionApi
from .errors import InjectionEventsError, NotAnInjectionNode, UnsupportedWait
from .events import EventLog, InjectionEvent
from .injector import (
    BreakpointTimeout,
    InjectedError,
    InjectionHandler,
    Injector,
    PointInfo,
)
from .node import FakeCluster, FakeNode
from .plugin import (  # noqa: F401 - the hooks and fixtures pytest finds on this module
    _injection_marker_setup,
    injection_api,
    injection_cluster,
    injection_event_stream_fixture,
    injection_node,
    pytest_addoption,
    pytest_configure,
    pytest_runtest_call,
    pytest_runtest_teardown,
)
from .server import InjectionRoutes, InjectionServer
from .stream import (
    EventsLost,
    InjectionEventStream,
    InjectionTimeout,
    StreamConnectError,
    injection_event_stream,
)

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "BreakpointTimeout",
    "EventLog",
    "EventsLost",
    "FakeCluster",
    "FakeNode",
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
    "NotAnInjectionNode",
    "PointInfo",
    "RemoteNode",
    "StreamConnectError",
    "SyncInjectionApi",
    "UnsupportedWait",
    "injection_event_stream",
]
