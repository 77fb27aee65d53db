"""One HTTP/1.1 GET whose body is handed to a callback as it arrives: the event stream's wire.

Why not aiohttp's client here: its body goes through a `StreamReader` that a task
awaits, so every event costs a loop turn to reach that task before a waiting test's
own turn; and its receive path is the largest part of what a stream adds to a hit's
latency (docs/benchmarks.md). This protocol decodes the framing in `data_received`
and calls the reader back there, so an event reaches the waits in the callback that
read it. It speaks only what an event stream needs: a GET, the status and headers,
and a body that is chunked, of a Content-Length, or runs to the close. Everything
else of the package uses aiohttp.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
from collections.abc import Callable, Iterable
from urllib.parse import urlencode, urlsplit

from .errors import InjectionEventsError

#: What a response's status line and headers may take, and what an error body is read up to.
MAX_HEAD = 64 * 1024
MAX_ERROR_BODY = 64 * 1024
USER_AGENT = "pytest-injection-events"


class BadResponse(InjectionEventsError, OSError):
    """The server's answer is not HTTP/1.x as this reader takes it (an OSError: a broken
    connection, as a reset is)."""


class HttpStream(asyncio.Protocol):
    """One connection: the response's head, then its body to `on_body`.

    Lifecycle: `await open_http_stream(...)` returns once the head arrived;
    `read_body(callback)` hands the body over (what came with the head first);
    `await ended()` returns at the body's end or raises why the connection broke;
    `close()` always."""

    def __init__(self, read_timeout: float | None) -> None:
        self.status = 0
        self.reason = ""
        self.headers: dict[str, str] = {}  # names in lower case; a repeated one: the last
        self._read_timeout = read_timeout
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._head_done: asyncio.Future[None] = self._loop.create_future()
        self._ended: asyncio.Future[None] = self._loop.create_future()
        self._buffer = b""  # unparsed input: the head, or a chunk's framing
        self._held: list[bytes] = []  # body that came before a reader took it
        self._on_body: Callable[[bytes], None] | None = None
        self._chunked = False
        self._left: int | None = None  # body bytes still to come (chunked: of this chunk)
        self._in_trailer = False
        self._need_crlf = False  # a chunk's data ended: its CRLF comes next
        self._last_data = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None

    # -- what the reader uses ----------------------------------------------------------

    @property
    def content_type(self) -> str:
        """The media type, lower case, without parameters (as aiohttp's `content_type`)."""
        value = self.headers.get("content-type", "application/octet-stream")
        return value.split(";", 1)[0].strip().lower()

    def read_body(self, on_body: Callable[[bytes], None]) -> None:
        """From now on, body bytes go to `on_body`, called in `data_received`. An exception
        it raises ends the connection and comes out of `ended()`."""
        self._on_body = on_body
        held, self._held = self._held, []
        for piece in held:
            self._give(piece)

    async def ended(self) -> None:
        await asyncio.shield(self._ended)

    async def text(self) -> str:
        """The whole body, decoded (an error's answer: read up to MAX_ERROR_BODY)."""
        pieces: list[bytes] = []
        size = 0

        def keep(piece: bytes) -> None:
            nonlocal size
            if size < MAX_ERROR_BODY:
                pieces.append(piece)
                size += len(piece)
            if size >= MAX_ERROR_BODY:
                self._finish()

        self.read_body(keep)
        await self.ended()
        return b"".join(pieces)[:MAX_ERROR_BODY].decode("utf-8", "replace")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._finish()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if self._read_timeout is not None:
            self._timer = self._loop.call_later(self._read_timeout, self._check_silence)

    def data_received(self, data: bytes) -> None:
        self._last_data = self._loop.time()
        try:
            if not self._head_done.done():
                data = self._parse_head(data)
                if not data:
                    return
            if self._chunked:
                if not (self._left or self._buffer or self._need_crlf) and self._on_body:
                    # The usual read: one whole chunk (one event, or one batch of them).
                    line_end = data.find(b"\r\n", 0, 12)
                    if line_end > 0 and data.endswith(b"\r\n"):
                        size_text = data[:line_end]
                        if not size_text.strip(b"0123456789abcdefABCDEF"):
                            size = int(size_text, 16)
                            if size and line_end + 4 + size == len(data):
                                self._on_body(data[line_end + 2 : -2])
                                return
                self._dechunk(data)
            else:
                self._take(data)
        except Exception as exc:  # a bad frame, or the reader's own error
            self._fail(exc)

    def eof_received(self) -> bool:
        if not self._head_done.done():
            self._fail(BadResponse("the server closed the connection before its answer"))
        elif self._left is None and not self._chunked:
            self._finish()  # a body delimited by the close
        else:
            self._fail(BadResponse("the server closed the connection inside the body"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._fail(exc)
        elif not self._ended.done():
            self.eof_received()
        self._finish()

    # -- inside --------------------------------------------------------------------------

    def _parse_head(self, data: bytes) -> bytes:
        buffer = self._buffer + data
        end = buffer.find(b"\r\n\r\n")
        if end == -1:
            if len(buffer) > MAX_HEAD:
                raise BadResponse(f"response head longer than {MAX_HEAD} bytes")
            self._buffer = buffer
            return b""
        head, rest = buffer[:end].decode("latin-1"), buffer[end + 4 :]
        self._buffer = b""
        status_line, *lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise BadResponse(f"not an HTTP/1.x response: {status_line[:100]!r}")
        status = int(parts[1])
        if 100 <= status < 200:  # an interim answer: the real one follows
            return self._parse_head(rest) if rest else b""
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise BadResponse(f"malformed header line: {line[:100]!r}")
            headers[name.lower()] = value.strip()
        self.status, self.reason, self.headers = status, parts[2] if len(parts) > 2 else "", headers
        coding = headers.get("transfer-encoding", "").lower()
        if "chunked" in coding:
            self._chunked = True
            self._left = 0
        elif status in (204, 304):
            self._left = 0
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit():
                raise BadResponse(f"bad Content-Length: {length[:40]!r}")
            self._left = int(length)
        self._head_done.set_result(None)
        if self._left == 0 and not self._chunked:
            self._finish()
        return rest

    def _take(self, data: bytes) -> None:
        """A body not chunked: up to its length, or to the close."""
        left = self._left
        if left is not None:
            data = data[:left]
            self._left = left = left - len(data)
        if data:
            self._give(data)
        if left == 0:
            self._finish()

    def _dechunk(self, data: bytes) -> None:
        """Chunked framing: the body is what the chunks carry, handed on as it comes."""
        left = self._left or 0
        if left and not self._buffer:  # the usual read inside a big chunk: no copy
            if len(data) <= left:
                self._left = left = left - len(data)
                self._need_crlf = not left
                self._give(data)
                return
        buffer = self._buffer + data if self._buffer else data
        end = len(buffer)
        position = 0
        need_crlf = self._need_crlf
        pieces: list[bytes] = []
        while position < end:
            if left:  # inside a chunk's data
                piece = buffer[position : position + left]
                pieces.append(piece)
                position += len(piece)
                left -= len(piece)
                need_crlf = not left
                continue
            if need_crlf:
                if end - position < 2:
                    break
                if buffer[position : position + 2] != b"\r\n":
                    raise BadResponse("a chunk not followed by CRLF")
                position += 2
                need_crlf = False
                continue
            line_end = buffer.find(b"\r\n", position)
            if line_end == -1:
                if end - position > 4096:
                    raise BadResponse("a chunk size line longer than 4096 bytes")
                break
            line = buffer[position:line_end]
            position = line_end + 2
            if self._in_trailer:
                if not line:  # the blank line after the trailers: the body is over
                    self._buffer = b""
                    self._give_all(pieces)
                    self._finish()
                    return
                continue
            size_text = line.split(b";", 1)[0].strip()
            if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                raise BadResponse(f"bad chunk size {size_text[:20]!r}")
            left = int(size_text, 16)
            if not left:
                self._in_trailer = True
        self._buffer = buffer[position:]
        self._left = left
        self._need_crlf = need_crlf
        self._give_all(pieces)

    def _give_all(self, pieces: list[bytes]) -> None:
        if pieces:
            self._give(pieces[0] if len(pieces) == 1 else b"".join(pieces))

    def _give(self, piece: bytes) -> None:
        if self._on_body is None:
            self._held.append(piece)
        else:
            self._on_body(piece)

    def _check_silence(self) -> None:
        assert self._read_timeout is not None
        silent = self._loop.time() - self._last_data
        if silent >= self._read_timeout:
            self._timer = None
            self._fail(asyncio.TimeoutError(f"no data for {self._read_timeout:g}s"))
            return
        self._timer = self._loop.call_later(self._read_timeout - silent, self._check_silence)

    def _fail(self, exc: BaseException) -> None:
        if not self._head_done.done():
            self._head_done.set_exception(exc)
            self._head_done.exception()  # read here: open_http_stream may be gone
        if not self._ended.done():
            self._ended.set_exception(exc)
            self._ended.exception()
        self._finish()
        if self._transport is not None:
            self._transport.abort()

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._head_done.done():
            self._head_done.set_exception(BadResponse("the connection ended before an answer"))
            self._head_done.exception()
        if not self._ended.done():
            self._ended.set_result(None)


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """One verifying context for every https stream (as aiohttp keeps one): loading the
    CA store takes tens of milliseconds, too much for each reconnect."""
    return ssl.create_default_context()


async def open_http_stream(
    url: str,
    params: Iterable[tuple[str, str]],
    headers: dict[str, str],
    *,
    connect_timeout: float,
    read_timeout: float | None = None,
) -> HttpStream:
    """GET `url` with `params`; returns once the status and headers are in.

    `connect_timeout` bounds the connection and the head together (a wedged node
    accepts and never answers): asyncio.TimeoutError past it. OSError (BadResponse
    included) when the connection or the answer is broken."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    query = urlencode(list(params))
    target = (parts.path or "/") + (f"?{query}" if query else "")
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"User-Agent: {USER_AGENT}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    for line in lines:
        if "\r" in line or "\n" in line:
            raise ValueError(f"a request header may not hold a line break: {line[:100]!r}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "strict")
    loop = asyncio.get_running_loop()
    context = _tls_context() if parts.scheme == "https" else None

    async def connect() -> HttpStream:
        try:
            _, stream = await loop.create_connection(
                lambda: HttpStream(read_timeout), host, port, ssl=context
            )
        except OSError as exc:
            if isinstance(exc, ssl.SSLError) or not exc.errno:  # its errno is OpenSSL's
                why = str(exc) or type(exc).__name__
            else:
                why = os.strerror(exc.errno)
            raise ConnectionError(f"Cannot connect to host {parts.netloc}: {why}") from exc
        try:
            assert stream._transport is not None
            stream._transport.write(request)
            await asyncio.shield(stream._head_done)
        except BaseException:
            stream.close()
            raise
        return stream

    return await asyncio.wait_for(connect(), connect_timeout)
