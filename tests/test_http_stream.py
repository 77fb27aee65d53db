"""The event stream's own HTTP/1.1 reader (`http_stream.py`).

Framing is tested as the SSE decoder is, on bytes, through `data_received`, split
at every place a read can end (a real connection gives no control over where its
reads end); the rest against real servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from apps import serve

from pytest_injection_events import StreamConnectError, injection_event_stream
from pytest_injection_events.http_stream import BadResponse, HttpStream, open_http_stream
from pytest_injection_events.node import FakeNode

PIECES = [b"retry: 100\n", b'id: 1\ndata: {"a": "\xc3\xa9"}\n\n', b":"]
CHUNKED = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream; charset=utf-8\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"X-Injection-Boot: b1\r\n"
    b"\r\n"
    + b"".join(
        b"%x%s\r\n%s\r\n" % (len(piece), b";name=value" if i == 1 else b"", piece)
        for i, piece in enumerate(PIECES)
    )
    + b"0\r\nTrailer: x\r\n\r\n"
)
CHUNKED_BODY = b"".join(PIECES)


@pytest_asyncio.fixture
async def fed() -> AsyncIterator[HttpStream]:
    """An HttpStream on a real (idle) connection, to feed by hand."""
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, stream = await loop.create_connection(lambda: HttpStream(None), sock=ours)
    try:
        yield stream
    finally:
        transport.close()
        theirs.close()
        await asyncio.sleep(0)  # the transport's close callback runs


def feed(stream: HttpStream, pieces: list[bytes]) -> list[bytes]:
    body: list[bytes] = []
    for piece in pieces:
        stream.data_received(piece)
        if stream.status and stream._on_body is None:
            stream.read_body(body.append)
    return body


def splits(data: bytes) -> list[list[bytes]]:
    """The response whole, byte by byte, and cut in two at every place."""
    return [[data], [data[i : i + 1] for i in range(len(data))]] + [
        [data[:i], data[i:]] for i in range(1, len(data))
    ]


@pytest.mark.asyncio
async def test_a_chunked_body_comes_out_whole_wherever_the_reads_end() -> None:
    for pieces in splits(CHUNKED):
        ours, theirs = socket.socketpair()
        transport, stream = await asyncio.get_running_loop().create_connection(
            lambda: HttpStream(None), sock=ours
        )
        try:
            body = feed(stream, pieces)
            assert b"".join(body) == CHUNKED_BODY, pieces
            assert stream.status == 200
            assert stream.content_type == "text/event-stream"
            assert stream.headers["x-injection-boot"] == "b1"
            await asyncio.wait_for(stream.ended(), 1)  # the last chunk and trailers end it
        finally:
            transport.close()
            theirs.close()
    await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_a_body_of_a_content_length_ends_at_that_length(fed: HttpStream) -> None:
    body = feed(fed, [b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nhel", b"lo"])
    assert fed.status == 404 and fed.reason == "Not Found"
    assert b"".join(body) == b"hello"
    await asyncio.wait_for(fed.ended(), 1)


@pytest.mark.asyncio
async def test_an_interim_answer_is_skipped(fed: HttpStream) -> None:
    feed(fed, [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"])
    assert fed.status == 204
    await asyncio.wait_for(fed.ended(), 1)


@pytest.mark.parametrize(
    ("response", "why"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x response"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
            "not followed by CRLF",
        ),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000, "longer than"),
    ],
)
@pytest.mark.asyncio
async def test_a_broken_answer_ends_the_stream_with_a_clear_error(
    fed: HttpStream, response: bytes, why: str
) -> None:
    feed(fed, [response])
    with pytest.raises(BadResponse, match=why):
        await asyncio.wait_for(fed.ended(), 1)


@pytest.mark.asyncio
async def test_an_error_of_the_reader_ends_the_stream_and_comes_out(fed: HttpStream) -> None:
    fed.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")

    def refuse(piece: bytes) -> None:
        raise RuntimeError(f"cannot take {piece!r}")

    fed.read_body(refuse)
    fed.data_received(b"2\r\nhi\r\n")
    with pytest.raises(RuntimeError, match="cannot take b'hi'"):
        await asyncio.wait_for(fed.ended(), 1)


@pytest_asyncio.fixture
async def silent_server() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """Accepts, answers the head of a stream when told, then never sends a byte."""
    answer = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        await answer.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/events", answer
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_a_server_that_never_answers_times_out_at_the_connect_timeout(
    silent_server: tuple[str, asyncio.Event],
) -> None:
    url, _ = silent_server
    with pytest.raises(asyncio.TimeoutError):
        await open_http_stream(url, [], {}, connect_timeout=0.2)


@pytest.mark.asyncio
async def test_a_stream_gone_silent_ends_after_the_read_timeout(
    silent_server: tuple[str, asyncio.Event],
) -> None:
    url, answer = silent_server
    answer.set()
    stream = await open_http_stream(url, [], {}, connect_timeout=5, read_timeout=0.2)
    try:
        stream.read_body(lambda piece: None)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(stream.ended(), 5)
    finally:
        stream.close()


@pytest.mark.asyncio
async def test_a_closed_port_is_a_connection_error_that_names_the_host() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionError, match=f"Cannot connect to host 127.0.0.1:{port}"):
        await open_http_stream(f"http://127.0.0.1:{port}/", [], {}, connect_timeout=5)


@pytest.mark.asyncio
async def test_a_header_with_a_line_break_is_refused_before_connecting() -> None:
    with pytest.raises(ValueError, match="line break"):
        await open_http_stream(
            "http://127.0.0.1:9/", [], {"Last-Event-ID": "1\r\nX: y"}, connect_timeout=5
        )


@pytest.mark.asyncio
async def test_the_request_carries_the_query_and_headers_as_aiohttp_reads_them() -> None:
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        return web.json_response({"error": "nope"}, status=400)

    runner, port = await serve(handler, "/v2/error_injection/events")
    try:
        stream = await open_http_stream(
            f"http://127.0.0.1:{port}/v2/error_injection/events",
            [("injection", "a b&c"), ("phase", "all")],
            {"Last-Event-ID": "7", "Authorization": "Bearer t"},
            connect_timeout=5,
        )
        try:
            assert stream.status == 400
            assert await asyncio.wait_for(stream.text(), 5) == '{"error": "nope"}'
        finally:
            stream.close()
        (request,) = seen
        assert request.query.getall("injection") == ["a b&c"]
        assert request.query.getall("phase") == ["all"]
        assert request.headers["Last-Event-ID"] == "7"
        assert request.headers["Authorization"] == "Bearer t"
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_a_node_stream_is_read_as_it_is_written() -> None:
    async with FakeNode() as node:
        stream = await open_http_stream(
            node.url + "/v2/error_injection/events", [("phase", "all")], {}, connect_timeout=5
        )
        try:
            assert stream.status == 200 and stream.content_type == "text/event-stream"
            got = asyncio.Event()
            body: list[bytes] = []

            def take(piece: bytes) -> None:
                body.append(piece)
                if b"data: " in b"".join(body):
                    got.set()

            stream.read_body(take)
            node.call(node.injector.enable, "point")
            await asyncio.wait_for(got.wait(), 5)
            assert b'"injection":"point"' in b"".join(body)
        finally:
            stream.close()


@pytest.fixture
def self_signed(tmp_path: Path) -> ssl.SSLContext:
    """A server's TLS context with a certificate nobody trusts."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@pytest.mark.asyncio
async def test_an_https_node_is_verified_and_an_untrusted_one_refused_clearly(
    self_signed: ssl.SSLContext,
) -> None:
    """https:// goes through TLS with the system's trust, as aiohttp's client did: a node
    with a self-signed certificate is a StreamConnectError that says why."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="never reached")

    app = web.Application()
    app.router.add_get("/v2/error_injection/events", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self_signed)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with pytest.raises(StreamConnectError, match="certificate verify failed"):
            async with injection_event_stream(f"https://127.0.0.1:{port}"):
                pass
    finally:
        await runner.cleanup()
