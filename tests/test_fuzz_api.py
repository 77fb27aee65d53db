"""Bad input, fuzzed (issue 6, item 3): property-based requests to every §5 endpoint of a
real node over real HTTP. Whatever the name, query, headers or body:

- the node never answers 5xx and never hangs (each request has a 5 s budget);
- every answer but a stream's is JSON, and every 4xx is exactly `{"error": str}`;
- a refused request changes nothing: the enabled set, the per-shard state and
  parameters, the catalog with its enter counts (`/injection`, `/points`) and the last
  event seq are the same after it as before.

Then the same node is checked against docs/openapi.yaml, operation by operation, the
way schemathesis would: requests generated from the documented parameters (valid and
not), each answer's status, content type and body checked against the document, and the
document's routes against the server's.

Requests go through http.client, which sends the target exactly as built: percent-
encoding, `%2F`, raw `/` and invalid UTF-8 reach the server as written. Examples are
derandomized (a fixed seed per test, no example database), so CI sees the same inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import re
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_injection_events.events import EventLog
from pytest_injection_events.injector import Injector
from pytest_injection_events.node import FakeNode
from pytest_injection_events.server import MAX_NAME, PREFIX, InjectionRoutes

OPENAPI = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
REQUEST_TIMEOUT = 5.0
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: What the tests below tried, for docs/reliability.md.
TRIED: dict[str, int] = {}

# -- the node and the wire ---------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _report_what_was_tried() -> Iterator[None]:
    yield
    print("\nfuzz inputs tried:", dict(sorted(TRIED.items())))


@pytest.fixture(scope="module")
def node() -> Iterator[FakeNode]:
    """One node for the module (two shards, so per-shard answers mean something)."""
    with FakeNode(shards=2, heartbeat=3600) as fake:
        yield fake


@dataclass
class Answer:
    status: int
    content_type: str
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send(
    node: FakeNode,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    """One request on a fresh connection; a stream is closed once its headers arrived."""
    connection = http.client.HTTPConnection(node.host, node.port, timeout=REQUEST_TIMEOUT)
    try:
        connection.putrequest(method, target, skip_host=False, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            connection.putheader(key, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        content_type = response.headers.get_content_type()
        if content_type == "text/event-stream":
            data = b""
        else:
            data = response.read()
        return Answer(response.status, content_type, response.headers, data)
    finally:
        connection.close()


def state(node: FakeNode) -> tuple[Any, ...]:
    """What a request could change: over HTTP the enabled set and the catalog with its
    enter counts; from the node the per-shard state of every name it knows and the last
    event seq (a request that published an event changed something)."""
    enabled = send(node, "GET", f"{PREFIX}/injection").json()
    points = send(node, "GET", f"{PREFIX}/points").json()

    def inside() -> tuple[Any, ...]:
        injector = node.injector
        names = sorted(set(injector.enabled_injections()) | set(injector.enter_counts()))
        shards = {name: injector.injection_state(name) for name in names}
        return shards, injector.enter_counts(), node.event_log.last_seq

    return (enabled, points, *node.call(inside))


BASELINE = {"keep": "me", "n": "1"}


def reset(node: FakeNode) -> None:
    """Back to a known state: only `x` enabled, with parameters a refused request could
    visibly change, and one hit so enter counts are not all zero."""

    def run() -> None:
        node.injector.disable_all()
        node.injector.enable("x", parameters=BASELINE)
        node.injector.inject("x", lambda: None, shard=1)

    node.call(run)


def check(node: FakeNode, method: str, target: str, answer: Answer, before: Any) -> None:
    """The properties every answer must have."""
    where = (method, target, answer.status, answer.body[:300])
    assert answer.status < 500, where
    if answer.content_type == "text/event-stream":
        assert (method, answer.status) == ("GET", 200), where
        assert target.split("?")[0] == f"{PREFIX}/events", where
        return
    if method != "HEAD":
        assert answer.content_type == "application/json", where
        body = answer.json()
    if answer.status >= 400:
        if method != "HEAD":
            assert isinstance(body, dict) and set(body) == {"error"}, where
            assert isinstance(body["error"], str) and body["error"], where
        assert state(node) == before, where
    else:
        assert answer.status == 200, where


@pytest.fixture
def fuzzed(node: FakeNode) -> Iterator[FakeNode]:
    """The module's node in its known state (examples that change it reset it)."""
    reset(node)
    yield node
    node.call(node.injector.disable_all)


