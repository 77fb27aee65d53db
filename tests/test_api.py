"""The §5 REST API of a real node over real HTTP: every row answers what ScyllaDB answers,
every bad input is a 4xx JSON error that changes nothing, and nothing makes the node 500."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio
from sse import open_stream
from yarl import URL

from pytest_injection_events.events import EventLog
from pytest_injection_events.injector import Injector
from pytest_injection_events.node import FakeNode
from pytest_injection_events.server import MAX_BODY, MAX_NAME, InjectionServer

API = "/v2/error_injection"


def url(node: FakeNode, path: str) -> URL:
    """An already-encoded URL, so `%2F` in a name stays one path segment."""
    return URL(node.url + path, encoded=True)


def one(name: str, suffix: str = "") -> str:
    return f"{API}/injection/{quote(name, safe='')}{suffix}"


async def call(
    http: aiohttp.ClientSession, method: str, target: URL, **kwargs: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """Status and decoded JSON body; any answer must be JSON, success or not."""
    async with http.request(method, target, **kwargs) as response:
        text = await response.text()
        assert response.content_type == "application/json", (response.status, text)
        return response.status, json.loads(text), response


async def ok(http: aiohttp.ClientSession, method: str, target: URL, **kwargs: Any) -> Any:
    """ScyllaDB's test client treats anything but 200 as an error."""
    status, body, _ = await call(http, method, target, **kwargs)
    assert status == 200, body
    return body


def hit(node: FakeNode, name: str, shard: int = 0) -> None:
    """Enter a `lambda` point on the node's own loop, as the node's code would."""
    node.call(lambda: node.injector.inject(name, lambda: None, shard=shard))


def snapshot(node: FakeNode) -> tuple[Any, ...]:
    """Everything a request could change: enabled set, per-shard state, counts, catalog,
    events published."""

    def take() -> tuple[Any, ...]:
        injector = node.injector
        names = set(injector.enabled_injections()) | set(injector.enter_counts()) | {"x"}
        return (
            injector.enabled_injections(),
            {name: injector.injection_state(name) for name in sorted(names)},
            injector.enter_counts(),
            injector.catalog(),
            node.event_log.last_seq,
        )

    return node.call(take)


@pytest.fixture
def node2() -> Iterator[FakeNode]:
    """Two shards, so per-shard answers and summed counts mean something."""
    with FakeNode(shards=2) as fake:
        yield fake


# -- item 2: every row of the §5 table -----------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("value", "one_shot"),
    [
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("1", True),
        ("false", False),
        ("False", False),
        ("FALSE", False),
        ("0", False),
        (None, False),
    ],
)
async def test_enable_one_shot_forms(
    node: FakeNode, http: aiohttp.ClientSession, value: str | None, one_shot: bool
) -> None:
    """ScyllaDB's test client sends `True`/`False`; curl users write true/1; all must work."""
    params = {} if value is None else {"one_shot": value}
    body = await ok(http, "POST", url(node, one("p")), params=params)
    assert body["injection"] == "p" and body["one_shot"] is one_shot
    assert await ok(http, "GET", url(node, f"{API}/injection")) == ["p"]
    hit(node, "p")
    hit(node, "p")
    # A one-shot fires once and then disables itself; a permanent one keeps firing.
    assert await ok(http, "GET", url(node, one("p", "/enters"))) == (1 if one_shot else 2)
    assert await ok(http, "GET", url(node, f"{API}/injection")) == ([] if one_shot else ["p"])


@pytest.mark.asyncio
async def test_enable_parameters_are_stringified_like_scylla(
    node2: FakeNode, http: aiohttp.ClientSession
) -> None:
    """Numbers and booleans become strings (what `str()` in ScyllaDB's client sends);
    GET of one injection answers one `{"enabled", "parameters": [{key, value}]}` per shard."""
    body = {"s": "text", "i": 5, "f": 1.5, "t": True, "n": False, "u": "ünï"}
    answer = await ok(http, "POST", url(node2, one("p")), json=body)
    expected = {"s": "text", "i": "5", "f": "1.5", "t": "True", "n": "False", "u": "ünï"}
    assert answer["parameters"] == expected
    state = await ok(http, "GET", url(node2, one("p")))
    pairs = [{"key": k, "value": v} for k, v in expected.items()]
    assert state == [{"enabled": True, "parameters": pairs}] * 2
    # Re-enabling replaces the parameters (and resets the count).
    hit(node2, "p")
    await ok(http, "POST", url(node2, one("p")), json={"only": "this"})
    state = await ok(http, "GET", url(node2, one("p")))
    assert state == [{"enabled": True, "parameters": [{"key": "only", "value": "this"}]}] * 2
    assert await ok(http, "GET", url(node2, one("p", "/enters"))) == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("body", [None, b"", b"  \n", b"{}"])
