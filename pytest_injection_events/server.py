"""The HTTP API of a node: ScyllaDB's `/v2/error_injection/*` plus the SSE stream.

`InjectionRoutes` adds the routes to any aiohttp application (for services that
embed the injector); `InjectionServer` runs an application with them, the JSON
error, token and Host middlewares, the loopback-only default and the guard
against idle connections (docs/http-api.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from .compat import request_handler_factory
from .connections import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    ConnectionGuard,
    StallWatchdog,
    direct_push,
    limit_accept_errors,
    set_send_timeout,
    write_frames,
)
from .errors import InjectionEventsError
from .event_schema import ALL_PHASES, PHASES
from .events import DEFAULT_MAX_PENDING, EventLog
from .injector import Injector
from .protocol import (
    BOOT_HEADER,
    DEFAULT_PORT,
    LAST_SEQ_HEADER,
    NODE_HEADER,
    PREFIX,
    url_host,
)
from .security import (
    bearer_auth,
    check_bind_address,
    error_response,
    host_check,
    json_response,
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


class BadRequest(web.HTTPBadRequest, InjectionEventsError):
    """A 400 whose reason the error middleware puts in the JSON body."""

    def __init__(self, reason: str) -> None:
        super().__init__(text=reason)


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
    """The endpoints of one node (docs/http-api.md), over its injector and event log."""

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
        # A hit that pushed its event to readers hands them the CPU, once (`direct_push`).
        event_log.after_push = _hand_over_cpu

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
        watchdog = StallWatchdog(request, self.stall_timeout)
        try:
            set_send_timeout(request, self.send_timeout)
            writer = await response.prepare(request)
            # No blank line after `retry:` nor after a ping: a blank line ends a block,
            # and readers such as httpx-sse dispatch a block without data as an event
            # whose empty data no JSON consumer can parse.
            await watchdog.write(response, f"retry: {RETRY_MS}\n".encode())
            subscription.push = direct_push(request, writer)
            loop = asyncio.get_running_loop()
            ping_at = loop.time() + heartbeat
            while True:
                batch = await subscription.next_batch(max(0.0, ping_at - loop.time()))
                if not batch and subscription.closed:
                    break
                if batch:
                    await write_frames(watchdog, response, batch)
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
