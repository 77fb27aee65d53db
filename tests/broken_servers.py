"""Servers that break the protocol on purpose, one thing each, for the tests of `check`.

Each is a real `FakeNode` behind a small HTTP proxy on the test's loop that
breaks one thing of what goes over the wire, as a wrong implementation would:
the frames of the stream, their numbering, the replay, the statuses, an answer
that never comes. Breaking the bytes, not the node's internals, keeps these
servers what a client sees, whatever the node's code becomes.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, MultiDict

from pytest_injection_events.event_schema import PHASES
from pytest_injection_events.node import FakeNode
from pytest_injection_events.protocol import (
    BOOT_HEADER,
    EVENTS_PATH,
    LAST_SEQ_HEADER,
    NODE_HEADER,
    PREFIX,
)

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
PASSED_HEADERS = ("Authorization", "Last-Event-ID", "Content-Type")
STREAM_HEADERS = ("Content-Type", BOOT_HEADER, NODE_HEADER, LAST_SEQ_HEADER)


class BrokenServer:
    """`async with BrokenServer("no_id") as server:` then check `server.url`.
    `breaks` is a key of BREAKS, or None for a proxy that changes nothing."""

    def __init__(
        self, breaks: str | None = None, *, shards: int = 2, event_capacity: int = 10_000
    ) -> None:
        assert breaks is None or breaks in BREAKS, breaks
        self.breaks = breaks
        self.node = FakeNode(shards=shards, event_capacity=event_capacity)
        self.requests = 0
        self.url = ""
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> BrokenServer:
        self.node.start()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.forward)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        self.node.stop()

    def _headers(self, request: web.Request) -> dict[str, str]:
        return {k: request.headers[k] for k in PASSED_HEADERS if k in request.headers}

    async def forward(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.breaks == "hang_rest" and self.requests > 1:
            await asyncio.Event().wait()  # the first request (the probe) answers, no other
        if request.path == EVENTS_PATH:
            return await self.stream(request)
        assert self._session is not None
        async with self._session.request(
            request.method,
            self.node.url + request.path_qs,
            headers=self._headers(request),
            data=await request.read(),
        ) as answer:
            body = await answer.read()
            if (
                self.breaks == "answers_204"
                and request.method in ("POST", "DELETE")
                and request.path.startswith(PREFIX)
                and answer.status == 200
            ):
                return web.Response(status=204)
            kind = answer.headers.get("Content-Type")
            return web.Response(status=answer.status, body=body, headers=_only(kind))

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if self.breaks == "hang_events":
            await asyncio.Event().wait()
        headers = self._headers(request)
        query = self._query(request)
        if self.breaks == "no_replay":
            headers.pop("Last-Event-ID", None)
            query.popall("last_event_id", None)
        if self.breaks == "skip_ids" and headers.get("Last-Event-ID", "").isdigit():
            headers["Last-Event-ID"] = str(int(headers["Last-Event-ID"]) // 2)
        assert self._session is not None
        async with self._session.get(
            self.node.url + EVENTS_PATH, params=query, headers=headers
        ) as upstream:
            if upstream.status != 200:
                kind = upstream.headers.get("Content-Type")
                return web.Response(
                    status=upstream.status, body=await upstream.read(), headers=_only(kind)
                )
            response = web.StreamResponse(
                headers={k: upstream.headers[k] for k in STREAM_HEADERS if k in upstream.headers}
            )
            await response.prepare(request)
            block: list[bytes] = []
            partial = b""
            try:
                async for chunk in upstream.content.iter_any():
                    *lines, partial = (partial + chunk).split(b"\n")
                    out = []
                    for line in lines:
                        if line:
                            if not block and line.startswith((b":", b"retry:")):
                                out.append(line + b"\n")  # heartbeat, retry: on their own
                            else:
                                block.append(line)
                        elif block:
                            out.append(self._frame(block))
                            block = []
                    if out:
                        await response.write(b"".join(out))
            except (ConnectionError, aiohttp.ClientError):
                pass  # the reader went away, or the node did
        return response

    def _query(self, request: web.Request) -> MultiDict[str]:
        """The default stream as the protocol has it (enter and gap only; `phase=all` is
        every phase), whatever the node's version does, or broken."""
        query = MultiDict(request.query)
        phases = query.popall("phase", [])
        if not phases:
            phases = sorted(PHASES) if self.breaks == "control_in_default" else ["enter", "gap"]
        elif "all" in phases:
            phases = sorted(PHASES)
        query.extend(("phase", p) for p in phases)
        return query

    def _frame(self, lines: list[bytes]) -> bytes:
        """One event block as this server sends it ("" to drop it)."""
        fields = [line.partition(b":") for line in lines]
        data = next((json.loads(value) for name, _, value in fields if name == b"data"), {})
        if self.breaks == "drop_shard" and data.get("shard") == 1:
            return b""
        if self.breaks == "no_id":
            lines = [line for line in lines if not line.startswith(b"id:")]
        if self.breaks == "skip_ids" and isinstance(data.get("seq"), int):
            data["seq"] *= 2  # every other number is never sent
            lines = [f"id: {data['seq']}".encode(), b"data: " + json.dumps(data).encode()]
        return b"\n".join(lines) + b"\n\n"


def _only(content_type: str | None) -> CIMultiDict[str]:
    return CIMultiDict({"Content-Type": content_type} if content_type else {})