async def test_enable_with_empty_body(
    node: FakeNode, http: aiohttp.ClientSession, body: bytes | None
) -> None:
    """Parameters are optional: no body, an empty one or `{}` all enable with none."""
    answer = await ok(http, "POST", url(node, one("p")), data=body)
    assert answer["parameters"] == {}
    assert await ok(http, "GET", url(node, one("p"))) == [{"enabled": True, "parameters": []}]


@pytest.mark.asyncio
async def test_body_of_exactly_one_mib_is_accepted(
    node: FakeNode, http: aiohttp.ClientSession
) -> None:
    """The limit is ScyllaDB's: over 1 MiB is refused, 1 MiB itself is not."""
    padding = MAX_BODY - len(b'{"k": ""}')
    body = b'{"k": "' + b"v" * padding + b'"}'
    assert len(body) == MAX_BODY
    await ok(http, "POST", url(node, one("p")), data=body)
    assert node.call(lambda: len(node.injector.get_parameters("p")["k"])) == padding


@pytest.mark.asyncio
async def test_per_shard_state_one_shot_and_summed_enters(
    node2: FakeNode, http: aiohttp.ClientSession
) -> None:
    """A one-shot fires once per shard, is listed while any shard holds it, and /enters
    is a bare integer summed over shards."""
    await ok(http, "POST", url(node2, one("p")), params={"one_shot": "True"}, json={"a": "1"})
    hit(node2, "p", shard=0)
    hit(node2, "p", shard=0)  # spent on shard 0: does not fire again there
    shards = await ok(http, "GET", url(node2, one("p")))
    assert [s["enabled"] for s in shards] == [False, True]
    assert await ok(http, "GET", url(node2, f"{API}/injection")) == ["p"]
    hit(node2, "p", shard=1)
    async with http.get(url(node2, one("p", "/enters"))) as response:
        assert response.status == 200
        assert (await response.text()).strip() == "2"  # a bare integer, not an object
    assert await ok(http, "GET", url(node2, f"{API}/injection")) == []
    assert await ok(http, "GET", url(node2, one("p"))) == [{"enabled": False, "parameters": []}] * 2


@pytest.mark.asyncio
async def test_disable_one_list_and_disable_all(
    node2: FakeNode, http: aiohttp.ClientSession
) -> None:
    """DELETE one disables it everywhere; GET list holds only enabled names; DELETE all
    empties it. Disabling what is not enabled is not an error (as in ScyllaDB)."""
    for name in ("a", "b", "c"):
        await ok(http, "POST", url(node2, one(name)))
    assert sorted(await ok(http, "GET", url(node2, f"{API}/injection"))) == ["a", "b", "c"]
    await ok(http, "DELETE", url(node2, one("b")))
    assert sorted(await ok(http, "GET", url(node2, f"{API}/injection"))) == ["a", "c"]
    assert await ok(http, "GET", url(node2, one("b"))) == [{"enabled": False, "parameters": []}] * 2
    await ok(http, "DELETE", url(node2, one("never-enabled")))
    await ok(http, "DELETE", url(node2, f"{API}/injection"))
    assert await ok(http, "GET", url(node2, f"{API}/injection")) == []
    for name in ("a", "c"):
        shards = await ok(http, "GET", url(node2, one(name)))
        assert [s["enabled"] for s in shards] == [False, False]
    await ok(http, "DELETE", url(node2, f"{API}/injection"))  # idempotent


