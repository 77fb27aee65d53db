"""The HTTP API of a node: ScyllaDB's `/v2/error_injection/*` plus the SSE stream.

`InjectionRoutes` adds the routes to any aiohttp application (for services that
embed the injector); `InjectionServer` runs an application with them, the JSON
error, token and Host middlewares, the loopback-only default and the guard
against idle connections (docs/http-api.md).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from .compat import request_handler_factory
from .connections import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    ConnectionGuard,
    limit_accept_errors,
)
from .events import ALL_PHASES, DEFAULT_MAX_PENDING, PHASES, EventLog
from .injector import Injector
from .protocol import (
    BOOT_HEADER,
    DEFAULT_PORT,
    LAST_SEQ_HEADER,
    NODE_HEADER,
    PREFIX,
    url_host,
)

MAX_BODY = 1024 * 1024
MAX_NAME = 1024
#: The longest request line the HTTP layer takes (aiohttp's default is 8190 bytes). A
#: name of MAX_NAME characters is up to 12 bytes each percent-encoded: it must reach the
#: API, to be served, or refused as too long in JSON, not cut off by the HTTP parser.
MAX_REQUEST_LINE = 64 * 1024
DEFAULT_MAX_CLIENTS = 256
DEFAULT_HEARTBEAT = 15.0
#: Seconds a request body may take to arrive: a body aiohttp's parser fails on after the
#: handler began to read it (a bad chunk) never ends, so its reader must not wait forever.
DEFAULT_BODY_TIMEOUT = 10.0
#: A reader whose stream takes nothing this long (a write to it stays blocked) is dropped,
#: so a stalled reader keeps neither memory nor a client slot.
DEFAULT_STALL_TIMEOUT = 5.0
#: The stream is written in pieces of about this size, each awaited: a reader that does
#: not read holds at most a piece or two in the node, never a copy of its replay.
WRITE_CHUNK = 64 * 1024
#: How many connections wait in the kernel to be accepted.
BACKLOG = 128
#: InjectionServer's own options (the rest are InjectionRoutes').
SERVER_OPTIONS = frozenset({"allowed_hosts", "header_timeout", "idle_timeout", "max_connections"})
RETRY_MS = 1000
#: A push of at most this many events is what a waiting test is blocked on: give it the
#: CPU at once (see `_hand_over_cpu`). A bigger batch is a burst, where readers are busy.
HAND_OVER_MAX_BATCH = 8

_log = logging.getLogger("pytest_injection_events.server")
#: Linux runs a reader woken by a socket write on the writer's CPU, where it waits for
#: whatever the node does next (its log lines, the released work: 0.2-0.3 ms) before it
#: can read the event. Yielding right after the push lets it read first (-0.25 ms per hit
#: in benchmarks/); when nothing else is runnable on this CPU it returns at once.
_hand_over_cpu: Callable[[], None] = getattr(os, "sched_yield", lambda: None)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(web.HTTPBadRequest):
    """A 400 whose reason the error middleware puts in the JSON body."""

    def __init__(self, reason: str) -> None:
        super().__init__(text=reason)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(data), content_type="application/json", charset="utf-8"
    )


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    response = json_response({"error": message}, status)
    if headers:
        response.headers.update(headers)
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answers `{"error": "..."}`; an unexpected exception is a 500 that is logged."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        if exc.status == 405:
            message = f"method {request.method} not allowed on {request.path}"
        elif exc.status == 404:
            message = f"no such endpoint: {request.method} {request.path}"
        elif exc.status == 413:
            message = f"request body too large: the limit is {MAX_BODY} bytes"
        headers = {
            k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")
        }
        return error_response(exc.status, message, headers)
    except web.RequestPayloadError as exc:  # a body we cannot decode: bad gzip, cut chunks
        reason = getattr(exc.__cause__, "message", None) or str(exc)
        response = error_response(400, f"cannot read the request body: {reason}")
        response.force_close()  # the rest of the body is unreadable: this connection is done
        return response
    except Exception as exc:  # a bug of ours: say so in JSON and keep serving
        _log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")


def bearer_auth(token: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    # hmac.compare_digest takes a time that depends on the lengths only, never on where
    # the bytes differ. The scheme is no secret: it is matched apart, in any case (RFC
    # 9110 §11.1: `bearer` is `Bearer`). Bytes are compared as they came on the wire.
    expected = token.encode("utf-8", "surrogateescape")

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        try:
            given = credentials.lstrip(" ").encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            given = b""
        if not hmac.compare_digest(given, expected) or scheme.lower() != "bearer":
            return error_response(
                401,
                "missing or wrong bearer token",
                {"WWW-Authenticate": 'Bearer realm="injection"'},
            )
        return await handler(request)

    return check_token


def _text(value: str, what: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{what} is not valid UTF-8 text") from None
    return value


def parse_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if len(name) > MAX_NAME:
        raise BadRequest(
            f"injection name too long: {len(name)} characters, the limit is {MAX_NAME}"
        )
    return _text(name, "injection name")


def parse_bool(value: str | None, what: str) -> bool:
    if value is None:
        return False
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise BadRequest(f"{what} must be true, false, 1 or 0 (any case), got {value!r}")


def _refuse_constant(token: str) -> Any:
    raise ValueError(f"{token} is not allowed")


def parse_parameters(body: bytes) -> dict[str, str]:
    """A JSON object of strings; numbers and booleans become their string form, as
    ScyllaDB's test client sends them; anything nested is refused."""
    if not body.strip():
        return {}
    try:
        data = json.loads(
            body.decode("utf-8"), parse_int=str, parse_float=str, parse_constant=_refuse_constant
        )
    except UnicodeDecodeError:
        raise BadRequest("body is not UTF-8") from None
    except ValueError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    except RecursionError:  # `[[[[...` deeper than the interpreter's stack
        raise BadRequest("body must be a JSON object of strings; it nests far too deep") from None
    if not isinstance(data, dict):
        raise BadRequest(f"body must be a JSON object of strings, got {type(data).__name__}")
    parameters: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, bool):
            value = str(value)
        elif not isinstance(value, str):
            kind = "null" if value is None else type(value).__name__
            raise BadRequest(f"parameter {key!r} must be a string, number or boolean, got {kind}")
        parameters[_text(key, "parameter name")] = _text(value, f"parameter {key!r}")
    return parameters