# -- strategies --------------------------------------------------------------------------

#: Any code point, lone surrogates included (they reach a server only percent-encoded).
ANY_CHAR = st.characters(codec=None, categories=None)


def encoded(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


NAMES = st.one_of(
    st.text(ANY_CHAR, min_size=1, max_size=30).map(encoded),
    st.binary(min_size=1, max_size=30).map(lambda b: quote(b, safe="")),
    st.lists(
        st.sampled_from(["a", "/", "%2F", "%2f", "%", "%zz", ".", "..", "%00", "~"]),
        min_size=1,
        max_size=8,
    ).map("".join),
    st.integers(MAX_NAME - 2, MAX_NAME + 2).map(lambda n: "n" * n),
    st.integers(MAX_NAME - 2, MAX_NAME + 2).map(lambda n: encoded("\U0001f600" * n)),
    st.integers(MAX_NAME - 2, MAX_NAME + 2).map(lambda n: encoded("\ud800" * n)),
    st.integers(3000, 20_000).map(lambda n: "n" * n),
)

PER_NAME = [
    ("POST", ""),
    ("DELETE", ""),
    ("GET", ""),
    ("POST", "/message"),
    ("GET", "/enters"),
]
ALL_ENDPOINTS = [
    *((method, f"{PREFIX}/injection/{{name}}{suffix}") for method, suffix in PER_NAME),
    ("GET", f"{PREFIX}/injection"),
    ("DELETE", f"{PREFIX}/injection"),
    ("GET", f"{PREFIX}/points"),
    ("GET", f"{PREFIX}/events"),
]
METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"]

QUERY_KEYS = st.sampled_from(
    ["one_shot", "last_event_id", "injection", "phase", "heartbeat", "boot", "replicate", "x"]
)
QUERY_VALUES = st.one_of(
    st.sampled_from(["true", "FALSE", "1", "0", "enter", "gap", "5", "0.5", "", "-1", "nan"]),
    st.text(ANY_CHAR, max_size=20).map(encoded),
    st.binary(max_size=20).map(lambda b: quote(b, safe="")),
    st.integers(-(10**25), 10**25).map(str),
)
QUERIES = st.lists(
    st.tuples(st.one_of(QUERY_KEYS, st.text(ANY_CHAR, max_size=8).map(encoded)), QUERY_VALUES),
    max_size=5,
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))