@pytest.mark.asyncio
async def test_message_releases_a_parked_breakpoint(
    node: FakeNode, http: aiohttp.ClientSession
) -> None:
    """POST .../message wakes a write parked at `kv_write_before_apply`; /enters saw the hit
    while it was parked (what pollers rely on)."""
    name = "kv_write_before_apply"
    await ok(http, "POST", url(node, one(name)), params={"one_shot": "True"})
    filters = [("injection", name), ("phase", "enter"), ("phase", "resume")]
    async with open_stream(http, node.url, params=filters) as stream:
        write = asyncio.create_task(http.put(f"{node.url}/kv/k", data=b"v"))
        try:
            parked = (await stream.next()).json
            assert (parked["injection"], parked["phase"]) == (name, "enter")
            assert await ok(http, "GET", url(node, one(name, "/enters"))) == 1
            answer = await ok(http, "POST", url(node, one(name, "/message")))
            assert answer == {"injection": name, "waiters": 1}
            assert (await stream.next()).json["phase"] == "resume"
            async with await write as response:
                assert response.status == 200
        finally:
            if not write.done():
                write.cancel()
            await asyncio.gather(write, return_exceptions=True)
    async with http.get(f"{node.url}/kv/k") as response:
        assert await response.read() == b"v"
    # A message to an injection that is not enabled is accepted and ignored.
    assert await ok(http, "POST", url(node, one("idle", "/message"))) == {
        "injection": "idle",
        "waiters": 0,
    }


@pytest.mark.asyncio
async def test_points_catalog_counts_enters(node: FakeNode, http: aiohttp.ClientSession) -> None:
    """/points lists the declared points with their kind and doc, counts hits, and adds an
    undeclared point at its first hit."""
    points = await ok(http, "GET", url(node, f"{API}/points"))
    by_name = {p["name"]: p for p in points}
    assert set(by_name) >= {
        "kv_write_before_apply",
        "kv_write_error",
        "kv_write_delay",
        "replication_before_send",
        "replication_drop",
        "coordinator_pause_before_processing_backlog",
        "coordinator_batch_size",
    }
    for point in points:
        assert set(point) == {"name", "type", "doc", "enter_count"}
        assert point["enter_count"] == 0 and isinstance(point["doc"], str)
    assert by_name["kv_write_error"]["type"] == "exception"
    assert by_name["kv_write_before_apply"]["type"] == "wait_for_message"

    await ok(http, "POST", url(node, one("kv_write_error")))
    async with http.put(f"{node.url}/kv/k", data=b"v") as response:
        assert response.status == 500  # the one 500 there is: the injection asked for it
        assert await response.json() == {"error": "injected error: kv_write_error"}
    await ok(http, "POST", url(node, one("brand_new")))
    hit(node, "brand_new")
    by_name = {p["name"]: p for p in await ok(http, "GET", url(node, f"{API}/points"))}
    assert by_name["kv_write_error"]["enter_count"] == 1
    assert by_name["brand_new"] == {
        "name": "brand_new",
        "type": "lambda",
        "doc": "",
        "enter_count": 1,
    }


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "name",
    ["a/b", "/lead/and/trail/", "with space", "ünïcødé", "100%", "q?x#y&z=1", "a+b", "tab\tname"],
)
async def test_percent_encoded_names_round_trip(
    node: FakeNode, http: aiohttp.ClientSession, name: str
) -> None:
    """`{name}` is one percent-encoded segment: `%2F` and friends reach the injector intact
    through every per-name endpoint and come back in lists and events."""
    answer = await ok(http, "POST", url(node, one(name)), json={"k": "v"})
    assert answer["injection"] == name
    assert await ok(http, "GET", url(node, f"{API}/injection")) == [name]
    shards = await ok(http, "GET", url(node, one(name)))
    assert shards == [{"enabled": True, "parameters": [{"key": "k", "value": "v"}]}]
    async with open_stream(http, node.url, params={"injection": name, "phase": "enter"}) as stream:
        hit(node, name)
        event = (await stream.next()).json
    assert (event["injection"], event["parameters"]) == (name, {"k": "v"})
    assert await ok(http, "GET", url(node, one(name, "/enters"))) == 1
    assert (await ok(http, "POST", url(node, one(name, "/message"))))["injection"] == name
    await ok(http, "DELETE", url(node, one(name)))
    assert await ok(http, "GET", url(node, f"{API}/injection")) == []