def parse_seq(value: str, what: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise BadRequest(f"{what} must be a non-negative integer (an event seq), got {value!r}")
    return int(value)


def parse_heartbeat(value: str | None, default: float) -> float:
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0.01 <= seconds <= 3600:
        raise BadRequest(f"heartbeat must be a number of seconds from 0.01 to 3600, got {value!r}")
    return seconds


class InjectionRoutes:
    """The §5 endpoints of one node, over its injector and event log."""

    def __init__(
        self,
        injector: Injector,
        event_log: EventLog,
        *,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        max_pending: int = DEFAULT_MAX_PENDING,
        heartbeat: float = DEFAULT_HEARTBEAT,
        send_timeout: float | None = 120.0,
        boot_id: str | None = None,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    ) -> None:
        self.injector = injector
        self.body_timeout = body_timeout
        self.stall_timeout = stall_timeout
        self.event_log = event_log
        self.max_clients = max_clients
        self.max_pending = max_pending
        self.heartbeat = heartbeat
        self.send_timeout = send_timeout
        # The boot is the life of the event numbering, so it is the log's: a node restarted
        # around the same log (FakeNode.stop/start) is the same life and resumes as one.
        self.boot_id = boot_id or event_log.boot_id
        self.clients = 0

    def add_to(self, app: web.Application) -> None:
        # `[^/]+`, not aiohttp's default `[^{}/]+`: a name may hold braces like any other
        # character (`%2F` still reaches the handler as part of the one segment).
        one = PREFIX + "/injection/{name:[^/]+}"
        app.router.add_post(one, self.enable)
        app.router.add_delete(one, self.disable)
        app.router.add_get(one, self.get_one)
        app.router.add_get(PREFIX + "/injection", self.list_enabled)
        app.router.add_delete(PREFIX + "/injection", self.disable_all)
        app.router.add_post(one + "/message", self.message)
        app.router.add_get(one + "/enters", self.enters)
        app.router.add_get(PREFIX + "/points", self.points)
        app.router.add_get(PREFIX + "/events", self.events, allow_head=False)
        app.on_shutdown.append(self._close_streams)

    async def enable(self, request: web.Request) -> web.Response:
        name = parse_name(request)
        one_shot = parse_bool(request.query.get("one_shot"), "one_shot")
        body = await self._read_body(request)
        if isinstance(body, web.Response):
            return body
        parameters = parse_parameters(body)
        self.injector.enable(name, one_shot=one_shot, parameters=parameters)
        return json_response({"injection": name, "one_shot": one_shot, "parameters": parameters})

    async def _read_body(self, request: web.Request) -> bytes | web.Response:
        """The body, or the error to answer (then the connection closes, its rest unread).

        A compressed body is refused unread: aiohttp's parser can fail on one after the
        read began without ever ending it (deflate), and ScyllaDB's API takes none."""
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            response = error_response(
                415, f"request bodies are not accepted compressed (Content-Encoding: {encoding})"
            )
        else:
            try:
                return await asyncio.wait_for(request.read(), self.body_timeout)
            except asyncio.TimeoutError:
                response = error_response(
                    408, f"the request body did not arrive within {self.body_timeout:g}s"
                )
        response.force_close()
        return response

    async def disable(self, request: web.Request) -> web.Response:
        name = parse_name(request)
        self.injector.disable(name)
        return json_response({"injection": name, "enabled": False})

    async def get_one(self, request: web.Request) -> web.Response:
        states = self.injector.injection_state(parse_name(request))
        return json_response(
            [
                {
                    "enabled": state.enabled,
                    "parameters": [{"key": k, "value": v} for k, v in state.parameters.items()],
                }
                for state in states
            ]
        )

    async def list_enabled(self, request: web.Request) -> web.Response:
        return json_response(self.injector.enabled_injections())

    async def disable_all(self, request: web.Request) -> web.Response:
        self.injector.disable_all()
        return json_response({"enabled": []})

    async def message(self, request: web.Request) -> web.Response:
        name = parse_name(request)
        self.injector.receive_message(name)
        return json_response({"injection": name, "waiters": self.injector.waiters(name)})

    async def enters(self, request: web.Request) -> web.Response:
        return json_response(self.injector.enter_count(parse_name(request)))

    async def points(self, request: web.Request) -> web.Response:
        counts = self.injector.enter_counts()
        return json_response(
            [
                {"name": p.name, "type": p.kind, "doc": p.doc, "enter_count": counts.get(p.name, 0)}
                for p in self.injector.catalog()
            ]
        )

    async def events(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        injections = [_text(name, "injection filter") for name in query.getall("injection", [])]
        if "" in injections:
            raise BadRequest("injection filter must not be empty")
        phases = query.getall("phase", [])
        unknown = sorted(set(phases) - PHASES - {ALL_PHASES})
        if unknown:
            raise BadRequest(
                f"unknown phase {unknown[0]!r}; expected one of "
                f"{', '.join(sorted(PHASES))} or {ALL_PHASES}"
            )
        heartbeat = parse_heartbeat(query.get("heartbeat"), self.heartbeat)
        after = self._resume_point(request)
        if self.clients >= self.max_clients:
            return error_response(
                503,
                f"too many event stream clients (limit {self.max_clients})",
                {"Retry-After": "1"},
            )
        subscription = self.event_log.subscribe(
            after=after, injections=injections, phases=phases, max_pending=self.max_pending
        )
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "Connection": "keep-alive",
                "X-Accel-Buffering": "no",
                BOOT_HEADER: self.boot_id,
                NODE_HEADER: self.event_log.node_id,
                LAST_SEQ_HEADER: str(self.event_log.last_seq),
            }
        )
        self.clients += 1
        watchdog = _StallWatchdog(request, self.stall_timeout)
        try:
            _set_send_timeout(request, self.send_timeout)
            await response.prepare(request)
            # No blank line after `retry:` nor after a ping: a blank line ends a block,
            # and readers such as httpx-sse dispatch a block without data as an event
            # whose empty data no JSON consumer can parse.
            await watchdog.write(response, f"retry: {RETRY_MS}\n".encode())
            loop = asyncio.get_running_loop()
            ping_at = loop.time() + heartbeat
            while True:
                batch = await subscription.next_batch(max(0.0, ping_at - loop.time()))
                if not batch and subscription.closed:
                    break
                if batch:
                    await _write_frames(watchdog, response, batch)
                if loop.time() >= ping_at:  # between whole frames, however busy the stream
                    await watchdog.write(response, b": ping\n")
                    ping_at = loop.time() + heartbeat
                if len(batch) <= HAND_OVER_MAX_BATCH:
                    _hand_over_cpu()
                if subscription.closed:
                    break
            await response.write_eof()
        except ConnectionError:
            pass  # the reader went away; nothing of ours to clean beyond the subscription
        finally:
            self.clients -= 1
            subscription.close()
            watchdog.stop()
        return response

    def _resume_point(self, request: web.Request) -> int | None:
        """The seq to replay after: Last-Event-ID (what a reconnecting EventSource sends)
        wins over `?last_event_id=` (what the first URL carried)."""
        header = request.headers.get("Last-Event-ID", "").strip()
        if header:
            after = parse_seq(header, "Last-Event-ID")
        elif "last_event_id" in request.query:
            after = parse_seq(request.query["last_event_id"], "last_event_id")
        else:
            return None
        boot = request.query.get("boot")
        if boot is not None and boot != self.boot_id:
            return 0  # the reader saw an earlier life of this node: all of this one is new
        return after

    async def _close_streams(self, app: web.Application) -> None:
        self.event_log.close()