#: Any header value HTTP allows (RFC 9110 field-content: VCHAR, obs-text, SP, HTAB).
#: Control characters make a message that is not HTTP, refused by the HTTP layer
#: before the API sees it: see test_what_is_not_http_is_refused_by_the_http_layer.
HEADER_TEXT = st.text(
    st.one_of(st.just("\t"), st.characters(min_codepoint=0x20, max_codepoint=0xFF)).filter(
        lambda c: c != "\x7f"
    ),
    max_size=40,
).map(str.strip)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "Last-Event-ID": st.one_of(
            st.integers(0, 10**20).map(str),
            st.sampled_from(["", " 7 ", "-1", "1.0", "0x1", "\u00b2", "99999999999999999999"]),
            HEADER_TEXT,
        ),
        "Authorization": st.one_of(st.just("Bearer x"), HEADER_TEXT),
        "Content-Type": st.one_of(
            st.sampled_from(["application/json", "text/plain", "multipart/form-data"]),
            HEADER_TEXT,
        ),
        "Content-Encoding": st.sampled_from(["gzip", "deflate", "br", "zstd", "identity", "x"]),
        "Accept": st.sampled_from(["text/event-stream", "text/html", "*/*"]),
    },
)

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(ANY_CHAR, max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(ANY_CHAR, max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def dump(value: Any) -> bytes:
    return json.dumps(value).encode()


BODIES = st.one_of(
    st.none(),
    JSON_VALUES.map(dump),
    st.dictionaries(
        st.text(ANY_CHAR, max_size=10),
        st.one_of(st.text(ANY_CHAR, max_size=10), st.integers(), st.floats(), st.booleans()),
        max_size=5,
    ).map(lambda d: json.dumps(d, allow_nan=True).encode()),
    st.binary(max_size=300),
    st.sampled_from([b"", b" ", b"{}", b"\xef\xbb\xbf{}", b"[" * 5000, b'{"a":' * 3000]),
)


def note(what: str) -> None:
    TRIED[what] = TRIED.get(what, 0) + 1


# -- properties --------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_any_name_on_every_per_name_endpoint(fuzzed: FakeNode, data: st.DataObject) -> None:
    """Names of any code point (lone surrogates through percent-encoding), any bytes,
    `/` and `%2F`, names at and past the 1024-character limit, and names far past what
    fits in a request line."""
    node = fuzzed
    name = data.draw(NAMES, label="name")
    method, suffix = data.draw(st.sampled_from(PER_NAME), label="endpoint")
    target = f"{PREFIX}/injection/{name}{suffix}"
    before = state(node)
    answer = send(node, method, target)
    check(node, method, target, answer, before)
    note("names")
    if answer.status == 200 and method != "GET":
        reset(node)


@FUZZ
@given(data=st.data())
def test_any_query_and_headers_on_every_endpoint(fuzzed: FakeNode, data: st.DataObject) -> None:
    """Every endpoint, and wrong methods on it, with any query string (known keys with
    odd values, unknown keys, invalid UTF-8) and any headers a client can send
    (Last-Event-ID variants, Authorization on a node without a token, content headers)."""
    node = fuzzed
    method, template = data.draw(st.sampled_from(ALL_ENDPOINTS), label="endpoint")
    if data.draw(st.integers(0, 4), label="wrong method?") == 0:
        method = data.draw(st.sampled_from(METHODS), label="method")
    name = data.draw(st.sampled_from(["x", "y", "kv_write_delay", "a%2Fb"]), label="name")
    query = data.draw(QUERIES, label="query")
    headers = data.draw(HEADERS, label="headers")
    target = template.replace("{name}", name) + (f"?{query}" if query else "")
    body = b"{}" if method in ("POST", "PUT", "PATCH") else None
    before = state(node)
    answer = send(node, method, target, headers, body)
    check(node, method, target, answer, before)
    note("queries and headers")
    if answer.status == 200 and method not in ("GET", "HEAD"):
        reset(node)


@FUZZ
@given(body=BODIES, headers=HEADERS, name=st.sampled_from(["x", "fresh"]))
def test_any_body_on_enable(
    fuzzed: FakeNode, body: bytes | None, headers: dict[str, str], name: str
) -> None:
    """Any JSON (nested, null, numbers, lone surrogates escaped) and any bytes, on an
    enabled injection (a refused body must not touch its parameters) and a new one."""
    node = fuzzed
    headers = {k: v for k, v in headers.items() if k != "Last-Event-ID"}
    target = f"{PREFIX}/injection/{name}"
    before = state(node)
    answer = send(node, "POST", target, headers, body)
    check(node, "POST", target, answer, before)
    note("bodies")
    if answer.status == 200:
        parameters = answer.json()["parameters"]
        assert node.call(node.injector.get_parameters, name) == parameters
        reset(node)


def handling(node: FakeNode, sock: socket.socket) -> None:
    """Wait until the node handles the request: a handler runs (it has the headers and
    reads the body), or it already answered. A bounded condition loop: the node's loop
    offers no event to wait on from another thread."""

    def busy() -> bool:
        return any("_handle_request" in repr(task.get_coro()) for task in asyncio.all_tasks())

    deadline = time.monotonic() + REQUEST_TIMEOUT
    while not node.call(busy) and not select.select([sock], [], [], 0.002)[0]:
        assert time.monotonic() < deadline, "the node never began to handle the request"


def exchange(node: FakeNode, *parts: bytes) -> tuple[int, str, bytes]:
    """Send raw bytes, each part once the node handles what came before, and read one
    answer: status, content type and body."""
    with socket.create_connection((node.host, node.port), timeout=REQUEST_TIMEOUT) as sock:
        for index, part in enumerate(parts):
            if index:
                handling(node, sock)
            with contextlib.suppress(OSError):  # it may have answered and closed already
                sock.sendall(part)
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            return response.status, response.headers.get_content_type(), response.read()
        finally:
            response.close()


HEAD = b"POST /v2/error_injection/injection/x HTTP/1.1\r\nHost: localhost\r\n"


@pytest.mark.parametrize(
    ("parts", "status", "says"),
    [
        ([HEAD + b"X: \x1b\r\n\r\n"], 400, "bad HTTP request"),
        ([HEAD + b"X: a\rb\r\n\r\n"], 400, "bad HTTP request"),
        ([HEAD + b"Content-Encoding: br\r\nContent-Length: 2\r\n\r\n{}"], 400, "br"),
        (
            [b"GET /" + b"a" * (70 * 1024) + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"],
            400,
            "65536 bytes",
        ),
        ([HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"], 400, "chunk"),
        # The body arrives after the handler began: the parser's error must not leave
        # the handler waiting for a body that never ends.
        (
            [HEAD + b"Content-Encoding: deflate\r\nContent-Length: 2\r\n\r\n", b"{}"],
            415,
            "compressed",
        ),
        ([HEAD + b"Content-Encoding: gzip\r\nContent-Length: 2\r\n\r\n", b"{}"], 415, "compressed"),
        ([HEAD + b"Transfer-Encoding: chunked\r\n\r\n", b"zz\r\n{}\r\n0\r\n\r\n"], 408, "within"),
        ([HEAD + b"Content-Length: 10\r\n\r\n", b"{}"], 408, "within"),
    ],
    ids=[
        "control-char",
        "bare-cr",
        "unknown-encoding",
        "line-over-64k",
        "bad-chunk",
        "deflate-later",
        "gzip-later",
        "bad-chunk-later",
        "body-never-ends",
    ],
)
def test_what_is_not_http_is_refused_in_json_and_never_hangs(
    parts: list[bytes], status: int, says: str
) -> None:
    """What aiohttp's HTTP parser refuses before the API sees it gets the same JSON
    error as any bad input, and a body the parser fails on, or that never ends, gets an
    answer within the node's body timeout instead of a handler waiting forever."""
    with FakeNode(body_timeout=0.5) as fresh:
        before = state(fresh)
        got_status, content_type, body = exchange(fresh, *parts)
        assert (got_status, content_type) == (status, "application/json"), body
        error = json.loads(body)
        assert set(error) == {"error"} and says in error["error"], error
        assert state(fresh) == before
        assert send(fresh, "GET", f"{PREFIX}/injection").status == 200  # still serving


def test_no_stream_is_left_behind(node: FakeNode) -> None:
    """The streams the examples opened (and dropped at once) are all gone from the node."""
    deadline = time.monotonic() + 5
    while node.call(lambda: node.event_log.subscriber_count) and time.monotonic() < deadline:
        time.sleep(0.01)  # the node notices a closed client on its own loop; no event to await
    assert node.call(lambda: node.event_log.subscriber_count) == 0


# -- the OpenAPI document ----------------------------------------------------------------


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))


def resolve(spec: dict[str, Any], item: Any) -> Any:
    while isinstance(item, dict) and "$ref" in item:
        path = item["$ref"].removeprefix("#/").split("/")
        item = spec
        for part in path:
            item = item[part]
    return item


def conforms(spec: dict[str, Any], schema: Any, value: Any, where: str = "$") -> list[str]:
    """The JSON Schema subset the document uses; the list of violations."""
    schema = resolve(spec, schema)
    problems: list[str] = []
    if "oneOf" in schema or "anyOf" in schema:
        options = schema.get("oneOf") or schema.get("anyOf")
        passing = [o for o in options if not conforms(spec, o, value, where)]
        if not passing or ("oneOf" in schema and len(passing) > 1):
            problems.append(f"{where}: {value!r} matches {len(passing)} of the alternatives")
        return problems
    if value is None and schema.get("nullable"):
        return problems
    for part in schema.get("allOf", []):
        problems += conforms(spec, part, value, where)
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if schema.get("nullable"):
            kinds = [*kinds, "null"]
        checks = {
            "string": lambda v: isinstance(v, str),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "boolean": lambda v: isinstance(v, bool),
            "array": lambda v: isinstance(v, list),
            "object": lambda v: isinstance(v, dict),
            "null": lambda v: v is None,
        }
        if not any(checks[kind](value) for kind in kinds):
            return [f"{where}: {value!r} is not {'/'.join(kinds)}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            problems.append(f"{where}: shorter than {schema['minLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{where}: {value} below {schema['minimum']}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems += conforms(spec, schema["items"], item, f"{where}[{index}]")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                problems.append(f"{where}: missing {key!r}")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                problems += conforms(spec, properties[key], item, f"{where}.{key}")
            elif extra is False:
                problems.append(f"{where}: unexpected {key!r}")
            elif isinstance(extra, dict):
                problems += conforms(spec, extra, item, f"{where}.{key}")
    return problems


@pytest.mark.asyncio
async def test_stream_events_conform_to_the_openapi_document(spec: dict[str, Any]) -> None:
    """The stream's events, every phase, a truncated one and a gap, are the document's
    event objects."""
    schema = spec["paths"][f"{PREFIX}/events"]["get"]["responses"]["200"]["content"]
    schema = schema["text/event-stream"]["schema"]
    with FakeNode(event_capacity=5) as node:

        def publish() -> None:
            injector = node.injector
            injector.enable("kv_write_delay", parameters={"ms": "0"})
            injector.enable("big", parameters={"p": "x" * 5000})
            injector.inject("big", lambda: None)
            injector.receive_message("big")
            injector.disable("big")
            injector.enable("undeclared")

        node.call(publish)
        async with aiohttp.ClientSession() as http:
            params = {"last_event_id": "0", "phase": "all"}
            async with http.get(f"{node.url}{PREFIX}/events", params=params) as response:
                events = []
                while len(events) < 6:
                    line = await asyncio.wait_for(response.content.readline(), 5)
                    if line.startswith(b"data: "):
                        events.append(json.loads(line[6:]))
    phases = [e["phase"] for e in events]
    assert phases == ["gap", "enable", "enter", "message", "disable", "enable"]
    assert events[2]["parameters_truncated"] is True
    assert conforms(spec, schema, events) == []
    broken = [{**events[2], "parameters_truncated": False}, {**events[1], "shard": "0"}]
    assert len(conforms(spec, schema, broken)) == 2  # the check can fail


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path, operation), the path's parameters merged into the operation's."""
    found = []
    for path, item in spec["paths"].items():
        shared = item.get("parameters", [])
        for method, operation in item.items():
            if method in ("get", "post", "delete", "put", "patch", "head"):
                merged = {**operation, "parameters": [*shared, *operation.get("parameters", [])]}
                found.append((method.upper(), path, merged))
    return found


def test_the_document_describes_exactly_the_servers_routes(spec: dict[str, Any]) -> None:
    """Every §5 route the server adds is in the document with its method, and the
    document has nothing the server does not serve (HEAD, which aiohttp adds to each GET
    but the events stream, is left out of both)."""
    app = __import__("aiohttp").web.Application()
    InjectionRoutes(Injector(), EventLog()).add_to(app)
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {(method, path) for method, path, _ in operations(spec)}
    assert documented == served
    assert spec["openapi"].startswith("3.")


def value_for(spec: dict[str, Any], schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that fit a parameter's schema: what the document says is valid."""
    schema = resolve(spec, schema)
    if "oneOf" in schema:
        return st.one_of(*(value_for(spec, option) for option in schema["oneOf"]))
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return st.lists(value_for(spec, schema["items"]), max_size=3)
    if kind == "integer":
        return st.integers(schema.get("minimum", 0), 10**6)
    if kind == "number":
        return st.floats(schema.get("minimum", 0.01), schema.get("maximum", 3600))
    if kind == "boolean":
        return st.booleans()
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True)
    return st.text(
        ANY_CHAR.filter(lambda c: not 0xD800 <= ord(c) <= 0xDFFF),
        min_size=schema.get("minLength", 0),
        max_size=min(schema.get("maxLength", 30), 30),
    )


def as_query_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@settings(FUZZ, max_examples=400)
@given(data=st.data())
def test_answers_conform_to_the_openapi_document(
    fuzzed: FakeNode, spec: dict[str, Any], data: st.DataObject
) -> None:
    """For a documented operation, with parameters the document allows (or, one time in
    four, any value), the answer's status is one the operation documents, with the
    documented content type and a body that fits the documented schema."""
    node = fuzzed
    method, path, operation = data.draw(st.sampled_from(operations(spec)), label="operation")
    parameters = [resolve(spec, p) for p in operation.get("parameters", [])]
    target = path
    query: list[tuple[str, str]] = []
    headers: dict[str, str] = {}
    for parameter in parameters:
        if not parameter.get("required") and data.draw(st.booleans(), label="omit?"):
            continue
        schema = parameter["schema"]
        if data.draw(st.integers(0, 3), label="out of schema?") == 0:
            value: Any = data.draw(st.text(ANY_CHAR, max_size=12), label=parameter["name"])
            if parameter["in"] == "path" and not value:
                value = "v"
        else:
            value = data.draw(value_for(spec, schema), label=parameter["name"])
        if parameter["in"] == "path":
            target = target.replace("{" + parameter["name"] + "}", encoded(value))
        elif parameter["in"] == "query":
            values = value if isinstance(value, list) else [value]
            query += [(parameter["name"], as_query_text(v)) for v in values]
        elif parameter["in"] == "header":
            headers[parameter["name"]] = (
                as_query_text(value).encode("latin-1", "replace").decode("latin-1")
            )
    if query:
        target += "?" + "&".join(f"{k}={encoded(v)}" for k, v in query)
    body = None
    if "requestBody" in operation:
        body = data.draw(
            st.one_of(
                st.dictionaries(
                    st.text(max_size=8),
                    st.one_of(st.text(max_size=8), st.integers(), st.booleans()),
                    max_size=3,
                ).map(dump),
                JSON_VALUES.map(dump),
            ),
            label="body",
        )
        headers["Content-Type"] = "application/json"
    headers = {k: v.strip() for k, v in headers.items()}
    before = state(node)
    answer = send(node, method, target, headers, body)
    check(node, method, target, answer, before)
    responses = operation["responses"]
    documented = responses.get(str(answer.status))
    assert documented is not None, (method, target, answer.status, answer.body[:200])
    documented = resolve(spec, documented)
    content = documented.get("content", {})
    assert answer.content_type in content, (method, target, answer.status, answer.content_type)
    for header in documented.get("headers", {}):
        assert header in answer.headers, (method, target, header)
    schema = content[answer.content_type].get("schema")
    if schema is not None and answer.content_type == "application/json":
        problems = conforms(spec, schema, answer.json())
        assert problems == [], (method, target, answer.status, problems)
    note(f"openapi {method} {path}")
    if answer.status == 200 and method != "GET":
        reset(node)


def test_error_answers_are_documented_once_for_all(spec: dict[str, Any]) -> None:
    """Every operation documents 401 (a node with a token checks it before anything
    else) and 400 where it takes input; enable documents 413, the stream 503."""
    for method, path, operation in operations(spec):
        responses = operation["responses"]
        assert "200" in responses and "401" in responses, (method, path)
        if operation.get("parameters") or "requestBody" in operation:
            assert "400" in responses, (method, path)
    assert "413" in spec["paths"][f"{PREFIX}/injection/{{name}}"]["post"]["responses"]
    assert "503" in spec["paths"][f"{PREFIX}/events"]["get"]["responses"]
