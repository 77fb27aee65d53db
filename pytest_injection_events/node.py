"""A fake node and cluster with injection points on real code paths (README, docs/design.md).

Each `FakeNode` runs its HTTP server and workload on its own event loop in a
background thread, so it keeps serving while a test blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from aiohttp import web

from .events import DEFAULT_CAPACITY, DEFAULT_MAX_BYTES, EventLog
from .injector import (
    DEFAULT_BREAKPOINT_TIMEOUT,
    Injector,
)
from .protocol import (
    DEFAULT_PORT,
    EVENTS_PATH,
    LOG_LOGGER,
    PREFIX,
    node_id,
    node_id_of,
    url_host,
)
from .server import (
    SERVER_OPTIONS,
    InjectionRoutes,
    InjectionServer,
    check_bind_address,
)
from .workload import (  # re-exported: the fake node's points are named from here too
    COORDINATOR_BATCH_SIZE,
    COORDINATOR_IDLE,
    COORDINATOR_LOGGER,
    COORDINATOR_PAUSE,
    DEFAULT_WRITE_DELAY_MS,
    KV_LOGGER,
    KV_WRITE_BEFORE_APPLY,
    KV_WRITE_DELAY,
    KV_WRITE_ERROR,
    KV_WRITE_KEY_PAUSE,
    POINTS,
    REPLICATION_BEFORE_SEND,
    REPLICATION_DROP,
    KeyValueWorkload,
)

T = TypeVar("T")

LOG_FORMAT = "%(levelname)-5s %(asctime)s [shard %(shard)s:main] %(name)s - %(message)s"
LOG_LEVELS = {"info": logging.INFO, "debug": logging.DEBUG}


def _check_port(port: int) -> None:
    """Refuse a port bind() cannot take, with a clear error rather than its OverflowError."""
    if not 0 <= port <= 65535:
        raise ValueError(f"not a TCP port: {port} (0 picks a free one)")


#: The node id a node at a URL has by default: host:port.
peer_id = node_id_of


class _ShardDefault(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "shard"):
            record.shard = 0
        return True


_SCYLLA_LEVELS = {"WARNING": "WARN", "CRITICAL": "ERROR"}


class ScyllaLogFormatter(logging.Formatter):
    """ScyllaDB's log line: `WARN`, not `WARNING`; local time with comma milliseconds."""

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname
        record.levelname = _SCYLLA_LEVELS.get(level, level)
        try:
            return super().format(record)
        finally:
            record.levelname = level  # the record goes on to other handlers (caplog)


#: What a node with `events=False` does not serve: ScyllaDB has neither.
_EVENT_PATHS = frozenset({EVENTS_PATH, PREFIX + "/points"})


@web.middleware
async def _scylla_api_only(request: web.Request, handler: Any) -> web.StreamResponse:
    """A 404 like any unknown path's for the endpoints ScyllaDB does not have."""
    if request.path in _EVENT_PATHS:
        raise web.HTTPNotFound()
    return await handler(request)


def _log_level(level: str) -> int:
    try:
        return LOG_LEVELS[str(level).lower()]
    except KeyError:
        raise ValueError(
            f"log_level must be one of {', '.join(LOG_LEVELS)}, got {level!r}"
        ) from None


