"""How the conformance check talks to a server: raw answers and stream readers.

Raw aiohttp rather than the client, because the check must see exact statuses,
headers and bytes (docs/conformance.md). Every step is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from .errors import InjectionEventsError
from .protocol import EVENTS_PATH, PREFIX, auth_headers
from .sse import SSEDecoder, SSEMessage

#: How much of a body an answer keeps (for the report), and of the stream's first bytes.
BODY_KEPT = 300
HEAD_KEPT = 200


@dataclass
class Answer:
    """One request and what came back: status, body text, and the JSON it holds if any."""

    request: str
    status: int
    text: str
    content_type: str
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.text)
        except ValueError:
            return _NOT_JSON

    @property
    def is_json(self) -> bool:
        return self.json is not _NOT_JSON

    def shown(self) -> str:
        body = self.text if len(self.text) <= 80 else self.text[:77] + "..."
        return f"{self.request} -> {self.status} {body!r}"


_NOT_JSON = object()


class RequestFailed(InjectionEventsError, ConnectionError):
    """A request that got no answer (unreachable, no answer in time); names the request."""

    def __init__(self, request: str, reason: str) -> None:
        super().__init__(f"{request}: {reason}")
        self.request = request
        self.reason = reason


class ServerStopped(InjectionEventsError):
    """The server stopped answering: the run ends here instead of timing out every step.
    Not a ConnectionError, so no stage takes it for the failure of one step."""

    def __init__(self, message: str, request: str) -> None:
        super().__init__(message)
        self.request = request


class Http:
    """Requests to one server with its token, each bounded by `timeout` seconds; after
    STOPPED_AFTER timeouts in a row the server is taken as stopped (`ServerStopped`)."""

    STOPPED_AFTER = 3

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str | None, timeout: float):
        self.session = session
        self.url = url
        self.token = token
        self.timeout = timeout
        self.silent = 0  # requests in a row that got no answer in time

    def path(self, *segments: str) -> str:
        """`/v2/error_injection/a/b` with each segment percent-encoded (names may hold `/`)."""
        return PREFIX + "".join("/" + quote(s, safe="") for s in segments)

    def full(self, path: str) -> URL:
        return URL(self.url + path, encoded=True)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """The answer, or a ConnectionError that names the request (unreachable, no answer)."""
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params)
        shown = f"{method} {path}{'?' + query if query else ''}"
        if body is not None:
            shown += f" {json.dumps(body)}"
        sent = {**auth_headers(self.token), **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body)
            sent["Content-Type"] = "application/json"
        url = self.full(path + (f"?{query}" if query else ""))

        async def send() -> Answer:
            async with self.session.request(method, url, data=data, headers=sent) as response:
                text = await response.text(errors="replace")
                return Answer(
                    shown, response.status, text, response.content_type, dict(response.headers)
                )

        try:
            answer = await asyncio.wait_for(send(), self.timeout)
        except asyncio.TimeoutError:
            self.silent += 1
            if self.silent >= self.STOPPED_AFTER:
                raise ServerStopped(
                    f"no answer within {self.timeout:g}s to {self.silent} requests in a row",
                    shown,
                ) from None
            raise RequestFailed(shown, f"no answer within {self.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise RequestFailed(shown, str(exc) or type(exc).__name__) from None
        self.silent = 0
        return answer


@dataclass
class Received:
    """One message of a stream, when it arrived (time.time()) and its decoded data."""

    message: SSEMessage
    at: float
    data: Any

    @property
    def phase(self) -> Any:
        return self.data.get("phase") if isinstance(self.data, dict) else None

    @property
    def injection(self) -> Any:
        return self.data.get("injection") if isinstance(self.data, dict) else None

    @property
    def seq(self) -> Any:
        return self.data.get("seq") if isinstance(self.data, dict) else None


class StreamRefused(InjectionEventsError):
    """The server did not open the stream (a status other than 200); carries the answer."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.shown())
        self.answer = answer


