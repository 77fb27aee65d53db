"""Every use of aiohttp's internals, in one place (docs/design.md).

Nothing else in the package reaches past aiohttp's public API. Each use here has
a test in tests/test_compat.py that fails if an aiohttp release changes it:

1. `RequestHandler` is subclassed to override `handle_error`, so that what the
   HTTP parser refuses before any middleware runs (a header with a control
   character, a line too long, a bad chunk) is answered `{"error": ...}` like
   every other bad input. aiohttp has no public hook for those answers.
2. That handler is built directly, `RequestHandler(server, loop=..., **options)`,
   as `web.Server.__call__` does, instead of swapping the class of the handler
   aiohttp built: the signature is the dependency.
3. `direct_chunk_writer` writes whole HTTP chunks of a prepared response straight to
   its transport, between the response's own writes (the event stream's push at a hit,
   docs/design.md). It relies on aiohttp's `StreamWriter` writing each `write()` as one
   chunk to the transport at once, keeping nothing back (no compression, headers sent),
   and counting the body in `output_size`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_writer import StreamWriter
from aiohttp.web_protocol import RequestHandler

_log = logging.getLogger("pytest_injection_events.server")


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering HTTP-layer refusals in JSON (logged at
    DEBUG: a client's malformed request is not the node's error)."""

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        _log.debug("refused a request the HTTP layer could not take: %s", message, exc_info=exc)
        if request.writer.output_size > 0:  # as aiohttp: an answer already began
            raise ConnectionError("response already started; cannot send the error")
        text = " ".join((message or "").split())[:300] or "malformed request"
        response = web.Response(
            status=status,
            text=json.dumps({"error": f"bad HTTP request: {text}"}),
            content_type="application/json",
        )
        response.force_close()
        return response


def request_handler_factory(
    server: web.Server, loop: asyncio.AbstractEventLoop, **options: Any
) -> Callable[[], RequestHandler]:
    """A protocol factory for `loop.create_server`: one `JsonErrorRequestHandler` per
    connection of `server` (an `AppRunner`'s `.server`), with `options` as
    `RequestHandler` takes them (`max_line_size`, `access_log`, ...)."""

    def make() -> RequestHandler:
        return JsonErrorRequestHandler(server, loop=loop, **options)

    return make


def direct_chunk_writer(
    request: web.Request, writer: AbstractStreamWriter | None
) -> Callable[[bytes], bool] | None:
    """A function that writes one chunk of `writer`'s chunked body (what the response's
    `prepare()` returned) straight to the transport and says True, or says False and
    writes nothing when the connection is closing or has anything left to send (so a
    direct write never waits and never lands behind a write of aiohttp's in progress).

    None if the response cannot take such writes: not aiohttp's `StreamWriter`, not
    chunked, compressed, its headers not sent yet or its end sent. Call it only between
    the response's own writes (none in progress): that is the caller's to ensure."""
    transport = request.transport
    if (
        transport is None
        or not isinstance(writer, StreamWriter)
        or type(writer) is not StreamWriter  # a subclass may write otherwise
        or not writer.chunked
        or writer.length is not None
        or writer._compress is not None
        or writer._on_chunk_sent is not None
        # aiohttp 3.10+ may hold the headers back to send them with the first write;
        # before it (3.9) they went out in prepare(), and these attributes do not exist.
        or getattr(writer, "_headers_buf", None)
        or not getattr(writer, "_headers_written", True)
        or writer._eof
    ):
        return None

    def write(data: bytes) -> bool:
        if transport.is_closing() or transport.get_write_buffer_size() or writer._eof:
            return False
        chunk = b"%x\r\n%b\r\n" % (len(data), data)
        transport.write(chunk)
        writer.output_size += len(chunk)  # the response's body_length, as aiohttp counts it
        return True

    return write