async def _write_frames(
    watchdog: _StallWatchdog, response: web.StreamResponse, batch: list[Any]
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


class _StallWatchdog:
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


def _set_send_timeout(request: web.Request, seconds: float | None) -> None:
    """Let the kernel drop the connection when what is sent stays unacknowledged this
    long (TCP_USER_TIMEOUT, Linux): a peer that vanished is found without writing more."""
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    transport = request.transport
    if seconds is None or option is None or transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, option, int(seconds * 1000))


def is_loopback(host: str) -> bool:
    """True if every address `host` names is a loopback address."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_bind_address(host: str, allow_remote: bool) -> None:
    if not allow_remote and not is_loopback(host):
        raise ValueError(
            f"refusing to listen on {host!r}: not a loopback address. The injection API lets "
            "anyone who reaches it stall the node; pass allow_remote=True (--allow-remote) "
            "if that is what you want."
        )


def _host_name(host: str) -> str:
    """The name part of a Host header: `[::1]:80` -> `::1`, `Example.test.:80` -> `example.test`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        host = name
    return host.rstrip(".")


def is_loopback_host(host: str) -> bool:
    """A Host header that names this machine only: a loopback address or `localhost`,
    with any port. No name is resolved: a page's DNS name rebound to 127.0.0.1 is not."""
    name = _host_name(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_check(
    allowed_hosts: Iterable[str] = (),
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """A middleware answering 403 to a request whose `Host` is neither loopback nor one of
    `allowed_hosts` (a name, any port; or `name:port`, that port only): a web page that
    rebinds its DNS name to 127.0.0.1 can then neither read nor drive the node."""
    allowed = {host.strip().lower().rstrip(".") for host in allowed_hosts}
    allowed |= {_host_name(host) for host in allowed if ":" not in host.strip("[]")}

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if host is not None and not is_loopback_host(host):
            given = host.strip().lower().rstrip(".")
            if given not in allowed and _host_name(host) not in allowed:
                shown = host[:200].encode("ascii", "backslashreplace").decode()
                return error_response(
                    403,
                    f"Host {shown!r} is not allowed: this node answers requests for "
                    "localhost and loopback addresses only; start it with --allowed-host "
                    "(allowed_hosts=) to add a name",
                )
        return await handler(request)

    return check_host


class InjectionServer:
    """Serves one injector's API and event stream on host:port until stopped.

    Add routes of your own to `.app` before `start()`. Without a token, requests
    must name a loopback host or one of `allowed_hosts` (not checked when
    `allow_remote` is given without `allowed_hosts`: the token protects such a
    node). Idle connections are bounded by `header_timeout`, `idle_timeout` and
    `max_connections` (docs/http-api.md, Security).
    """

    def __init__(
        self,
        injector: Injector,
        event_log: EventLog,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        token: str | None = None,
        allow_remote: bool = False,
        allowed_hosts: Iterable[str] = (),
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_connections: int | None = None,
        **route_options: Any,
    ) -> None:
        check_bind_address(host, allow_remote)
        self.host = host
        self.port = port
        self.allowed_hosts = (
            [allowed_hosts] if isinstance(allowed_hosts, str) else list(allowed_hosts)
        )
        self._guard_options: dict[str, Any] = {
            "header_timeout": header_timeout,
            "idle_timeout": idle_timeout,
            "max_connections": max_connections,
        }
        ConnectionGuard(lambda: asyncio.Protocol(), **self._guard_options)  # checks them now
        self.guard: ConnectionGuard | None = None
        middlewares: list[Any] = [json_errors, self._guard_middleware]
        if token:
            middlewares.append(bearer_auth(token))
        elif self.allowed_hosts or not allow_remote:
            middlewares.append(host_check(self.allowed_hosts))
        self.app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
        self.routes = InjectionRoutes(injector, event_log, **route_options)
        self.routes.add_to(self.app)
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None

    @web.middleware
    async def _guard_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.guard is None:
            return await handler(request)
        return await self.guard.middleware(request, handler)

    @property
    def url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        runner = web.AppRunner(self.app, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        try:
            assert runner.server is not None
            factory = request_handler_factory(
                runner.server, loop, access_log=None, max_line_size=MAX_REQUEST_LINE
            )
            guard = ConnectionGuard(factory, **self._guard_options)
            self._listener = await loop.create_server(
                guard, self.host, self.port, reuse_address=True, backlog=BACKLOG
            )
        except BaseException:
            await runner.cleanup()
            raise
        limit_accept_errors(loop)
        self.guard, self._runner = guard, runner
        if self.port == 0 and self._listener.sockets:
            self.port = self._listener.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()  # accept no more; the runner then closes what is open
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if listener is not None:
            await listener.wait_closed()

    async def __aenter__(self) -> InjectionServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
