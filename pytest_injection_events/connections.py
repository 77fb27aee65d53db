"""What idle and hostile connections may take from a node (docs/http-api.md, Security).

`ConnectionGuard` wraps the protocol factory of a listening server. It closes a
connection that has not sent its request headers within `header_timeout` and an
idle keep-alive connection after `idle_timeout`; it keeps the process's open
connections under its descriptor limit by closing the oldest idle one when a new
one comes (so a crowd of idle sockets cannot stop the node from accepting); and
it logs running out of descriptors at most once a second. Only asyncio's public
protocol API is used; the guard learns a request began or ended from a
middleware (`guard.middleware`).

The event stream's writing is bounded here too: `write_frames` in awaited pieces,
`StallWatchdog` for a reader whose writes stay blocked, and `direct_push`, the hit's
own write to a waiting reader, only where nothing is left to send.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from .compat import direct_chunk_writer
from .events import Record

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 30.0
#: Descriptors left for everything but settled connections: asyncio accepts up to a
#: backlog's worth (128) in one go before the oldest idle ones can be closed, and files,
#: the loop and a node's own client sessions need some.
RESERVED_DESCRIPTORS = 256
ACCEPT_ERROR_LOG_INTERVAL = 1.0
#: The stream is written in pieces of about this size, each awaited: a reader that does
#: not read holds at most a piece or two in the node, never a copy of its replay.
WRITE_CHUNK = 64 * 1024

_log = logging.getLogger("pytest_injection_events.server")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Connections open in this process, over every guard: descriptors are per process.
_open_lock = threading.Lock()
_open_total = 0


def descriptor_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not on Unix: no such limit to keep under
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def default_max_connections() -> int | None:
    limit = descriptor_limit()
    return None if limit is None else max(16, limit - RESERVED_DESCRIPTORS)


class _Guarded(asyncio.Protocol):
    """One connection: forwards everything to the real protocol, times its idleness."""

    __slots__ = ("busy", "guard", "inner", "started", "timer", "transport")

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.busy = 0  # requests in progress
        self.started = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.guard._admit(self):
            transport.close()
            return
        self.started = True
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard._forget(self)
        if self.started:
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.busy and self.guard._idle.get(self):
            self.guard._headers_started(self)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class ConnectionGuard:
    """A protocol factory around `factory` (see the module's docstring)."""

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        *,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_connections: int | None = None,
    ) -> None:
        if header_timeout <= 0 or idle_timeout <= 0:
            raise ValueError("header_timeout and idle_timeout must be positive")
        self._factory = factory
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections or default_max_connections()
        self._connections: dict[Any, _Guarded] = {}  # transport -> connection
        #: Connections with no request in progress, oldest first; the value says whether
        #: the idle keep-alive timer runs (True) or the header one (False).
        self._idle: dict[_Guarded, bool] = {}
        self.closed_idle = 0  # connections closed by a timeout or to make room
        self.refused = 0  # connections closed at once: no room and nothing idle

    def __call__(self) -> asyncio.Protocol:
        return _Guarded(self, self._factory())

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def _admit(self, conn: _Guarded) -> bool:
        global _open_total
        limit = self.max_connections
        with _open_lock:
            crowded = limit is not None and _open_total >= limit
            if not crowded:
                _open_total += 1
        if crowded:
            if not self._idle:
                self.refused += 1
                return False
            oldest = next(iter(self._idle))
            self._close(oldest)  # its slot is ours: forget it now, not when it is gone
            with _open_lock:
                _open_total += 1
        self._connections[conn.transport] = conn
        self._idle[conn] = False
        self._arm(conn, self.header_timeout)
        return True

    def _forget(self, conn: _Guarded) -> None:
        global _open_total
        if self._connections.pop(conn.transport, None) is not None:
            with _open_lock:
                _open_total -= 1
        self._idle.pop(conn, None)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None

    def _close(self, conn: _Guarded) -> None:
        self.closed_idle += 1
        transport = conn.transport
        self._forget(conn)
        if transport is not None:
            transport.close()

    def _arm(self, conn: _Guarded, seconds: float) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
        loop = asyncio.get_running_loop()
        conn.timer = loop.call_later(seconds, self._expired, conn)

    def _expired(self, conn: _Guarded) -> None:
        conn.timer = None
        if not conn.busy and conn in self._idle:
            self._close(conn)

    def _headers_started(self, conn: _Guarded) -> None:
        """A kept-alive connection began its next request: its headers get the header
        timeout, if that ends before the idle timeout would have."""
        self._idle[conn] = False
        timer = conn.timer
        loop = asyncio.get_running_loop()
        if timer is None or timer.when() > loop.time() + self.header_timeout:
            self._arm(conn, self.header_timeout)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the connection busy while a request is handled (no timeout applies)."""
        conn = self._connections.get(request.transport)
        if conn is None:
            return await handler(request)
        conn.busy += 1
        self._idle.pop(conn, None)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        try:
            return await handler(request)
        finally:
            conn.busy -= 1
            if not conn.busy and conn.transport in self._connections:
                self._idle[conn] = True
                self._arm(conn, self.idle_timeout)


class AcceptErrorLimiter:
    """A loop exception handler that reports running out of descriptors on accept at
    most once every `interval` seconds (asyncio reports every failed accept, with a
    traceback, up to a backlog's worth a second) and hands anything else on."""

    def __init__(
        self,
        previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = None,
        interval: float = ACCEPT_ERROR_LOG_INTERVAL,
    ) -> None:
        self.previous = previous
        self.interval = interval
        self._last = -float("inf")
        self.suppressed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            now = time.monotonic()
            if now - self._last < self.interval:
                self.suppressed += 1
                return
            self._last = now
            more = f" ({self.suppressed} more since the last report)" if self.suppressed else ""
            self.suppressed = 0
            _log.warning("cannot accept connections: %s%s", exc.strerror or exc, more)
            return
        if self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)


