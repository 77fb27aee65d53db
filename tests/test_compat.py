"""Each use of aiohttp's internals (pytest_injection_events/compat.py) has a test here
that fails if an aiohttp release changes what it relies on; and no other module of the
package reaches past aiohttp's public API."""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp.abc import AbstractStreamWriter
from aiohttp.web_protocol import RequestHandler

from pytest_injection_events import compat
from pytest_injection_events.events import EventLog
from pytest_injection_events.injector import Injector
from pytest_injection_events.server import InjectionServer

PACKAGE = Path(compat.__file__).parent
PUBLIC = {"aiohttp", "aiohttp.web", "aiohttp.abc"}


def test_only_compat_imports_aiohttp_internals() -> None:
    """aiohttp's public modules only, everywhere but compat.py; no aiohttp-sse at all."""
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                internal = name.startswith("aiohttp.") and name not in PUBLIC
                if name.startswith("aiohttp_sse") or (internal and path.name != "compat.py"):
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []


def test_handle_error_is_still_the_hook_for_http_layer_errors() -> None:
    """compat overrides RequestHandler.handle_error(request, status, exc, message)."""
    parameters = list(inspect.signature(RequestHandler.handle_error).parameters)
    assert parameters == ["self", "request", "status", "exc", "message"]
    assert compat.JsonErrorRequestHandler.handle_error is not RequestHandler.handle_error


def test_request_handler_is_built_as_web_server_builds_it() -> None:
    """RequestHandler(manager, *, loop, max_line_size, access_log), as Server.__call__."""
    signature = inspect.signature(RequestHandler.__init__)
    assert list(signature.parameters)[:2] == ["self", "manager"]
    for name in ("loop", "max_line_size", "access_log"):
        assert signature.parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    assert "output_size" in AbstractStreamWriter.__dict__ or hasattr(
        AbstractStreamWriter, "output_size"
    )


@pytest.mark.asyncio
async def test_what_the_http_parser_refuses_is_answered_in_json() -> None:
    """End to end: the handler compat builds is the one serving connections."""
    async with InjectionServer(Injector(), EventLog(), port=0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Bad: a\x01b\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
        assert answer.split(b" ", 2)[1] == b"400"
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"application/json" in head
        assert json.loads(body)["error"].startswith("bad HTTP request: ")
        # and the normal path still works through the same handler class
        async with aiohttp.ClientSession() as http, http.get(server.url + "/nope") as response:
            assert response.status == 404
            assert "no such endpoint" in (await response.json())["error"]
