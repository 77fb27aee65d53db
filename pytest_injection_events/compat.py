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
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
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