@pytest.mark.asyncio
async def test_longest_name_is_accepted(node: FakeNode, http: aiohttp.ClientSession) -> None:
    name = "n" * MAX_NAME
    await ok(http, "POST", url(node, one(name)))
    assert await ok(http, "GET", url(node, f"{API}/injection")) == [name]


# -- item 4: bad input is a 4xx JSON error that changes nothing -------------------------


async def refused(
    http: aiohttp.ClientSession,
    node: FakeNode,
    method: str,
    target: URL,
    status: int,
    says: str,
    **kwargs: Any,
) -> aiohttp.ClientResponse:
    """The request gets `status` with `{"error": ...}` naming the problem; state is untouched."""
    before = snapshot(node)
    code, body, response = await call(http, method, target, **kwargs)
    assert code == status, body
    assert set(body) == {"error"} and isinstance(body["error"], str)
    assert says.lower() in body["error"].lower(), body["error"]
    assert snapshot(node) == before
    return response


@pytest_asyncio.fixture
async def enabled(node: FakeNode, http: aiohttp.ClientSession) -> FakeNode:
    """A node with `x` enabled with a parameter, so a refused request could visibly change it."""
    await ok(http, "POST", url(node, one("x")), json={"keep": "me"})
    return node


BAD_BODIES = [
    (b"[1, 2]", "JSON object"),
    (b'"text"', "JSON object"),
    (b"42", "JSON object"),
    (b"null", "JSON object"),
    (b"{", "not valid JSON"),
    (b"{'a': 'b'}", "not valid JSON"),
    (b'{"a": {"b": "c"}}', "'a'"),
    (b'{"a": ["b"]}', "'a'"),
    (b'{"a": null}', "null"),
    (b'{"a": NaN}', "NaN"),
    (b'{"a": -Infinity}', "Infinity"),
    (b'{"a": "b"} trailing', "not valid JSON"),
    (b"\xff\xfe{}", "UTF-8"),
    (b'{"\\ud800": "lone surrogate"}', "UTF-8"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("body", "says"), BAD_BODIES)
async def test_bad_body_is_refused(
    enabled: FakeNode, http: aiohttp.ClientSession, body: bytes, says: str
) -> None:
    """Parameters must be a JSON object of strings (numbers/booleans allowed), nothing nested."""
    for name in ("x", "y"):  # re-enabling an enabled one, and enabling a new one
        await refused(http, enabled, "POST", url(enabled, one(name)), 400, says, data=body)


@pytest.mark.asyncio
async def test_body_over_one_mib_is_413(enabled: FakeNode, http: aiohttp.ClientSession) -> None:
    body = io.BytesIO(b'{"k": "' + b"v" * MAX_BODY + b'"}')  # bytes this big make aiohttp warn
    await refused(http, enabled, "POST", url(enabled, one("x")), 413, "too large", data=body)


@pytest.mark.asyncio
@pytest.mark.parametrize("value", ["yes", "2", "", "truee", "-1", " true", "T", "null"])
async def test_bad_one_shot_is_refused(
    enabled: FakeNode, http: aiohttp.ClientSession, value: str
) -> None:
    target = url(enabled, one("x")).update_query(one_shot=value)
    await refused(http, enabled, "POST", target, 400, "one_shot")


BAD_SEQS = ["-1", "abc", "1.5", "1e3", "0x10", "+1", "99999999999999999999", "١٢"]


@pytest.mark.asyncio
@pytest.mark.parametrize("value", BAD_SEQS)
async def test_bad_last_event_id_is_refused(
    enabled: FakeNode, http: aiohttp.ClientSession, value: str
) -> None:
    """A resume point must be a seq, in the header and in the query alike."""
    events = url(enabled, f"{API}/events")
    await refused(
        http, enabled, "GET", events, 400, "Last-Event-ID", headers={"Last-Event-ID": value}
    )
    await refused(
        http, enabled, "GET", events.update_query(last_event_id=value), 400, "last_event_id"
    )
    assert enabled.event_log.subscriber_count == 0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("query", "says"),
    [
        ([("phase", "bogus")], "phase"),
        ([("phase", "")], "phase"),
        ([("phase", "enter"), ("phase", "nope")], "nope"),
        ([("injection", "")], "injection"),
        ([("heartbeat", "abc")], "heartbeat"),
        ([("heartbeat", "0")], "heartbeat"),
        ([("heartbeat", "-1")], "heartbeat"),
        ([("heartbeat", "nan")], "heartbeat"),
        ([("heartbeat", "inf")], "heartbeat"),
        ([("heartbeat", "0.001")], "heartbeat"),
        ([("heartbeat", "1e9")], "heartbeat"),
        ([("heartbeat", "")], "heartbeat"),
    ],
)
async def test_bad_stream_parameters_are_refused(
    enabled: FakeNode, http: aiohttp.ClientSession, query: list[tuple[str, str]], says: str
) -> None:
    target = url(enabled, f"{API}/events").update_query(query)
    await refused(http, enabled, "GET", target, 400, says)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        API,
        f"{API}/",
        f"{API}/nope",
        f"{API}/injection/",
        f"{API}/injection/a/b/c",
        f"{API}/injection/a/enters/x",
        f"{API}/points/x",
        f"{API}/events/x",
        "/v1/error_injection",
    ],
)
async def test_unknown_path_is_404(
    enabled: FakeNode, http: aiohttp.ClientSession, path: str
) -> None:
    for method in ("GET", "POST", "DELETE"):
        await refused(http, enabled, method, url(enabled, path), 404, "no such endpoint")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", one("x"), {"DELETE", "GET", "HEAD", "POST"}),
        ("PATCH", one("x"), {"DELETE", "GET", "HEAD", "POST"}),
        ("POST", f"{API}/injection", {"DELETE", "GET", "HEAD"}),
        ("PUT", f"{API}/injection", {"DELETE", "GET", "HEAD"}),
        ("GET", one("x", "/message"), {"POST"}),
        ("DELETE", one("x", "/message"), {"POST"}),
        ("POST", one("x", "/enters"), {"GET", "HEAD"}),
        ("DELETE", one("x", "/enters"), {"GET", "HEAD"}),
        ("POST", f"{API}/points", {"GET", "HEAD"}),
        ("POST", f"{API}/events", {"GET"}),
        ("DELETE", f"{API}/events", {"GET"}),
        ("HEAD", f"{API}/events", {"GET"}),
    ],
)
async def test_wrong_method_is_405_with_allow(
    enabled: FakeNode, http: aiohttp.ClientSession, method: str, path: str, allow: set[str]
) -> None:
    before = snapshot(enabled)
    async with http.request(method, url(enabled, path)) as response:
        assert response.status == 405
        assert set(response.headers["Allow"].split(",")) == allow
        if method != "HEAD":
            body = await response.json()
            assert set(body) == {"error"} and method in body["error"], body
    assert snapshot(enabled) == before