def stream_request(params: Sequence[tuple[str, str]], headers: dict[str, str] | None = None) -> str:
    """How a stream request is shown in the report: `GET path?query [Header: value]`."""
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params)
    shown = f"GET {EVENTS_PATH}{'?' + query if query else ''}"
    return shown + "".join(f" [{k}: {v}]" for k, v in (headers or {}).items())


class StreamReader:
    """One client of the event stream, read in the background; `wait` waits for its state."""

    def __init__(
        self,
        http: Http,
        params: Sequence[tuple[str, str]] = (),
        headers: dict[str, str] | None = None,
        *,
        read: bool = True,
    ) -> None:
        self.http = http
        self.params = list(params)
        self.headers = dict(headers or {})
        self.read = read
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in self.params)
        self.request = stream_request(self.params, self.headers)
        self._url = http.full(EVENTS_PATH + (f"?{query}" if query else ""))
        self.decoder = SSEDecoder()
        self.messages: list[Received] = []
        self.head = b""
        self.comments = 0  # `:` lines (heartbeats) seen so far
        self._line = b""
        self.status: int | None = None
        self.content_type = ""
        self.response_headers: dict[str, str] = {}
        self.ended = False
        self.error: str | None = None
        self._response: aiohttp.ClientResponse | None = None
        self._pump: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def open(self) -> StreamReader:
        """Connect and start reading; StreamRefused if the answer is not a 200."""
        sent = {**auth_headers(self.http.token), **self.headers}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.http.timeout)
        try:
            response = await asyncio.wait_for(
                self.http.session.get(self._url, headers=sent, timeout=timeout), self.http.timeout
            )
        except asyncio.TimeoutError:
            raise RequestFailed(self.request, f"no answer within {self.http.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise RequestFailed(self.request, str(exc) or type(exc).__name__) from None
        self._response = response
        self.status = response.status
        self.content_type = response.headers.get("Content-Type", "")
        self.response_headers = dict(response.headers)
        if response.status != 200:
            try:
                text = await asyncio.wait_for(response.text(errors="replace"), self.http.timeout)
            except (asyncio.TimeoutError, aiohttp.ClientError):
                text = ""
            response.close()
            raise StreamRefused(
                Answer(self.request, response.status, text[:BODY_KEPT], self.content_type, {})
            )
        if self.read:
            self.start_reading()
        return self

    def start_reading(self) -> None:
        if self._pump is None:
            self._pump = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        assert self._response is not None
        try:
            async for chunk in self._response.content.iter_any():
                now = time.time()
                if len(self.head) < HEAD_KEPT:
                    self.head += chunk[: HEAD_KEPT - len(self.head)]
                self._count_comments(chunk)
                for message in self.decoder.feed(chunk):
                    try:
                        data = json.loads(message.data)
                    except ValueError:
                        data = None
                    self.messages.append(Received(message, now, data))
                self._changed.set()
        except (aiohttp.ClientError, OSError) as exc:
            self.error = str(exc) or type(exc).__name__
        finally:
            self.ended = True
            self._changed.set()

    def _count_comments(self, chunk: bytes) -> None:
        """Count `:` lines as they come: the decoder counts a comment only once the block
        it sits in ends, and a heartbeat on a quiet stream sits in no finished block."""
        lines = (self._line + chunk).split(b"\n")
        self._line = lines.pop()
        self.comments += sum(1 for line in lines if line.startswith(b":"))

    def poke(self) -> None:
        """Make `wait` look at its condition again (something else changed)."""
        self._changed.set()

    async def wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        """True once `condition()` holds; False if the stream ended or `timeout` passed first."""
        deadline = time.monotonic() + timeout
        while True:
            if condition():
                return True
            remaining = deadline - time.monotonic()
            if self.ended or remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                return condition()

    def events(self, injection: str | None = None, phase: str | None = None) -> list[Received]:
        return [
            r
            for r in self.messages
            if (injection is None or r.injection == injection)
            and (phase is None or r.phase == phase)
        ]

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        if self._response is not None:
            self._response.close()
        self.ended = True
