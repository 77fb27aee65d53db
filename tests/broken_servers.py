"""Servers that break the protocol on purpose, one thing each, for the tests of `check`.

Each is our real routes (`InjectionRoutes`) and the fake node's workload on a
plain aiohttp app in the test's own loop, with one switch turned on. A break
changes the server the way a wrong implementation would: the frames it writes,
its numbering, its query handling, its statuses.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from multidict import MultiDict

from pytest_injection_events.events import PHASES, EventLog, Record
from pytest_injection_events.injector import Injector
from pytest_injection_events.node import POINTS, KeyValueWorkload
from pytest_injection_events.protocol import EVENTS_PATH, node_id
from pytest_injection_events.server import InjectionRoutes, json_errors

#: Each break, and the finding `check` must report for it.
BREAKS = {
    "no_id": "stream.framing",
    "skip_ids": "stream.seq",
    "control_in_default": "stream.default_content",
    "no_replay": "lifecycle.reconnect",
    "answers_204": "rest.enable",
    "drop_shard": "shards.delivery",
    "hang_events": "stream.open",
    "hang_rest": "server",
}


class BrokenLog(EventLog):
    """An event log that numbers or frames its events wrongly, or drops shard 1's."""

    def __init__(self, breaks: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.breaks = breaks

    def publish(
        self, injection: str, kind: str, phase: str, shard: int | None, *rest: Any
    ) -> Record:
        if self.breaks == "drop_shard" and shard == 1:
            return Record(None, {})  # as if shard 1 never told the stream
        if self.breaks == "skip_ids":
            self.last_seq += 1  # every other number is never sent
        record = super().publish(injection, kind, phase, shard, *rest)
        if self.breaks == "no_id":
            # Set before any stream writer runs (they run after this returns).
            record._frame = record.frame.split(b"\n", 1)[1]
        return record


def _query_shim(breaks: str | None) -> Any:
    """The default stream as the protocol has it (enter and gap only; `phase=all` is every
    phase), whatever the routes underneath do yet; and the breaks made on the query."""

    answered: list[str] = []

    @web.middleware
    async def shim(request: web.Request, handler: Any) -> web.StreamResponse:
        if breaks == "answers_204" and request.method in ("POST", "DELETE"):
            await handler(request)
            return web.Response(status=204)
        answered.append(request.path)
        if breaks == "hang_rest" and len(answered) > 1:
            await asyncio.Event().wait()  # the first request (the probe) answers, no other
        if request.path != EVENTS_PATH:
            return await handler(request)
        if breaks == "hang_events":
            await asyncio.Event().wait()
        query = MultiDict(request.query)
        phases = query.popall("phase", [])
        if not phases:
            phases = sorted(PHASES) if breaks == "control_in_default" else ["enter", "gap"]
        elif "all" in phases:
            phases = sorted(PHASES)
        query.extend(("phase", p) for p in phases)
        headers = request.headers.copy()
        if breaks == "no_replay":
            query.popall("last_event_id", None)
            headers.popall("Last-Event-ID", None)
        url = request.rel_url.with_query(query)
        return await handler(request.clone(rel_url=url, headers=headers))

    return shim


class BrokenServer:
    """A node on 127.0.0.1 with `breaks` (a key of BREAKS, or None for none)."""

    def __init__(
        self, breaks: str | None = None, *, shards: int = 2, event_capacity: int = 10_000
    ) -> None:
        self.breaks = breaks
        self.injector = Injector(shards=shards, points=POINTS)
        self.event_log = BrokenLog(breaks, capacity=event_capacity)
        self.injector.add_listener(self.event_log.publish)
        self.app = web.Application(middlewares=[json_errors, _query_shim(breaks)])
        InjectionRoutes(self.injector, self.event_log, heartbeat=15.0).add_to(self.app)
        KeyValueWorkload(self.injector, lambda: self.event_log.node_id, list).add_to(self.app)
        self.runner = web.AppRunner(self.app, handler_cancellation=True, shutdown_timeout=0.5)
        self.url = ""

    async def __aenter__(self) -> BrokenServer:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self.event_log.node_id = node_id("127.0.0.1", port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.runner.cleanup()
