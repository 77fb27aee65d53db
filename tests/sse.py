"""A deliberately small SSE reader for tests, independent of the product's client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Message:
    id: str | None
    data: str
    fields: list[str] = field(default_factory=list)

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.data)


class RawStream:
    """Parses `text/event-stream` line by line, as the HTML spec says, keeping comments."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments: list[str] = []
        self.retry: int | None = None
        self.last_id: str | None = None

    async def next(self, timeout: float = 5.0) -> Message:
        """The next dispatched message; raises TimeoutError, or EOFError at end of stream."""
        return await asyncio.wait_for(self._next(), timeout)

    async def take(self, n: int, timeout: float = 5.0) -> list[Message]:
        return [await self.next(timeout) for _ in range(n)]

    async def _next(self) -> Message:
        data: list[str] = []
        fields: list[str] = []
        event_id: str | None = None
        while True:
            raw = await self.response.content.readline()
            if not raw:
                raise EOFError("end of stream")
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line:
                if data:
                    if event_id is not None:
                        self.last_id = event_id
                    return Message(event_id, "\n".join(data), fields)
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            fields.append(name)
            if name == "data":
                data.append(value)
            elif name == "id":
                event_id = value
            elif name == "retry":
                self.retry = int(value)


def with_all_phases(params: Any) -> list[tuple[str, str]]:
    """`params` as pairs, asking for every phase unless they name some: the node's
    default stream is `enter` only, and most tests look at every phase."""
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params or ())
    if not any(key == "phase" for key, _ in pairs):
        pairs.append(("phase", "all"))
    return pairs


@asynccontextmanager
async def open_stream(
    session: aiohttp.ClientSession,
    base_url: str,
    params: Any = None,
    headers: Mapping[str, str] | None = None,
    *,
    default_phases: bool = False,
) -> AsyncIterator[RawStream]:
    """GET the node's event stream and yield a reader once the headers arrived. Every
    phase unless `params` name some, or `default_phases` asks for the node's default."""
    if not default_phases:
        params = with_all_phases(params)
    async with session.get(
        f"{base_url}/v2/error_injection/events", params=params, headers=headers
    ) as response:
        assert response.status == 200, await response.text()
        yield RawStream(response)