class FakeNode:
    """A node that speaks the injection API, with a small replicated key-value workload.

    Use as a context manager (sync or async) or call `start()` and `stop()`. Every
    start after the first is a new life, as a restarted ScyllaDB server: same
    address, id and log file (appended), a fresh injector and event log. The
    injector belongs to the node's loop: from another thread, go through the HTTP
    API or `node.call(fn, *args)`. See docs/library.md.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        shards: int = 1,
        node_id: str | None = None,
        peers: Iterable[str] = (),
        *,
        token: str | None = None,
        allow_remote: bool = False,
        events: bool = True,
        log_path: str | os.PathLike[str] | None = None,
        log_file: str | os.PathLike[str] | None = None,
        log_level: str = "info",
        event_capacity: int = DEFAULT_CAPACITY,
        event_max_bytes: int = DEFAULT_MAX_BYTES,
        breakpoint_timeout: float = DEFAULT_BREAKPOINT_TIMEOUT,
        **route_options: Any,
    ) -> None:
        if log_path is not None and log_file is not None:
            raise ValueError("give log_path or log_file (its old name), not both")
        self.host = host
        _check_port(port)
        self.port = port
        self.shards = shards
        self.peers = list(peers)
        self.events = bool(events)
        self._given_node_id = node_id
        self._event_capacity = event_capacity
        self._event_max_bytes = event_max_bytes
        self._token = token
        self._breakpoint_timeout = breakpoint_timeout
        level = _log_level(log_level)
        self.log_level = str(log_level).lower()
        # The node's own loggers, not the process's: two nodes never share a handler.
        parent = logging.getLogger("pytest_injection_events.node")
        self.loggers: dict[str, logging.Logger] = {}
        for name in (LOG_LOGGER, KV_LOGGER, COORDINATOR_LOGGER):
            logger = self.loggers[name] = logging.Logger(name, level)
            logger.parent = parent  # also to pytest's caplog, like any other record
            logger.addFilter(_ShardDefault())
        self.logger = self.loggers[LOG_LOGGER]
        server_only = {key: route_options.pop(key) for key in SERVER_OPTIONS & route_options.keys()}
        self._server_options = dict(
            token=token, allow_remote=allow_remote, **server_only, **route_options
        )
        # Fail now, in the caller's thread, on a bad address or option rather than in the
        # node's; the routes are cheap to make, unlike a whole throwaway server.
        check_bind_address(host, allow_remote)
        self._new_life(store={})
        InjectionRoutes(self.injector, self.event_log, **route_options)
        given = log_path if log_path is not None else log_file
        #: The log file; settable before a start. None: a temporary file made at first start,
        #: kept until the node is closed (`close()`), collected or the process exits.
        self.log_path: str | None = os.fspath(given) if given is not None else None
        self._cleanup: weakref.finalize | None = None
        self._started_once = False
        self._handler: logging.Handler | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    def _new_life(self, store: dict[str, bytes]) -> None:
        """What a restarted server starts with: nothing enabled, no event, seq from 1."""
        self.injector = Injector(shards=self.shards, points=POINTS, logger=self.logger)
        self.event_log = EventLog(
            self.node_id, capacity=self._event_capacity, max_bytes=self._event_max_bytes
        )
        self.injector.add_listener(self.event_log.publish)
        self.workload = KeyValueWorkload(
            self.injector,
            lambda: self.node_id,
            lambda: self.peers,
            token=self._token,
            breakpoint_timeout=self._breakpoint_timeout,
            log=self.loggers[KV_LOGGER],
            coordinator_log=self.loggers[COORDINATOR_LOGGER],
            store=store,
        )

    @property
    def node_id(self) -> str:
        """host:port, an IPv6 host in brackets: the id peers know this node by (`peer_id`)."""
        return self._given_node_id or node_id(self.host, self.port)

    @property
    def url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def boot_id(self) -> str:
        """This life's id (`X-Injection-Boot`): a restart changes it."""
        return self.event_log.boot_id

    def start(self) -> FakeNode:
        """Start serving; after a stop, as a new life on the same address and log file."""
        if self._thread is not None:
            raise RuntimeError(f"{self!r} is already running")
        _check_port(self.port)  # `port` may have been set after construction (serve does)
        if self._started_once:
            self._new_life(store=self.workload.store)
        self._open_log()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = threading.Thread(
            target=self._run, args=(started,), name=f"FakeNode-{self.host}:{self.port}", daemon=True
        )
        thread.start()
        try:
            started.result()
        except BaseException:
            thread.join()
            self._close_log()
            raise
        self._thread = thread
        self._started_once = True
        return self

    def stop(self) -> None:
        """Stop serving; the log file stays readable (see `close()`)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        assert self._loop is not None and self._stopping is not None
        self._loop.call_soon_threadsafe(self._stopping.set)
        thread.join()
        self._close_log()

    def restart(self) -> FakeNode:
        """Stop (if running) and start again: a new life, as `stop()` then `start()`."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop, and remove the temporary log file the node made (a given one stays)."""
        self.stop()
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the node's loop and return its result (thread-safe)."""
        if self._loop is None or self._thread is None:
            return fn(*args)

        async def run() -> T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def _run(self, started: concurrent.futures.Future[None]) -> None:
        asyncio.run(self._serve(started))

    async def _serve(self, started: concurrent.futures.Future[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:  # whatever fails here fails start() in the caller, never leaves it waiting
            server = InjectionServer(
                self.injector,
                self.event_log,
                host=self.host,
                port=self.port,
                **self._server_options,
            )
            if not self.events:
                server.app.middlewares.append(_scylla_api_only)
            self.workload.add_to(server.app)
            await server.start()
        except BaseException as exc:
            started.set_exception(exc)
            return
        self.port = server.port
        self.event_log.node_id = self.node_id
        started.set_result(None)
        try:
            await self._stopping.wait()
        finally:
            await server.stop()

    def _open_log(self) -> None:
        if self.log_path is None:
            directory = tempfile.mkdtemp(prefix="fakenode-")
            # Outlives stop() and restarts, so the log can be read after the node is down.
            self._cleanup = weakref.finalize(self, shutil.rmtree, directory, ignore_errors=True)
            self.log_path = os.path.join(directory, "node.log")
        handler = logging.FileHandler(self.log_path, mode="a", encoding="utf-8")
        handler.setFormatter(ScyllaLogFormatter())
        for logger in self.loggers.values():
            logger.addHandler(handler)
        self._handler = handler

    def _close_log(self) -> None:
        if self._handler is not None:
            for logger in self.loggers.values():
                logger.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def __enter__(self) -> FakeNode:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeNode:
        return self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<FakeNode {self.node_id} {state}>"


class FakeCluster:
    """Fake nodes that know each other as peers, changed while a test runs as
    ScyllaDB's test manager does: nodes added, stopped, started, restarted, removed.
    `node_options` are every node's defaults; `add_node(**options)` overrides them."""

    def __init__(
        self, n: int = 3, shards: int = 1, *, host: str = "127.0.0.1", **node_options: Any
    ):
        if n < 0:
            raise ValueError(f"a cluster cannot have a negative number of nodes, got n={n}")
        self._defaults: dict[str, Any] = dict(host=host, shards=shards, **node_options)
        self.nodes = [FakeNode(**self._defaults) for _ in range(n)]
        self._removed: list[FakeNode] = []  # stopped, their logs kept until close()

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> FakeCluster:
        try:
            for node in self.nodes:
                if not node.running:
                    node.start()
        except BaseException:
            self.stop()
            raise
        self._update_peers()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def close(self) -> None:
        """Stop every node and remove the temporary logs they made (removed nodes' too)."""
        for node in [*self.nodes, *self._removed]:
            node.close()
        self._removed.clear()

    def _update_peers(self) -> None:
        for node in self.nodes:
            node.peers = [other.url for other in self.nodes if other is not node]

    def _member(self, node: FakeNode) -> FakeNode:
        if not any(node is member for member in self.nodes):
            raise ValueError(f"{node!r} is not a node of this cluster")
        return node

    def add_node(self, **options: Any) -> FakeNode:
        """Start one more node (options override the cluster's) and make it everyone's peer."""
        node = FakeNode(**{**self._defaults, **options})
        node.start()
        self.nodes.append(node)
        self._update_peers()
        return node

    def add_nodes(self, n: int, **options: Any) -> list[FakeNode]:
        if n < 1:
            raise ValueError(f"add at least one node, got n={n}")
        return [self.add_node(**options) for _ in range(n)]

    def stop_node(self, node: FakeNode) -> None:
        """Stop one node; it stays a peer of the others, as a down server of a cluster."""
        self._member(node).stop()

    def start_node(self, node: FakeNode) -> None:
        """Start a stopped node again: a new life on the same address and log."""
        self._member(node).start()

    def restart_node(self, node: FakeNode) -> None:
        self._member(node).restart()

    def remove_node(self, node: FakeNode) -> None:
        """Stop a node and drop it from the cluster and every peer list; its log stays."""
        self._member(node).stop()
        self.nodes = [member for member in self.nodes if member is not node]
        self._removed.append(node)
        self._update_peers()

    def __enter__(self) -> FakeCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeCluster:
        return self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()

    def __getitem__(self, index: int) -> FakeNode:
        return self.nodes[index]

    def __iter__(self) -> Iterator[FakeNode]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)


__all__ = [
    "COORDINATOR_BATCH_SIZE",
    "COORDINATOR_IDLE",
    "COORDINATOR_LOGGER",
    "COORDINATOR_PAUSE",
    "DEFAULT_PORT",
    "DEFAULT_WRITE_DELAY_MS",
    "KV_LOGGER",
    "KV_WRITE_BEFORE_APPLY",
    "KV_WRITE_DELAY",
    "KV_WRITE_ERROR",
    "KV_WRITE_KEY_PAUSE",
    "POINTS",
    "REPLICATION_BEFORE_SEND",
    "REPLICATION_DROP",
    "FakeCluster",
    "FakeNode",
    "KeyValueWorkload",
    "ScyllaLogFormatter",
    "peer_id",
]
