"""What every per-node event source shares, and what a source needs from its stream.

A source turns one node's activity into `InjectionEvent`s in that node's order
and hands each to the stream with the node's key and *life* (restarts seen).
Three kinds exist: `stream_source` (SSE), `log_source` (the node's log file),
`poll_source` (`/enters`). See docs/design.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Protocol

import aiohttp

from .errors import NotAnInjectionNode, StreamConnectError
from .event_schema import InjectionEvent
from .protocol import PREFIX, auth_headers

_log = logging.getLogger("pytest_injection_events.client")


class StreamHost(Protocol):
    """The side of `InjectionEventStream` its sources see."""

    @property
    def session(self) -> aiohttp.ClientSession: ...

    token: str | None
    connect_timeout: float
    read_timeout: float
    opened_at: float
    injections: list[str]
    phases: list[str]

    def deliver(self, event: InjectionEvent, key: str, life: int) -> None: ...

    def deliver_many(self, events: Sequence[InjectionEvent], key: str, life: int) -> None: ...

    def restarted(self, node_id: str, why: str) -> None: ...


class NodeSource:
    """One node's events from one place. `phases` None: it can give every phase."""

    kind = "a source"
    phases: frozenset[str] | None = None
    shards = True  # its events say which shard

    def __init__(self, host: StreamHost, url: str, node_id: str) -> None:
        self.host = host
        self.url = url
        self.node_id = node_id
        self.life = 0
        self.seq = 0  # the last seq of this life handed to the stream
        self.down_since: float | None = None
        self.reconnects = 0

    def deliver(self, event: InjectionEvent) -> None:
        self.host.deliver(event, self.url, self.life)

    def gives(self, phase: str) -> bool:
        return self.phases is None or phase in self.phases

    async def start(self, history: bool) -> None:
        """Begin reading; with `history`, first what the node did since the stream opened."""
        raise NotImplementedError

    async def position(self) -> tuple[int, int]:
        """(life, seq) of the node now: what a mark taken now records."""
        return self.life, self.seq

    def watch(self, name: str) -> None:
        """A wait for `name` began that this node may satisfy (polling needs to know)."""

    def unwatch(self, name: str) -> None:
        """That wait ended."""

    async def close(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel a source's reader task and wait until it is over.

    Cancelled again until it ends: on Python 3.10 and 3.11, `asyncio.wait_for` returns
    its inner result instead of raising when the cancellation and that result arrive
    together (python/cpython#86296), and the task would read on with a cancellation
    already spent, holding the stream's close (and the test) forever."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.1)
    if not task.cancelled() and task.exception() is not None:
        _log.debug("a source's task ended with %r", task.exception())


async def check_injection_node(host: StreamHost, url: str) -> None:
    """Refuse a target whose `GET .../injection` is not a JSON array: it is no injection node."""
    try:
        async with host.session.get(
            f"{url}{PREFIX}/injection",
            headers=auth_headers(host.token),
            timeout=aiohttp.ClientTimeout(total=host.connect_timeout),
        ) as response:
            status, body = response.status, await response.read()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise StreamConnectError(f"cannot reach {url}: {str(exc) or type(exc).__name__}") from exc
    if status in (401, 403):
        raise StreamConnectError(f"{url} refused the injection API: {status} {_reason(body)}")
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if status != 200 or not isinstance(answer, list):
        raise NotAnInjectionNode(
            f"{url} is not an injection node: GET {PREFIX}/injection answered {status} "
            f"{_reason(body)!r} where a JSON array of enabled injections was expected"
        )


def _reason(body: bytes) -> str:
    text = body[:300].decode("utf-8", "replace")
    try:
        return str(json.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        return text
