"""The fake node's workload: a replicated key-value store and a topology coordinator,
with injection points on their real code paths (README, docs/design.md).

Each `FakeNode` runs one on its own loop; the workload knows its node only through
the injector and two callables (its id, its peers), so it is testable on its own.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from yarl import URL

from .injector import (
    DEFAULT_BREAKPOINT_TIMEOUT,
    EXCEPTION,
    HANDLER,
    LAMBDA,
    PARAMETER,
    SLEEP,
    WAIT_FOR_MESSAGE,
    BreakpointTimeout,
    InjectedError,
    InjectionHandler,
    Injector,
    PointInfo,
)
from .protocol import auth_headers, node_id_of
from .server import BadRequest, error_response, json_response, parse_bool

KV_WRITE_BEFORE_APPLY = "kv_write_before_apply"
KV_WRITE_ERROR = "kv_write_error"
KV_WRITE_DELAY = "kv_write_delay"
KV_WRITE_KEY_PAUSE = "kv_write_key_pause"
REPLICATION_BEFORE_SEND = "replication_before_send"
REPLICATION_DROP = "replication_drop"
COORDINATOR_PAUSE = "coordinator_pause_before_processing_backlog"
COORDINATOR_BATCH_SIZE = "coordinator_batch_size"

POINTS = (
    PointInfo(KV_WRITE_BEFORE_APPLY, WAIT_FOR_MESSAGE, "write path parks before applying"),
    PointInfo(KV_WRITE_ERROR, EXCEPTION, "write fails with 500 before applying"),
    PointInfo(KV_WRITE_DELAY, SLEEP, "write sleeps `ms` milliseconds (default 100)"),
    PointInfo(
        KV_WRITE_KEY_PAUSE,
        HANDLER,
        "a write of key `key` (every key without it) logs and waits for a message",
    ),
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
#: ScyllaDB's line: `INFO  2026-02-18 14:10:18,123 [shard 0:main] errinj - message`.
#: Loggers of the workload: its own lines, never the injection framework's (`errinj`).
KV_LOGGER = "kv"
COORDINATOR_LOGGER = "raft_topology"
#: What the coordinator logs when its backlog is empty again: a `task: waiting for X`
#: line that has nothing to do with injections.
COORDINATOR_IDLE = "topology_coordinator: waiting for requests"


def _write_delay(parameters: Mapping[str, str]) -> float:
    try:
        return max(0.0, float(parameters.get("ms", DEFAULT_WRITE_DELAY_MS))) / 1000
    except ValueError:
        return DEFAULT_WRITE_DELAY_MS / 1000


class KeyValueWorkload:
    """A replicated key-value store and a topology coordinator, with the points the README lists."""

    def __init__(
        self,
        injector: Injector,
        node_id: Callable[[], str],
        peers: Callable[[], list[str]],
        *,
        token: str | None = None,
        breakpoint_timeout: float = DEFAULT_BREAKPOINT_TIMEOUT,
        log: logging.Logger | None = None,
        coordinator_log: logging.Logger | None = None,
        store: dict[str, bytes] | None = None,
    ) -> None:
        self.injector = injector
        self.log = log or logging.getLogger("pytest_injection_events.node.kv")
        self.coordinator_log = coordinator_log or self.log
        self._node_id = node_id
        self._peers = peers
        self._headers = auth_headers(token)
        self.breakpoint_timeout = breakpoint_timeout
        self.store: dict[str, bytes] = {} if store is None else store  # data outlives a restart
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

    async def _park(self, point: Awaitable[None], shard: int) -> None:
        """Run a point that may park; one that times out gives up and lets the work go on."""
        task = asyncio.current_task()
        assert task is not None
        self._parked.add(task)
        try:
            await point
        except BreakpointTimeout as exc:
            self.log.warning("%s", exc, extra={"shard": shard})
        finally:
            self._parked.discard(task)

    async def _breakpoint(self, name: str, shard: int) -> None:
        point = self.injector.inject_wait_for_message(name, self.breakpoint_timeout, shard=shard)
        await self._park(point, shard)

    async def _key_pause(self, key: str, shard: int, handler: InjectionHandler) -> None:
        """A handler as ScyllaDB's are written: filter first, log its own line, then wait."""
        wanted = handler.get("key")
        if wanted is not None and wanted != key:
            return
        self.log.info("%s: waiting (key %s)", handler.name, key, extra={"shard": shard})
        await handler.wait_for_message(self.breakpoint_timeout)

    async def put(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        replicate = parse_bool(request.query.get("replicate", "true"), "replicate")
        value = await request.read()
        shard = self.shard_of(key)
        injector = self.injector
        pause = functools.partial(self._key_pause, key, shard)
        await self._park(injector.inject_handler(KV_WRITE_KEY_PAUSE, pause, shard=shard), shard)
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
                outcome[result].append(node_id_of(peer))
        return json_response({"key": key, **outcome})

    def _targets(self, name: str, peer: str) -> bool:
        parameters = self.injector.get_parameters(name)
        return parameters is not None and parameters.get("peer") in (None, node_id_of(peer), peer)

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
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: `[[[[...`
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
                    self.coordinator_log.warning(
                        "%s: %r is not a number; taking the whole backlog",
                        COORDINATOR_BATCH_SIZE,
                        size,
                        extra={"shard": 0},
                    )
            for _ in range(min(batch_size, len(self._backlog))):
                self.requests[self._backlog.popleft()] = "done"
            if self._backlog:
                self._work.set()
            else:
                self.coordinator_log.info("%s", COORDINATOR_IDLE, extra={"shard": 0})