@pytest.mark.asyncio
async def test_too_long_name_is_refused_everywhere(
    enabled: FakeNode, http: aiohttp.ClientSession
) -> None:
    name = "n" * (MAX_NAME + 1)
    per_name = [("POST", ""), ("DELETE", ""), ("GET", ""), ("POST", "/message"), ("GET", "/enters")]
    for method, suffix in per_name:
        await refused(http, enabled, method, url(enabled, one(name, suffix)), 400, "too long")


@pytest.mark.asyncio
async def test_no_request_gets_a_500(enabled: FakeNode, http: aiohttp.ClientSession) -> None:
    """A batch of odd requests: each gets a JSON answer below 500 and the node keeps serving."""
    odd: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", one("x"), {"data": b"\x00\x01\x02"}),
        ("POST", one("x"), {"data": b'{"a": 1e999}'}),
        ("POST", one("x"), {"data": b'{"a": 123456789012345678901234567890}'}),
        ("POST", one("x"), {"data": b'{"a": "1", "a": 2}'}),
        ("POST", one("x"), {"data": b"[" * 100_000}),
        ("POST", one("x"), {"data": b'{"' + b"k" * 1000 + b'": "' + b"\\u0000" * 1000 + b'"}'}),
        ("POST", one("x"), {"data": b"{}", "headers": {"Content-Type": "text/plain"}}),
        ("POST", one("x"), {"data": b'{"a": "b"}', "headers": {"Content-Encoding": "gzip"}}),
        ("POST", f"{API}/injection/%C3%28", {}),
        ("POST", f"{API}/injection/%ED%A0%80", {}),
        ("POST", f"{API}/injection/%zz", {}),
        ("POST", f"{API}/injection/%00", {}),
        ("POST", f"{API}/injection/%2e%2e", {}),
        ("GET", f"{API}/injection/%C3%28/enters", {}),
        ("POST", one("x") + "?one_shot=%FF", {}),
        ("POST", one("x") + "?one_shot=true&one_shot=false", {}),
        ("GET", f"{API}/events?phase=%FF", {}),
        ("GET", f"{API}/events?last_event_id=%00", {}),
        ("GET", f"{API}/events?heartbeat=1e400", {}),
        ("GET", f"{API}/events", {"headers": {"Last-Event-ID": "\u00ff"}}),
        ("GET", f"{API}/events", {"headers": {"Last-Event-ID": "1" * 1000}}),
        ("GET", f"{API}/injection?" + "a=b&" * 2000, {}),
        ("OPTIONS", f"{API}/injection", {}),
        ("TRACE", f"{API}/points", {}),
        ("PUT", "/kv/k?replicate=maybe", {"data": b"v"}),
        ("POST", "/topology/requests", {"data": b"[not json"}),
        ("GET", "/topology/requests/%00", {}),
    ]
    for method, path, kwargs in odd:
        async with http.request(method, url(enabled, path), **kwargs) as response:
            body = await response.read()
            assert response.status < 500, (method, path, response.status, body)
            assert response.content_type == "application/json", (method, path, body)
            json.loads(body)
    await ok(http, "DELETE", url(enabled, f"{API}/injection"))
    assert await ok(http, "GET", url(enabled, f"{API}/injection")) == []


