"""A node's events from its SSE stream (`/events`): push, every phase, replay on resume.

A dropped connection is resumed with Last-Event-ID and the node's boot id, so
nothing is lost; a restart (a new boot id) is a new life read from its first
event. See docs/design.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from .errors import InjectionEventsError, StreamConnectError
from .event_schema import GAP, GAP_SLOW_CLIENT, InjectionEvent
from .http_stream import HttpStream, open_http_stream
from .protocol import BOOT_HEADER, EVENTS_PATH, LAST_SEQ_HEADER, NODE_HEADER, auth_headers
from .source import NodeSource, StreamHost, stop_task
from .sse import SSEDecoder

#: Reconnect at once, then back off to this many seconds between attempts.
RECONNECT_DELAYS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
#: We ask for a heartbeat this often, and take a stream silent for the read timeout
#: as dead (a vanished host never closes the connection).
HEARTBEAT = 5.0
#: An injection filter no event matches: a request that only reads the stream's headers.
_PROBE = "pytest-injection-events.position"

_log = logging.getLogger("pytest_injection_events.client")

#: The keys of every event but a gap, as the node writes them (docs/http-api.md).
_EVENT_FIELDS = tuple(
    "injection type phase shard node seq timestamp enter_count one_shot parameters".split()
)
_FIELD_COUNT = len(_EVENT_FIELDS)
#: The decoder's scanner itself (`raw_decode` without its Python frame): StopIteration
#: when the text does not start with a JSON value.
_scan: Callable[[str, int], tuple[Any, int]] = vars(json.JSONDecoder())["scan_once"]


def _scan_whole(data: str) -> Any:
    """`json.loads` without its checks and frames (the usual event has none to fail)."""
    obj, end = _scan(data, 0)
    if end != len(data):
        raise ValueError("extra data")
    return obj


#: What decodes an event's `data:` on the hot path; ValueError (or StopIteration) when
#: it is not one JSON value. Whatever it refuses goes on to `json.loads`, the reference.
fast_loads: Callable[[str], Any] = _scan_whole
try:  # the optional `speedups` extra: 0.7 us an event against 1.8 (docs/benchmarks.md)
    from orjson import loads as fast_loads
except ImportError:  # the lowest row of .ci/matrix runs without it; tests swap it too
    pass
_new = object.__new__
_set = object.__setattr__


def json_decoder() -> str:
    """Which decoder reads events here, for reports: `orjson X.Y` or `json (stdlib)`."""
    if fast_loads is _scan_whole:
        return "json (stdlib)"
    module = getattr(fast_loads, "__module__", None) or "orjson"
    version = getattr(sys.modules.get(module), "__version__", "")
    return f"{module} {version}".strip()


def parse_event(data: str, node: str) -> InjectionEvent:
    """The event a `data:` field carries; ValueError if it is none.

    The usual event (our node's keys, no more, no fewer; numbers of the
    types our node writes, a node id, a parameters object) has its values set as the
    event's attributes, one by one: the same event `InjectionEvent.from_dict` makes, in
    half the time, which is most of what a reader spends per event. (Not the decoded
    object as the instance's `__dict__`: faster still, but then each kept event is two
    objects for the garbage collector instead of one, and its full passes over a
    stream's kept events cost more than the build saves: docs/benchmarks.md.) Anything
    else goes through `json.loads` and `from_dict`, the reference; so does what orjson
    reads differently (it turns integers beyond 64 bits into floats)."""
    try:
        obj = fast_loads(data)
    except (ValueError, StopIteration):
        obj = None
    if type(obj) is dict and len(obj) == _FIELD_COUNT:
        try:  # all ten there, and no other: the count says so
            seq, enter_count, timestamp, shard = (
                obj["seq"],
                obj["enter_count"],
                obj["timestamp"],
                obj["shard"],
            )
            phase, parameters, origin = obj["phase"], obj["parameters"], obj["node"]
            if (
                type(seq) is int
                and type(enter_count) is int
                and type(timestamp) is float
                and (shard is None or type(shard) is int)
                and type(phase) is str
                and type(parameters) is dict
                and origin
            ):
                # Unrolled, not a loop over the names: a quarter less time per event.
                event = _new(InjectionEvent)
                _set(event, "injection", obj["injection"])
                _set(event, "type", obj["type"])
                _set(event, "phase", phase)
                _set(event, "shard", shard)
                _set(event, "node", origin)
                _set(event, "seq", seq)
                _set(event, "timestamp", timestamp)
                _set(event, "enter_count", enter_count)
                _set(event, "one_shot", obj["one_shot"])
                _set(event, "parameters", parameters)
                return event
        except KeyError:
            pass
    decoded = json.loads(data)
    # from_dict expects a mapping, and takes any phase: the reader needs a name.
    if not isinstance(decoded, dict) or not isinstance(decoded.get("phase"), str):
        raise ValueError(f"not an injection event: {decoded!r}")
    return InjectionEvent.from_dict(decoded, node=node)


class NoStream(InjectionEventsError):
    """The node has no event stream (404, or not `text/event-stream`)."""


class StreamSource(NodeSource):
    kind = "event stream"

    def __init__(self, host: StreamHost, url: str, node_id: str) -> None:
        super().__init__(host, url, node_id)
        self.boot: str | None = None
        self.last_id: str | None = None
        self._history_until = 0  # seqs up to this were replayed from before the attach
        self._held_gap: InjectionEvent | None = None
        #: Every phase: `phase=all`; a node from before it existed sends them all unasked.
        self._all_phases = [("phase", "all")]
        self._response: HttpStream | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, history: bool) -> None:
        """Connect once; raise NoStream or StreamConnectError if the node cannot stream."""
        if history:
            self.last_id = "0"  # all it kept; what is older than the stream is dropped
        self._response = await self._connect(history)
        self._task = asyncio.create_task(self._run(), name=f"injection-events {self.url}")

    def _params(self, *, probe: bool = False) -> list[tuple[str, str]]:
        host = self.host
        if probe:
            return [("injection", _PROBE)]
        params = [("injection", name) for name in host.injections]
        params += [("phase", p) for p in host.phases] or self._all_phases
        params.append(("heartbeat", f"{min(HEARTBEAT, host.read_timeout / 4):g}"))
        return params

    async def _get(self, params: list[tuple[str, str]], headers: dict[str, str]) -> HttpStream:
        host = self.host
        headers = {"Accept": "text/event-stream", **auth_headers(host.token), **headers}
        try:
            # Bounded up to the headers: a stopped or wedged node accepts and never answers.
            response = await open_http_stream(
                self.url + EVENTS_PATH,
                params,
                headers,
                connect_timeout=host.connect_timeout,
                read_timeout=host.read_timeout,
            )
        except asyncio.TimeoutError as exc:
            raise StreamConnectError(
                f"cannot open the event stream of {self.url}: no answer within "
                f"{host.connect_timeout:g}s"
            ) from exc
        except OSError as exc:
            raise StreamConnectError(f"cannot open the event stream of {self.url}: {exc}") from exc
        if response.status == 200 and response.content_type == "text/event-stream":
            return response
        try:
            body = await asyncio.wait_for(response.text(), host.connect_timeout)
        except (OSError, asyncio.TimeoutError):
            body = ""
        finally:
            response.close()
        if response.status == 404 or response.status == 200:
            raise NoStream()
        if response.status == 400 and ("phase", "all") in params and "'all'" in body:
            self._all_phases = []
            return await self._get([p for p in params if p != ("phase", "all")], headers)
        try:
            reason = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            reason = body[:300] or response.reason
        raise StreamConnectError(
            f"cannot open the event stream of {self.url}: {response.status} {reason}"
        )

    async def _connect(self, history: bool = False) -> HttpStream:
        headers: dict[str, str] = {}
        params = self._params()
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
            if self.boot is not None:
                params.append(("boot", self.boot))
        response = await self._get(params, headers)
        self.node_id = response.headers.get(NODE_HEADER.lower()) or self.node_id
        last_seq = response.headers.get(LAST_SEQ_HEADER.lower())
        boot = response.headers.get(BOOT_HEADER.lower())
        if history:
            self._history_until = int(last_seq) if last_seq and last_seq.isdigit() else 0
        if self.last_id is None:
            # Resume after what the node had when we subscribed, even if no event came yet.
            self.last_id = last_seq
        if self.boot is not None and boot is not None and boot != self.boot:
            # The node replays its new life from the start (we sent the old boot): our
            # cursor in this life is 0 until its events arrive, whatever cuts come first.
            self.life += 1
            self.last_id = "0"
            self.seq = 0
            self._history_until = 0
            self.host.restarted(self.node_id, f"new boot {boot}")
        self.boot = boot
        self.down_since = None
        return response

    async def position(self) -> tuple[int, int]:
        """The node's last seq now, read from the headers of a stream that asks for nothing."""
        try:
            response = await self._get(self._params(probe=True), {})
        except (StreamConnectError, NoStream):
            return self.life, self.seq
        last_seq = response.headers.get(LAST_SEQ_HEADER.lower(), "")
        boot = response.headers.get(BOOT_HEADER.lower())
        response.close()
        if not last_seq.isdigit():
            return self.life, self.seq
        # A boot we have not read yet is the next life: our reader meets it on reconnect.
        life = self.life if boot in (None, self.boot) else self.life + 1
        return life, int(last_seq)

    async def _run(self) -> None:
        while True:
            assert self._response is not None
            try:
                await self._read(self._response)
            except (OSError, asyncio.TimeoutError) as exc:
                _log.debug("stream of %s dropped: %r", self.url, exc)
            finally:
                self._response.close()
                self._response = None
            self._response = await self._reconnect()

    async def _reconnect(self) -> HttpStream:
        self.down_since = self.down_since or time.time()
        attempt = 0
        while True:
            await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
            attempt += 1
            try:
                response = await self._connect()
            except (StreamConnectError, NoStream) as exc:
                if attempt == 3:
                    _log.warning("event stream of %s lost; still reconnecting: %s", self.url, exc)
                continue
            self.reconnects += 1
            _log.info("event stream of %s resumed after seq %s", self.url, self.last_id)
            return response

    async def _read(self, response: HttpStream) -> None:
        """Events reach the waits from the callback that read them: no loop turn added."""
        feed = SSEDecoder().feed_data
        response.read_body(lambda chunk: self._take(*feed(chunk)))
        await response.ended()

    def _take(self, messages: list[str], last_id: str | None) -> None:
        """The events of one read, delivered in one call: the usual event (numbered, after
        the history we skip, no gap held back) joins the batch; any other flushes it and
        goes through `_dispatch`, so the order stays the node's. The resume point moves
        past the read once it is delivered (an error before then replays it, not skips)."""
        batch: list[InjectionEvent] = []
        node_id = self.node_id
        for data in messages:
            try:
                event = parse_event(data, node_id)
            except ValueError as exc:
                _log.warning("ignoring a malformed event from %s: %s", self.url, exc)
                continue
            seq = event.seq
            if (
                seq is not None
                and seq > self._history_until
                and event.phase != GAP
                and self._held_gap is None
            ):
                batch.append(event)
                continue
            if batch:
                self._deliver_batch(batch)
                batch = []
            self._dispatch(event)
        if batch:
            self._deliver_batch(batch)
        if last_id is not None:
            self.last_id = last_id

    def _deliver_batch(self, batch: list[InjectionEvent]) -> None:
        self.seq = batch[-1].seq or self.seq  # never None: only numbered events batch
        self.host.deliver_many(batch, self.url, self.life)

    def _dispatch(self, event: InjectionEvent) -> None:
        if event.phase == GAP:
            if event.reason == GAP_SLOW_CLIENT:
                _log.warning(
                    "the node %s cut this stream off as too slow at seq %s; resuming",
                    self.url,
                    event.missed_from,
                )
            elif self._history_until:
                self._held_gap = event  # lost before the stream opened, or after? see below
            else:
                self.deliver(event)
            return
        if event.seq is not None and event.seq <= self._history_until:
            if event.timestamp < self.host.opened_at:
                self._held_gap = None  # what the node dropped was older still
                self.seq = event.seq
                return
        if self._held_gap is not None:
            gap, self._held_gap = self._held_gap, None
            self.deliver(gap)
        if event.seq is not None:
            self.seq = event.seq
        self.deliver(event)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_task(task)
        if self._response is not None:
            self._response.close()
            self._response = None
