"""The pytest plugin: options, fixtures and the `wait_for_injection` marker.

This module is the plugin (entry point `pytest11` named `pytest_injection_events`)
and the only one of the package that imports pytest. It only wires: the work is
done by `FakeNode`, `InjectionApi`, `InjectionEventStream` and friends, usable
without pytest. See docs/design.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import pytest

from .client import (
    InjectionApi,
    RemoteCluster,
    RemoteNode,
    UnknownNode,
    parameter_strings,
    resolve_node,
)
from .diagnostics import event_logger
from .errors import EventsLost, InjectionEventsError, InjectionTimeout, StreamConnectError
from .node import FakeCluster, FakeNode
from .protocol import TOKEN_ENV
from .stream import InjectionEventStream
from .summary import Hit, hit_summary

#: The names this module may be registered under: the entry point's and the module's own.
PLUGIN_NAMES = ("pytest_injection_events", "pytest_injection_events.plugin")
_PACKAGE_DIR = Path(__file__).resolve().parent
_STDLIB_DIR = Path(os.__file__).resolve().parent

MARKER = "wait_for_injection"
_MARKER_HELP = (
    "wait_for_injection(name, *, one_shot=True, parameters=None, timeout=None, count=1, "
    "node=None): enable the injection before the test body and fail the test unless it "
    "was entered `count` times within `timeout` seconds after the body; stackable."
)
_REPORT_KEY = "injection_hits"


@dataclass(frozen=True)
class Settings:
    node_urls: tuple[str, ...]
    timeout: float
    cluster_size: int
    shards: int
    token: str | None
    report: bool


@dataclass(frozen=True)
class MarkedInjection:
    """One `@pytest.mark.wait_for_injection`, checked."""

    name: str
    one_shot: bool = True
    parameters: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    count: int = 1
    node: Any = None

    @classmethod
    def from_marker(cls, mark: pytest.Mark) -> MarkedInjection:
        if len(mark.args) != 1 or not isinstance(mark.args[0], str) or not mark.args[0]:
            raise ValueError(f"takes one injection name as a string, got args {mark.args!r}")
        unknown = set(mark.kwargs) - {"one_shot", "parameters", "timeout", "count", "node"}
        if unknown:
            raise ValueError(f"unknown keyword(s) {', '.join(sorted(unknown))}")
        kwargs = dict(mark.kwargs)
        count = kwargs.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"count must be a positive integer, got {count!r}")
        one_shot = kwargs.get("one_shot", True)
        if not isinstance(one_shot, bool):  # "false" is truthy: it would mean one_shot=True
            raise ValueError(f"one_shot must be True or False, got {one_shot!r}")
        timeout = kwargs.get("timeout")
        if timeout is not None and (
            not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout >= 0
        ):
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        try:
            kwargs["parameters"] = parameter_strings(kwargs.get("parameters"))
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        return cls(mark.args[0], **kwargs)


class _AlsoRegistered:
    """Holds the plugin's other name, so pytest never imports it a second time under it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<pytest_injection_events plugin, registered as {self.name!r}>"


def pytest_plugin_registered(
    plugin: object, plugin_name: str, manager: pytest.PytestPluginManager
) -> None:
    """Registered under one of its names, take the other too: one registration, any spelling.

    The entry point registers this module as `pytest_injection_events`; a conftest's
    `pytest_plugins = ["pytest_injection_events.plugin"]` (or `-p` with either name)
    would register it again and pytest would raise. `-p no:pytest_injection_events`
    turns it off; loading it under one name while the other is blocked is a usage error.
    """
    if plugin is not sys.modules[__name__]:
        return
    for name in PLUGIN_NAMES:
        if name == plugin_name:
            continue
        if manager.is_blocked(name):
            raise pytest.UsageError(
                f"the plugin is turned off (-p no:{name}) but was also loaded as "
                f"{plugin_name!r}: to turn it off, say -p no:pytest_injection_events "
                "and load it nowhere else"
            )
        if manager.get_plugin(name) is None:
            manager.register(_AlsoRegistered(plugin_name), name)