# -- item 4: token auth and the loopback-only default -----------------------------------


@pytest.fixture
def secured() -> Iterator[FakeNode]:
    with FakeNode(token="s3cret") as fake:
        yield fake


ENDPOINTS = [
    ("POST", one("x")),
    ("DELETE", one("x")),
    ("GET", one("x")),
    ("GET", f"{API}/injection"),
    ("DELETE", f"{API}/injection"),
    ("POST", one("x", "/message")),
    ("GET", one("x", "/enters")),
    ("GET", f"{API}/points"),
    ("GET", f"{API}/events"),
    ("GET", f"{API}/nope"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Bearer wrong", "Bearer s3cret2", "Basic czNjcmV0", "s3cret"],
)
async def test_token_refuses_every_endpoint(
    secured: FakeNode, http: aiohttp.ClientSession, authorization: str | None
) -> None:
    """With a token, nothing answers without `Authorization: Bearer <token>`: the stream
    included, and an unknown path gives nothing away either."""
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in ENDPOINTS:
        response = await refused(
            http, secured, method, url(secured, path), 401, "token", headers=headers
        )
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert secured.event_log.subscriber_count == 0


@pytest.mark.asyncio
async def test_right_token_is_accepted(secured: FakeNode, http: aiohttp.ClientSession) -> None:
    headers = {"Authorization": "Bearer s3cret"}
    await ok(http, "POST", url(secured, one("x")), headers=headers, json={"a": "b"})
    for method, path in ENDPOINTS[2:-2]:
        status, _, _ = await call(http, method, url(secured, path), headers=headers)
        assert status == 200, (method, path)
    async with open_stream(
        http, secured.url, {"last_event_id": "0", "phase": "all"}, headers
    ) as stream:
        first = (await stream.next()).json
    assert (first["injection"], first["phase"]) == ("x", "enable")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "2001:db8::1", "10.0.0.1"])
def test_non_loopback_is_refused_unless_allowed(host: str) -> None:
    """Anyone who reaches the API can stall the node, so remote binding must be asked for.
    Only constructed here, never started: tests bind loopback addresses only."""
    with pytest.raises(ValueError, match=r"not a loopback address.*allow_remote"):
        FakeNode(host=host)
    with pytest.raises(ValueError, match="allow_remote"):
        InjectionServer(Injector(), EventLog(), host=host, port=0)  # services embedding §5
    assert not FakeNode(host=host, allow_remote=True).running


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_is_accepted(host: str) -> None:
    assert not FakeNode(host=host).running


def test_default_host_is_loopback() -> None:
    assert FakeNode().host == "127.0.0.1"