def limit_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Install `AcceptErrorLimiter` on `loop` (once; it keeps a handler already set)."""
    current = loop.get_exception_handler()
    if not isinstance(current, AcceptErrorLimiter):
        loop.set_exception_handler(AcceptErrorLimiter(current))


async def write_frames(
    watchdog: StallWatchdog, response: web.StreamResponse, batch: list[Any]
) -> None:
    """Write the records' shared frames in pieces of about WRITE_CHUNK bytes."""
    if len(batch) == 1:
        await watchdog.write(response, batch[0].frame)
        return
    piece: list[bytes] = []
    size = 0
    for record in batch:
        frame = record.frame
        piece.append(frame)
        size += len(frame)
        if size >= WRITE_CHUNK:
            await watchdog.write(response, b"".join(piece))
            piece, size = [], 0
    if piece:
        await watchdog.write(response, b"".join(piece))


def direct_push(
    request: web.Request, writer: AbstractStreamWriter | None
) -> Callable[[Record], bool] | None:
    """A reader's push hook (`Subscription.push`), or None where the response cannot take
    one: the hit writes its record's frame, one chunk straight to the socket, to a reader
    waiting caught up, when nothing is left to send on the connection (so the write never
    waits, and the stall watchdog misses no blocked write); else it says False and the
    reader's task writes the record, as always."""
    write = direct_chunk_writer(request, writer)
    if write is None:
        return None

    def push(record: Record) -> bool:
        return write(record.frame)

    return push


class StallWatchdog:
    """Drops the connection of a reader a write to which stays blocked `timeout` seconds:
    it takes nothing, whether or not new events come. One timer per reader, re-armed
    only when it fires, so a write costs two attribute stores."""

    def __init__(self, request: web.Request, timeout: float) -> None:
        self._request = request
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._since: float | None = None  # when the write in progress began
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(timeout, self._check)

    async def write(self, response: web.StreamResponse, data: bytes) -> None:
        self._since = self._loop.time()
        await response.write(data)
        self._since = None

    def _check(self) -> None:
        since = self._since
        now = self._loop.time()
        if since is not None and now - since >= self._timeout:
            self._timer = None
            transport = self._request.transport
            if transport is not None:
                _log.info("dropping a stalled event stream reader (%s)", self._request.remote)
                transport.abort()
            return
        due = self._timeout if since is None else since + self._timeout - now
        self._timer = self._loop.call_later(due, self._check)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def set_send_timeout(request: web.Request, seconds: float | None) -> None:
    """Let the kernel drop the connection when what is sent stays unacknowledged this
    long (TCP_USER_TIMEOUT, Linux): a peer that vanished is found without writing more."""
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    transport = request.transport
    if seconds is None or option is None or transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, option, int(seconds * 1000))