def _settings(config: pytest.Config) -> Settings:
    return config.stash[_settings_key]


_settings_key = pytest.StashKey[Settings]()


def _ini_number(config: pytest.Config, name: str, kind: type, minimum: float) -> Any:
    raw = config.getini(name)
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise pytest.UsageError(f"ini option {name} must be {what}, got {raw!r}") from None
    if not value >= minimum:  # `not >=` also refuses NaN
        raise pytest.UsageError(f"ini option {name} must be at least {minimum}, got {raw!r}")
    return value


def _node_url(value: str) -> str:
    """`--injection-node-url`'s type: a node address, refused at option parsing if it is none."""
    try:
        return RemoteNode(value).url
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("injection-events", "error-injection event streams")
    group.addoption(
        "--injection-node-url",
        action="append",
        default=[],
        type=_node_url,
        metavar="URL",
        dest="injection_node_urls",
        help="use this running node instead of fake ones (repeat for a cluster)",
    )
    group.addoption(
        "--injection-timeout",
        type=float,
        default=None,
        metavar="S",
        help="default seconds to wait for an injection (ini injection_timeout, default 30)",
    )
    group.addoption(
        "--injection-token",
        default=None,
        metavar="TOKEN",
        help=f"bearer token of the given nodes (default: ${TOKEN_ENV})",
    )
    group.addoption(
        "--injection-report",
        action="store_true",
        default=False,
        help="summarize, per test, the injections hit, how often and when",
    )
    parser.addini("injection_timeout", "default seconds to wait for an injection", default="30")
    parser.addini("injection_cluster_size", "nodes of injection_cluster", default="3")
    parser.addini("injection_shards", "shards of each fake node", default="1")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_HELP)
    timeout = config.getoption("injection_timeout")
    if timeout is None:
        timeout = _ini_number(config, "injection_timeout", float, 0)
    elif not timeout >= 0:  # `not >=` also refuses NaN
        raise pytest.UsageError(f"--injection-timeout must be >= 0, got {timeout}")
    config.stash[_settings_key] = Settings(
        node_urls=tuple(config.getoption("injection_node_urls") or ()),
        timeout=float(timeout),
        cluster_size=_ini_number(config, "injection_cluster_size", int, 1),
        shards=_ini_number(config, "injection_shards", int, 1),
        token=config.getoption("injection_token") or os.environ.get(TOKEN_ENV) or None,
        report=bool(config.getoption("injection_report")),
    )
    if config.getoption("injection_report") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(InjectionReport(), "injection-report")
    # The timeline of received events goes to each test's captured log.
    if event_logger.level == logging.NOTSET or event_logger.level > logging.INFO:
        event_logger.setLevel(logging.INFO)


