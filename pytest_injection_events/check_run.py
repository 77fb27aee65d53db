"""The state of one conformance run, shared by its stages: server, trigger, readers, report.

See docs/conformance.md.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .check_report import CheckError, Report
from .check_transport import (
    Answer,
    Http,
    Received,
    RequestFailed,
    ServerStopped,
    StreamReader,
    StreamRefused,
)
from .check_triggers import CommandTrigger, TriggerFailed, WorkloadTrigger


def record_failure(
    report: Report, check: str, exc: Exception, *, prefix: str = "", checked: bool = True
) -> None:
    """A step that raised: a finding with what went wrong and the request it happened on."""
    request: str | None = None
    if isinstance(exc, StreamRefused):
        detail, request = f"the stream refused: answered {exc.answer.status}", exc.answer.shown()
    elif isinstance(exc, RequestFailed):
        detail, request = exc.reason, exc.request
    else:
        detail = str(exc)
    (report.failed if checked else report.not_checked)(check, prefix + detail, request)


#: Kinds of point that park until a message: a hit on one is released by the check.
PARKING_TYPES = frozenset({"wait_for_message", "handler"})

Trigger = WorkloadTrigger | CommandTrigger


@dataclass
class Hit:
    """One pass through the point: the enter event it produced (None if none came in
    time), what made it, and when it was started (time.time())."""

    event: Received | None
    request: str
    started: float
    error: str | None = None


class CheckRun:
    """A server under check: its REST API, its streams, the trigger, what was enabled."""

    def __init__(
        self,
        http: Http,
        report: Report,
        *,
        trigger: Trigger | None,
        timeout: float,
        hits: int,
        clients: int,
        gap_budget: int,
        log: str | None,
    ) -> None:
        self.http = http
        self.report = report
        self.trigger = trigger
        self.timeout = timeout
        self.hits = hits
        self.clients = clients
        self.gap_budget = gap_budget
        self.log = log
        self.shards = 1
        #: Names no code path hits, for the REST checks and for control events.
        self.scratch = f"injection_events_check_{secrets.token_hex(4)}"
        self.touched: set[str] = set()  # names this run enabled: disabled at the end
        self.readers: list[StreamReader] = []
        self.hits_made = 0

    # -- REST -------------------------------------------------------------------

    def path(self, *segments: str) -> str:
        return self.http.path(*segments)

    async def request(self, method: str, path: str, **kwargs: Any) -> Answer:
        return await self.http.request(method, path, **kwargs)

    async def enable(
        self, name: str, *, one_shot: bool = False, parameters: dict[str, str] | None = None
    ) -> Answer:
        self.touched.add(name)
        params = [("one_shot", "true" if one_shot else "false")]
        return await self.request(
            "POST", self.path("injection", name), params=params, body=parameters or {}
        )

    async def disable(self, name: str) -> Answer:
        return await self.request("DELETE", self.path("injection", name))

    async def enable_point(self, *, one_shot: bool = False) -> Answer:
        assert self.trigger is not None
        return await self.enable(
            self.trigger.point, one_shot=one_shot, parameters=self.trigger.parameters
        )

    # -- streams ----------------------------------------------------------------

    async def open_stream(
        self,
        params: Sequence[tuple[str, str]] = (),
        headers: dict[str, str] | None = None,
        *,
        read: bool = True,
    ) -> StreamReader:
        reader = StreamReader(self.http, params, headers, read=read)
        self.readers.append(reader)
        await reader.open()
        return reader

    async def close_readers(self) -> None:
        readers, self.readers = self.readers, []
        await asyncio.gather(*(r.close() for r in readers), return_exceptions=True)

    # -- hits -------------------------------------------------------------------

    async def run_trigger(self, shard: int | None) -> str:
        """Make the server pass the point once (no event awaited); what did it."""
        assert self.trigger is not None
        try:
            return await self.trigger.run(shard, self.shards)
        except TriggerFailed as exc:
            self._first_failure(exc)
            raise

    def _first_failure(self, exc: TriggerFailed) -> None:
        if self.hits_made == 0:  # it never worked: the check cannot run, not a finding
            raise CheckError(f"the trigger does not work: {exc}") from None

    async def hit(
        self, watch: StreamReader, shard: int | None = None, trigger: Trigger | None = None
    ) -> Hit:
        """Pass the point once and wait for its enter event on `watch` (a reader that gets
        the point's enter events). A parked point (a breakpoint) is released by a message."""
        trigger = trigger or self.trigger
        assert trigger is not None
        point = trigger.point
        before = len(watch.events(point, "enter"))
        started = time.time()
        task = asyncio.ensure_future(trigger.run(shard, self.shards))
        task.add_done_callback(lambda _: watch.poke())

        def arrived() -> bool:
            if len(watch.events(point, "enter")) > before:
                return True
            return task.done() and not task.cancelled() and task.exception() is not None

        await watch.wait(arrived, self.timeout)
        new = watch.events(point, "enter")[before:]
        event = new[0] if new else None
        parked = event is None or (
            isinstance(event.data, dict) and event.data.get("type") in PARKING_TYPES
        )
        if parked and not task.done():
            try:
                await self.request("POST", self.path("injection", point, "message"))
            except ConnectionError:
                pass  # the trigger's own timeout says what went wrong
        try:
            request = await asyncio.wait_for(task, self.timeout)
        except TriggerFailed as exc:
            self._first_failure(exc)
            return Hit(event, str(exc), started, error=str(exc))
        except asyncio.TimeoutError:
            what = f"the trigger did not return within {self.timeout:g}s"
            if parked:
                what += f" (a message to {point!r} did not release it)"
            return Hit(event, what, started, error=what)
        self.hits_made += 1
        return Hit(event, request, started)

    # -- cleanup ----------------------------------------------------------------

    async def clean_up(self) -> None:
        """Close every stream and disable every name this run enabled (best effort)."""
        await self.close_readers()
        for name in sorted(self.touched):
            try:
                await self.disable(name)
            except ConnectionError:
                pass
            except ServerStopped:
                return
