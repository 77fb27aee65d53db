"""Each use of aiohttp's internals (pytest_injection_events/compat.py) has a test here
that fails if an aiohttp release changes what it relies on; and no other module of the
package reaches past aiohttp's public API."""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.web_protocol import RequestHandler
from apps import serve

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


# -- 3. direct chunks between a response's own writes ---------------------------------


async def raw_get(port: int, request: bytes) -> bytes:
    """The whole answer to one request sent on a bare socket (the server closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


PIECES = [b"one\n", b"two\n", b"three\n", b"four\n"]


@pytest.mark.asyncio
async def test_direct_chunks_interleave_with_the_responses_own_writes() -> None:
    """aiohttp writes each `write()` as one chunk to the transport at once, keeping nothing
    back: direct chunks in between land in order, framed as aiohttp frames them, and the
    response counts them in its body length. Read by aiohttp's client and a bare socket."""
    lengths: dict[str, int] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        mixed = request.query.get("mixed") == "1"
        response = web.StreamResponse()
        writer = await response.prepare(request)
        assert response.headers["Transfer-Encoding"] == "chunked" and not response.compression
        direct = compat.direct_chunk_writer(request, writer)
        assert direct is not None
        for i, piece in enumerate(PIECES):
            if mixed and i % 2:
                assert direct(piece)  # no yield between: nothing of aiohttp's may be pending
            else:
                await response.write(piece)
        await response.write_eof()
        assert compat.direct_chunk_writer(request, writer) is None  # its end is written
        lengths["mixed" if mixed else "plain"] = response.body_length
        return response

    runner, port = await serve(handler)
    try:
        async with aiohttp.ClientSession() as http:
            for mixed in ("0", "1"):
                async with http.get(f"http://127.0.0.1:{port}/?mixed={mixed}") as response:
                    assert await response.read() == b"".join(PIECES)
        raw = {}
        for mixed in ("0", "1"):
            request = f"GET /?mixed={mixed} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            raw[mixed] = (await raw_get(port, request.encode())).partition(b"\r\n\r\n")[2]
    finally:
        await runner.cleanup()
    framed = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in PIECES) + b"0\r\n\r\n"
    assert raw["0"] == raw["1"] == framed
    assert lengths["mixed"] == lengths["plain"] > len(framed)


@pytest.mark.asyncio
async def test_direct_chunks_only_where_aiohttp_would_write_plain_chunks() -> None:
    """No direct writer for a response that is not chunked (a Content-Length, an
    HTTP/1.0 client), compressed, or not prepared; one that says False, writing nothing,
    once its transport is closing."""
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        kind = request.query.get("kind", "")
        response = web.StreamResponse()
        seen[f"{kind} unprepared"] = compat.direct_chunk_writer(request, None)
        if kind == "length":
            response.content_length = 3
        elif kind == "gzip":
            response.enable_compression(web.ContentCoding.gzip)
        writer = await response.prepare(request)
        direct = compat.direct_chunk_writer(request, writer)
        seen[kind] = direct
        if direct is not None and kind == "closing":
            assert request.transport is not None
            request.transport.close()
            seen["closing wrote"] = direct(b"late")
            return response
        await response.write(b"end")
        await response.write_eof()
        return response

    runner, port = await serve(handler)
    try:
        async with aiohttp.ClientSession() as http:
            for kind in ("length", "gzip", "plain"):
                headers = {"Accept-Encoding": "gzip"}
                async with http.get(f"http://127.0.0.1:{port}/?kind={kind}", headers=headers) as r:
                    assert await r.read() == b"end"
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/?kind=closing") as r:
                    await r.read()
        answer = await raw_get(port, b"GET /?kind=http10 HTTP/1.0\r\nHost: x\r\n\r\n")
        assert answer.endswith(b"\r\n\r\nend")
    finally:
        await runner.cleanup()
    assert seen["length"] is None and seen["gzip"] is None and seen["http10"] is None
    assert seen["plain"] is not None and seen["closing wrote"] is False
    assert all(seen[f"{kind} unprepared"] is None for kind in ("length", "gzip", "plain"))


@pytest.mark.asyncio
async def test_a_direct_chunk_waits_for_nothing_left_to_send() -> None:
    """The direct writer says False while the transport holds bytes the kernel did not
    take: a direct write never queues behind others (the stall watchdog sees those)."""
    result: asyncio.Future[tuple[bool, bool]] = asyncio.get_running_loop().create_future()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        direct = compat.direct_chunk_writer(request, await response.prepare(request))
        assert direct is not None and request.transport is not None
        first = direct(b"x" * (16 << 20))  # far more than the kernel takes from a non-reader
        assert request.transport.get_write_buffer_size() > 0
        result.set_result((first, direct(b"more")))
        request.transport.abort()
        return response

    runner, port = await serve(handler)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await asyncio.wait_for(result, 5) == (True, False)
    finally:
        sock.close()
        await runner.cleanup()