@pytest.fixture
def injection_node_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Keyword arguments of every fake node (`FakeNode(**options)`): override it in a
    conftest to change them, e.g. `{**defaults, "breakpoint_timeout": 5}`."""
    return {"shards": _settings(request.config).shards}


@pytest.fixture
def injection_node(
    request: pytest.FixtureRequest, injection_node_options: dict[str, Any]
) -> Iterator[FakeNode | RemoteNode]:
    """A fresh fake node for this test, or the first `--injection-node-url`."""
    settings = _settings(request.config)
    if settings.node_urls:
        yield RemoteNode(settings.node_urls[0])
        return
    with FakeNode(**injection_node_options) as node:
        yield node


@pytest.fixture
def injection_cluster(
    request: pytest.FixtureRequest, injection_node_options: dict[str, Any]
) -> Iterator[FakeCluster | RemoteCluster]:
    """A fresh fake cluster (ini injection_cluster_size nodes), or the given nodes."""
    settings = _settings(request.config)
    if settings.node_urls:
        yield RemoteCluster(settings.node_urls)
        return
    with FakeCluster(settings.cluster_size, **injection_node_options) as cluster:
        yield cluster


@pytest.fixture
def injection_api(request: pytest.FixtureRequest, injection_node: Any) -> InjectionApi:
    """REST client of `injection_node` (`await` its calls; `.sync` in sync tests)."""
    return InjectionApi(injection_node.url, _settings(request.config).token)


def _stream_targets(request: pytest.FixtureRequest) -> list[str]:
    """The nodes a stream starts on: the test's cluster or node; none in a test that
    uses neither (it attaches the servers the body creates, as it names them)."""
    if "injection_cluster" in request.fixturenames:
        return list(request.getfixturevalue("injection_cluster").urls)
    if "injection_node" in request.fixturenames or request.node.get_closest_marker(MARKER):
        return [request.getfixturevalue("injection_node").url]
    return []


@pytest.fixture(name="injection_event_stream")
def injection_event_stream_fixture(
    request: pytest.FixtureRequest,
) -> Iterator[InjectionEventStream]:
    """A stream open before the test body: on `injection_node`, or on every node of
    `injection_cluster` when the test uses it, else on no node yet (`add_node`,
    `mark` and `node=` attach the servers the body creates). Sync and async tests."""
    stream = InjectionEventStream(_stream_targets(request), token=_settings(request.config).token)
    try:
        stream.__enter__()
    except StreamConnectError as exc:
        # A node that is down or refuses us: say so in one line, not an aiohttp traceback.
        message = f"injection_event_stream: {exc}"
        raise pytest.fail.Exception(message, pytrace=False) from None
    try:
        yield stream
    finally:
        stream.__exit__(None, None, None)


_stream_key = pytest.StashKey[InjectionEventStream]()
_marked_key = pytest.StashKey[list[tuple[MarkedInjection, list[str]]]]()


def _marked(item: pytest.Item) -> list[MarkedInjection]:
    marks = list(item.iter_markers(MARKER))
    marks.reverse()  # the decorator nearest the function is applied first: keep source order
    parsed = []
    for mark in marks:
        try:
            parsed.append(MarkedInjection.from_marker(mark))
        except ValueError as exc:
            message = f"{item.nodeid}: @pytest.mark.{MARKER}: {exc}"
            raise pytest.fail.Exception(message, pytrace=False) from None
    return parsed


def _marker_targets(request: pytest.FixtureRequest, marked: MarkedInjection) -> list[str]:
    """Where a marked injection is enabled: `node` (index, id or URL), else every streamed node."""
    urls = _stream_targets(request)
    if marked.node is None:
        return urls
    try:
        return [resolve_node(marked.node, urls)]
    except UnknownNode as exc:
        raise pytest.fail.Exception(f"@pytest.mark.{MARKER}: {exc}", pytrace=False) from None


def _refuse_unreachable_count(mark: MarkedInjection, urls: list[str], token: str | None) -> None:
    """A one-shot fires at most once per shard: `count` beyond the shards can never be met."""
    if not mark.one_shot or mark.count == 1:
        return
    shards = sum(len(InjectionApi(url, token).sync.get_injection(mark.name)) for url in urls)
    if mark.count > shards:
        pytest.fail(
            f"@pytest.mark.{MARKER}({mark.name!r}): count={mark.count} can never be reached: "
            f"one_shot=True fires at most once per shard and the {len(urls)} node(s) have "
            f"{shards} shard(s) in all; pass one_shot=False or count<={shards}",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _injection_marker_setup(request: pytest.FixtureRequest) -> Iterator[None]:
    """Before the body: stream open, marked injections enabled; after: disabled again."""
    marked = _marked(request.node) if isinstance(request.node, pytest.Item) else []
    if not marked:
        yield
        return
    # Whatever provides the fixture (ours, or a user's override) is what the check reads.
    request.node.stash[_stream_key] = request.getfixturevalue("injection_event_stream")
    token = _settings(request.config).token
    enabled: list[tuple[MarkedInjection, list[str]]] = []
    request.node.stash[_marked_key] = enabled
    try:
        for mark in marked:
            urls = _marker_targets(request, mark)
            _refuse_unreachable_count(mark, urls, token)
            for url in urls:
                InjectionApi(url, token).sync.enable_injection(
                    mark.name, mark.one_shot, mark.parameters
                )
            enabled.append((mark, urls))
        yield
    finally:
        for mark, urls in enabled:
            for url in urls:
                try:
                    InjectionApi(url, token).sync.disable_injection(mark.name)
                except (ConnectionError, OSError):
                    pass  # the node is gone: nothing is left enabled on it


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """After the body: each marked injection must have been entered `count` times."""
    result = yield
    stream = item.stash.get(_stream_key, None)
    default = _settings(item.config).timeout
    for mark, urls in item.stash.get(_marked_key, []):
        timeout = default if mark.timeout is None else mark.timeout
        nodes = urls if len(urls) < len(stream.urls) else [None]  # type: ignore[union-attr]
        for node in nodes:
            try:
                stream.wait_for_injection_sync(  # type: ignore[union-attr]
                    mark.name, timeout, count=mark.count, node=node, consume=False
                )
            except (InjectionTimeout, EventsLost) as exc:
                # The body is over: a traceback would only show the plugin's insides.
                message = f"@pytest.mark.{MARKER}({mark.name!r}): {exc}"
                raise pytest.fail.Exception(message, pytrace=False) from None
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """Note what the test's stream saw, for --injection-report (also across xdist)."""
    funcargs = getattr(item, "funcargs", {})  # a pytest.Function's; other items have none
    stream = item.stash.get(_stream_key, None) or funcargs.get("injection_event_stream")
    if isinstance(stream, InjectionEventStream) and _settings(item.config).report:
        hits = hit_summary(stream.events, stream.opened_at)
        # Plain tuples: xdist carries user_properties between processes.
        item.user_properties.append((_REPORT_KEY, [tuple(hit) for hit in hits]))
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A wait that failed in the body: show the test's lines and the message, not ours.

    The package's errors carry all that matters in their message; the frames of
    the wait's insides (and of the thread bridge under it) only bury it, so they
    leave the traceback the way `__tracebackhide__` frames do. `--full-trace`
    still shows them.
    """
    __tracebackhide__ = True
    excinfo = call.excinfo
    if (
        excinfo is not None
        and call.when == "call"
        and isinstance(excinfo.value, InjectionEventsError)
        and not item.config.getoption("fulltrace", False)
    ):
        _drop_inner_frames(excinfo.tb)
        excinfo.traceback = excinfo.traceback.filter(lambda entry: True)  # re-read the chain
    return (yield)


def _drop_inner_frames(tb: TracebackType) -> None:
    """Unlink the frames below the last one outside the package and the standard library.

    pytest rebuilds a traceback from the frame chain, so hiding means relinking it.
    """
    chain = []
    while tb is not None:
        chain.append(tb)
        tb = tb.tb_next  # type: ignore[assignment]
    outside = [i for i, entry in enumerate(chain) if not _is_inner(entry)]
    if outside and outside[-1] < len(chain) - 1:
        chain[outside[-1]].tb_next = None


def _is_inner(tb: TracebackType) -> bool:
    """A frame of this package, or of the standard library it calls into (threads, futures)."""
    path = Path(tb.tb_frame.f_code.co_filename)
    if path.is_relative_to(_PACKAGE_DIR):
        return True
    return path.is_relative_to(_STDLIB_DIR) and "site-packages" not in path.parts


class InjectionReport:
    """Collects the hit summaries of every test (from xdist workers too) and prints them."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, list[Hit]]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "teardown":
            for key, value in report.user_properties:
                if key == _REPORT_KEY:
                    hits = cast("list[tuple[str, int, float]]", value)
                    self.hits.append((report.nodeid, [Hit(*hit) for hit in hits]))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminalreporter.section("injection report")
        if not self.hits:
            terminalreporter.write_line("no test used an injection event stream")
        for nodeid, summary in self.hits:
            terminalreporter.write_line(nodeid)
            if not summary:
                terminalreporter.write_line("    (no injection entered)")
            for name, count, first in summary:
                terminalreporter.write_line(f"    {name:<48} x{count:<4} first at +{first:.3f}s")
