"""A fake node and cluster with injection points on real code paths (SPEC §6).

Each `FakeNode` runs its HTTP server and workload on its own event loop in a
background thread, so it keeps serving while a test blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import logging
import os
import shutil
import tempfile
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from aiohttp import web
from yarl import URL

from .events import DEFAULT_CAPACITY, EventLog
from .injector import (
    DEFAULT_BREAKPOINT_TIMEOUT,
    EXCEPTION,
    LAMBDA,
    PARAMETER,
    SLEEP,
    WAIT_FOR_MESSAGE,
    BreakpointTimeout,
    InjectedError,
    Injector,
    PointInfo,
)
from .protocol import DEFAULT_PORT, auth_headers, node_id, node_id_of, url_host
from .server import (
    BadRequest,
    InjectionRoutes,
    InjectionServer,
    check_bind_address,
    error_response,
    json_response,
    parse_bool,
)

T = TypeVar("T")

KV_WRITE_BEFORE_APPLY = "kv_write_before_apply"
KV_WRITE_ERROR = "kv_write_error"
KV_WRITE_DELAY = "kv_write_delay"
REPLICATION_BEFORE_SEND = "replication_before_send"
REPLICATION_DROP = "replication_drop"
COORDINATOR_PAUSE = "coordinator_pause_before_processing_backlog"
COORDINATOR_BATCH_SIZE = "coordinator_batch_size"

POINTS = (
    PointInfo(KV_WRITE_BEFORE_APPLY, WAIT_FOR_MESSAGE, "write path parks before applying"),
    PointInfo(KV_WRITE_ERROR, EXCEPTION, "write fails with 500 before applying"),
    PointInfo(KV_WRITE_DELAY, SLEEP, "write sleeps `ms` milliseconds (default 100)"),
    PointInfo(
        REPLICATION_BEFORE_SEND,
        WAIT_FOR_MESSAGE,
        "parks before forwarding a write to a peer (parameter `peer`: only that node id)",
    ),
    PointInfo(
        REPLICATION_DROP,
        LAMBDA,
        "the forward to a peer is silently dropped (parameter `peer`: only that node id)",
    ),
    PointInfo(
        COORDINATOR_PAUSE, WAIT_FOR_MESSAGE, "coordinator parks before processing its backlog"
    ),
    PointInfo(COORDINATOR_BATCH_SIZE, PARAMETER, "how many queued requests one round takes"),
)
DEFAULT_WRITE_DELAY_MS = 100
LOG_FORMAT = "%(levelname)-5s %(asctime)s [shard %(shard)s] %(name)s - %(message)s"


def _write_delay(parameters: Mapping[str, str]) -> float:
    try:
        return max(0.0, float(parameters.get("ms", DEFAULT_WRITE_DELAY_MS))) / 1000
    except ValueError:
        return DEFAULT_WRITE_DELAY_MS / 1000


class KeyValueWorkload:
    """A replicated key-value store and a topology coordinator, with the points of §6."""

    def __init__(
        self,
        injector: Injector,
        node_id: Callable[[], str],
        peers: Callable[[], list[str]],
        *,
        token: str | None = None,
        breakpoint_timeout: float = DEFAULT_BREAKPOINT_TIMEOUT,
    ) -> None:
        self.injector = injector
        self._node_id = node_id
        self._peers = peers
        self._headers = auth_headers(token)
        self.breakpoint_timeout = breakpoint_timeout
        self.store: dict[str, bytes] = {}
        self.requests: dict[str, str] = {}
        self._backlog: deque[str] = deque()
        self._ids = itertools.count(1)
        self._work: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None
        self._coordinator: asyncio.Task[None] | None = None
        self._parked: set[asyncio.Task[Any]] = set()  # requests held at a breakpoint

    def add_to(self, app: web.Application) -> None:
        app.router.add_put("/kv/{key}", self.put)
        app.router.add_get("/kv/{key}", self.get)
        app.router.add_post("/topology/requests", self.add_request)
        app.router.add_get("/topology/requests/{id}", self.get_request)
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._cancel_parked)
        app.on_cleanup.append(self._stop)

    async def _start(self, app: web.Application) -> None:
        self._work = asyncio.Event()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self._coordinator = asyncio.create_task(self._coordinate(), name="fake-node-coordinator")

    async def _stop(self, app: web.Application) -> None:
        if self._coordinator is not None:
            self._coordinator.cancel()
            await asyncio.gather(self._coordinator, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def shard_of(self, key: str) -> int:
        return zlib.crc32(key.encode("utf-8", "surrogatepass")) % self.injector.shards

    async def _cancel_parked(self, app: web.Application) -> None:
        """On stop, abort requests held at a breakpoint: they would never end by themselves,
        and the server would wait its whole graceful timeout for them (a 2 s stop)."""
        for task in list(self._parked):
            task.cancel()

    async def _breakpoint(self, name: str, shard: int) -> None:
        """Park at a breakpoint; one that times out gives up and lets the work go on."""
        task = asyncio.current_task()
        assert task is not None
        self._parked.add(task)
        try:
            await self.injector.inject_wait_for_message(name, self.breakpoint_timeout, shard=shard)
        except BreakpointTimeout as exc:
            self.injector.log.warning("%s", exc, extra={"shard": shard})
        finally:
            self._parked.discard(task)

    async def put(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        replicate = parse_bool(request.query.get("replicate", "true"), "replicate")
        value = await request.read()
        shard = self.shard_of(key)
        injector = self.injector
        await self._breakpoint(KV_WRITE_BEFORE_APPLY, shard)
        await injector.inject_sleep(KV_WRITE_DELAY, _write_delay, shard=shard)
        try:
            injector.inject_exception(KV_WRITE_ERROR, shard=shard)
        except InjectedError as exc:
            return error_response(500, str(exc))
        self.store[key] = value
        outcome: dict[str, list[str]] = {"replicated_to": [], "dropped": [], "failed": []}
        if replicate:
            peers = self._peers()
            results = await asyncio.gather(*(self._forward(p, key, value, shard) for p in peers))
            for peer, result in zip(peers, results, strict=True):
                outcome[result].append(peer_id(peer))
        return json_response({"key": key, **outcome})

    def _targets(self, name: str, peer: str) -> bool:
        parameters = self.injector.get_parameters(name)
        return parameters is not None and parameters.get("peer") in (None, peer_id(peer), peer)

    async def _forward(self, peer: str, key: str, value: bytes, shard: int) -> str:
        if self._targets(REPLICATION_BEFORE_SEND, peer):
            await self._breakpoint(REPLICATION_BEFORE_SEND, shard)
        if self._targets(REPLICATION_DROP, peer) and self.injector.inject(
            REPLICATION_DROP, lambda: True, shard=shard
        ):
            return "dropped"
        assert self._session is not None
        url = URL(f"{peer}/kv/{quote(key, safe='')}", encoded=True)
        try:
            async with self._session.put(
                url, data=value, params={"replicate": "false"}, headers=self._headers
            ) as response:
                return "replicated_to" if response.status == 200 else "failed"
        except (aiohttp.ClientError, OSError):
            return "failed"

    async def get(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key not in self.store:
            return error_response(404, f"no such key: {key!r}")
        return web.Response(body=self.store[key], content_type="application/octet-stream")

    async def add_request(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            data = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("topology request body must be a JSON object") from None
        if not isinstance(data, dict):
            raise BadRequest("topology request body must be a JSON object")
        request_id = str(next(self._ids))
        self.requests[request_id] = "queued"
        self._backlog.append(request_id)
        assert self._work is not None
        self._work.set()
        return json_response({"id": request_id, "status": "queued"})

    async def get_request(self, request: web.Request) -> web.Response:
        request_id = request.match_info["id"]
        if request_id not in self.requests:
            return error_response(404, f"no such topology request: {request_id!r}")
        return json_response({"id": request_id, "status": self.requests[request_id]})

    async def _coordinate(self) -> None:
        assert self._work is not None
        while True:
            await self._work.wait()
            self._work.clear()
            if not self._backlog:
                continue
            await self._breakpoint(COORDINATOR_PAUSE, 0)
            batch_size = len(self._backlog)
            size = self.injector.inject_parameter(COORDINATOR_BATCH_SIZE)
            if size is not None:
                try:
                    batch_size = max(1, int(size))
                except ValueError:
                    self.injector.log.warning(
                        "%s: %r is not a number; taking the whole backlog",
                        COORDINATOR_BATCH_SIZE,
                        size,
                        extra={"shard": 0},
                    )
            for _ in range(min(batch_size, len(self._backlog))):
                self.requests[self._backlog.popleft()] = "done"
            if self._backlog:
                self._work.set()


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


class FakeNode:
    """A node that speaks the injection API, with a small replicated key-value workload.

    Use as a context manager (sync or async) or call `start()` and `stop()`.
    The injector belongs to the node's loop: from another thread, go through the
    HTTP API or `node.call(fn, *args)`.
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
        log_file: str | os.PathLike[str] | None = None,
        event_capacity: int = DEFAULT_CAPACITY,
        breakpoint_timeout: float = DEFAULT_BREAKPOINT_TIMEOUT,
        **route_options: Any,
    ) -> None:
        self.host = host
        _check_port(port)
        self.port = port
        self.peers = list(peers)
        self._given_node_id = node_id
        self.logger = logging.Logger("error_injection")
        self.logger.parent = logging.getLogger("pytest_injection_events.node")
        self.logger.setLevel(
            logging.INFO
        )  # the log file has ScyllaDB's INFO lines, whatever root says
        self.logger.addFilter(_ShardDefault())
        self.injector = Injector(shards=shards, points=POINTS, logger=self.logger)
        self.event_log = EventLog(node_id or "", capacity=event_capacity)
        self.injector.add_listener(self.event_log.publish)
        self.workload = KeyValueWorkload(
            self.injector,
            lambda: self.node_id,
            lambda: self.peers,
            token=token,
            breakpoint_timeout=breakpoint_timeout,
        )
        self._server_options = dict(token=token, allow_remote=allow_remote, **route_options)
        # Fail now, in the caller's thread, on a bad address or option rather than in the
        # node's; the routes are cheap to make, unlike a whole throwaway server.
        check_bind_address(host, allow_remote)
        InjectionRoutes(self.injector, self.event_log, **route_options)
        self._log_file = os.fspath(log_file) if log_file is not None else None
        self._log_dir: str | None = None
        self.log_path: str | None = None
        self._handler: logging.Handler | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

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

    def start(self) -> FakeNode:
        if self._thread is not None:
            raise RuntimeError(f"{self!r} is already running")
        _check_port(self.port)  # `port` may have been set after construction (serve does)
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
        return self

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        assert self._loop is not None and self._stopping is not None
        self._loop.call_soon_threadsafe(self._stopping.set)
        thread.join()
        self._close_log()

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
        server = InjectionServer(
            self.injector, self.event_log, host=self.host, port=self.port, **self._server_options
        )
        self.workload.add_to(server.app)
        try:
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
        if self._log_file is not None:
            path = self._log_file
        else:
            self._log_dir = tempfile.mkdtemp(prefix="fakenode-")
            path = os.path.join(self._log_dir, "node.log")
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self.logger.addHandler(handler)
        self._handler, self.log_path = handler, path

    def _close_log(self) -> None:
        if self._handler is not None:
            self.logger.removeHandler(self._handler)
            self._handler.close()
            self._handler = None
        if self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None

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
    """`n` fake nodes that know each other as peers."""

    def __init__(
        self, n: int = 3, shards: int = 1, *, host: str = "127.0.0.1", **node_options: Any
    ):
        if n < 1:
            raise ValueError(f"a cluster needs at least one node, got n={n}")
        self.nodes = [FakeNode(host=host, shards=shards, **node_options) for _ in range(n)]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> FakeCluster:
        try:
            for node in self.nodes:
                node.start()
        except BaseException:
            self.stop()
            raise
        for node in self.nodes:
            node.peers = [other.url for other in self.nodes if other is not node]
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

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


__all__ = ["DEFAULT_PORT", "POINTS", "FakeCluster", "FakeNode", "KeyValueWorkload", "peer_id"]
