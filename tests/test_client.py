"""InjectionApi against real nodes over real HTTP: every API call, every form of
target, the errors a test author sees, the blocking `.sync` view, and no session
left open; the node and cluster given by URL and how a node is named."""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings

import aiohttp
import pytest
from helpers import closed_port
from proxy import Proxy

from pytest_injection_events import (
    ApiError,
    BadParameters,
    FakeCluster,
    InjectionApi,
    InjectionEventsError,
    NodeUnreachable,
    RemoteCluster,
    RemoteNode,
    SyncCallInLoop,
    SyncInjectionApi,
    UnknownNode,
    injection_event_stream,
    resolve_node,
)
from pytest_injection_events.node import POINTS, FakeNode


def hit(node: FakeNode, name: str, shard: int = 0) -> None:
    """Enter a `lambda` point on the node's own loop, as the node's code would."""
    node.call(lambda: node.injector.inject(name, lambda: None, shard=shard))


# -- every API call ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_enable_sends_one_shot_and_stringified_parameters(node: FakeNode) -> None:
    api = InjectionApi(node.url)
    await api.enable_injection(
        "kv_write_delay", one_shot=True, parameters={"ms": 5, "flag": True, "ratio": 0.5}
    )
    expected = {"ms": "5", "flag": "True", "ratio": "0.5"}
    assert node.call(node.injector.get_parameters, "kv_write_delay") == expected
    assert await api.get_injection("kv_write_delay") == [
        {"enabled": True, "parameters": [{"key": k, "value": v} for k, v in expected.items()]}
    ]
    hit(node, "kv_write_delay")
    hit(node, "kv_write_delay")
    assert await api.get_enter_count("kv_write_delay") == 1  # one_shot: fired once
    assert await api.get_enabled_injections() == []

    await api.enable_injection("replication_drop")  # one_shot defaults to False
    hit(node, "replication_drop")
    hit(node, "replication_drop")
    assert await api.get_enter_count("replication_drop") == 2
    assert await api.get_enabled_injections() == ["replication_drop"]
    assert node.call(node.injector.get_parameters, "replication_drop") == {}


@pytest.mark.asyncio
async def test_disable_and_disable_all(node: FakeNode) -> None:
    api = InjectionApi(node.url)
    for name in ("a", "b", "c"):
        await api.enable_injection(name)
    await api.disable_injection("b")
    assert sorted(await api.get_enabled_injections()) == ["a", "c"]
    await api.disable_injection("never_enabled")  # harmless, as in ScyllaDB
    await api.disable_all()
    assert await api.get_enabled_injections() == []


@pytest.mark.asyncio
async def test_get_injection_answers_one_entry_per_shard() -> None:
    with FakeNode(shards=2) as node:
        api = InjectionApi(node.url)
        assert await api.get_injection("p") == [{"enabled": False, "parameters": []}] * 2
        await api.enable_injection("p", one_shot=True, parameters={"k": "v"})
        hit(node, "p", shard=1)
        state = await api.get_injection("p")
        assert state == [
            {"enabled": True, "parameters": [{"key": "k", "value": "v"}]},
            {"enabled": False, "parameters": [{"key": "k", "value": "v"}]},
        ]
        assert await api.get_enabled_injections() == ["p"]  # shard 0 still holds it
        hit(node, "p", shard=0)
        assert await api.get_enabled_injections() == []
        assert await api.get_enter_count("p") == 2  # summed over shards


@pytest.mark.asyncio
async def test_message_releases_a_parked_write(node: FakeNode, http: aiohttp.ClientSession) -> None:
    api = InjectionApi(node.url)
    async with injection_event_stream(node.url) as stream:
        await api.enable_injection("kv_write_before_apply", one_shot=True)
        put = asyncio.create_task(http.put(f"{node.url}/kv/k", data=b"v"))
        await stream.wait_for_injection("kv_write_before_apply", timeout=5)
        assert await api.get_enter_count("kv_write_before_apply") == 1
        assert not put.done()
        await api.message_injection("kv_write_before_apply")
        await stream.wait_for_injection("kv_write_before_apply", timeout=5, phase="resume")
        async with await asyncio.wait_for(put, 5) as response:
            assert response.status == 200
    async with http.get(f"{node.url}/kv/k") as response:
        assert await response.read() == b"v"


@pytest.mark.asyncio
async def test_points_lists_the_catalog_with_counts(node: FakeNode) -> None:
    api = InjectionApi(node.url)
    await api.enable_injection("replication_drop")
    hit(node, "replication_drop")
    points = {p["name"]: p for p in await api.points()}
    assert set(points) == {p.name for p in POINTS}
    for point in POINTS:
        assert points[point.name]["type"] == point.kind
        assert points[point.name]["doc"] == point.doc
    assert points["replication_drop"]["enter_count"] == 1
    assert points["kv_write_error"]["enter_count"] == 0


@pytest.mark.asyncio
async def test_a_name_is_one_path_segment(node: FakeNode) -> None:
    """`/`, `?`, `%` and spaces in a name must not change the path."""
    api = InjectionApi(node.url)
    name = "a/b c?d%2F"
    await api.enable_injection(name)
    assert await api.get_enabled_injections() == [name]
    hit(node, name)
    assert await api.get_enter_count(name) == 1
    await api.disable_injection(name)
    assert await api.get_enabled_injections() == []


# -- targets ----------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("form", ["url", "url/", "host:port", " host:port "])
async def test_target_as_url_or_host_port(node: FakeNode, form: str) -> None:
    target = {
        "url": node.url,
        "url/": node.url + "/",
        "host:port": f"127.0.0.1:{node.port}",
        " host:port ": f" 127.0.0.1:{node.port} ",
    }[form]
    api = InjectionApi(target)
    assert api.url == node.url
    await api.enable_injection("p")
    assert await api.get_enabled_injections() == ["p"]


@pytest.mark.parametrize(
    ("target", "url"),
    [
        ("scylla-1", "http://scylla-1:10000"),
        ("10.0.0.5", "http://10.0.0.5:10000"),
        ("https://scylla-1", "https://scylla-1:10000"),
        ("[::1]:9000", "http://[::1]:9000"),
        ("::1", "http://[::1]:10000"),
    ],
)
def test_bare_host_means_port_10000(target: str, url: str) -> None:
    """Only the URL it builds: nothing may bind or call port 10000 here."""
    assert InjectionApi(target).url == url
    assert SyncInjectionApi(target).url == url
    remote = RemoteNode(target)
    assert (remote.url, str(remote.port)) == (url, url.rsplit(":", 1)[1])
    assert str(InjectionApi(target)._url("injection", "x/y", "enters")) == (
        f"{url}/v2/error_injection/injection/x%2Fy/enters"
    )


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("", "empty node address"),
        ("ftp://h", "not a node address: 'ftp://h'"),
        ("h:port", "bad port in node address 'h:port'"),
        ("http://h:99999", "bad port in node address 'http://h:99999'"),
    ],
)
def test_bad_target_is_refused_at_once(target: str, words: str) -> None:
    with pytest.raises(ValueError, match="^" + words.replace("?", r"\?")):
        InjectionApi(target)


# -- errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "words"),
    [
        ({"ms": None}, "parameter 'ms': keys are str and values str, int, float or bool"),
        ({"ms": [1]}, "got list [1]"),
        ({"ms": {"a": 1}}, "got dict"),
        ({1: "x"}, "parameter 1: keys are str"),
        (["ms"], "parameters must be a dict, got list"),
    ],
)
def test_parameter_values_are_refused_before_any_request(parameters: object, words: str) -> None:
    """`None` would reach the node as the text "None": a TypeError names the key instead.

    The node's port is closed, so a request would have been a NodeUnreachable.
    """
    api = InjectionApi(f"127.0.0.1:{closed_port()}")
    for call in (
        lambda: asyncio.run(api.enable_injection("p", parameters=parameters)),  # type: ignore[arg-type]
        lambda: api.sync.enable_injection("p", parameters=parameters),  # type: ignore[arg-type]
    ):
        with pytest.raises(BadParameters, match=words.replace("[", r"\[")) as caught:
            call()
        assert isinstance(caught.value, TypeError)


@pytest.mark.asyncio
async def test_a_4xx_is_api_error_with_status_and_the_nodes_message(node: FakeNode) -> None:
    api = InjectionApi(node.url)
    with pytest.raises(ApiError) as caught:
        await api.enable_injection("x" * 1025)
    error = caught.value
    assert error.status == 400
    assert error.method == "POST"
    assert error.message == "injection name too long: 1025 characters, the limit is 1024"
    assert str(error) == f"POST {error.url} -> 400: {error.message}"
    assert error.url.startswith(f"{node.url}/v2/error_injection/injection/xxx")
    assert await api.get_enabled_injections() == []  # and nothing changed


@pytest.mark.asyncio
async def test_token_is_sent_and_a_missing_one_is_a_401() -> None:
    with FakeNode(token="s3cret") as node:
        with pytest.raises(ApiError) as caught:
            await InjectionApi(node.url).get_enabled_injections()
        assert (caught.value.status, caught.value.message) == (401, "missing or wrong bearer token")
        api = InjectionApi(node.url, token="s3cret")
        await api.enable_injection("p")
        assert await api.get_enabled_injections() == ["p"]


@pytest.mark.asyncio
async def test_unreachable_node_is_a_clear_connection_error() -> None:
    port = closed_port()
    api = InjectionApi(f"127.0.0.1:{port}")
    with pytest.raises(NodeUnreachable) as caught:
        await api.get_enabled_injections()
    assert isinstance(caught.value, ConnectionError)  # what ScyllaDB's client code catches
    assert not isinstance(caught.value, ApiError)
    message = str(caught.value)
    assert message.startswith(
        f"GET http://127.0.0.1:{port}/v2/error_injection/injection: node unreachable: "
    )
    assert "Cannot connect to host 127.0.0.1" in message


@pytest.mark.asyncio
async def test_a_node_that_does_not_answer_is_a_clear_connection_error(node: FakeNode) -> None:
    """Accepted but never answered (the proxy holds it): say so, not 'unreachable'."""
    async with Proxy(node.url) as proxy:
        proxy.down("hold")
        with pytest.raises(ConnectionError) as caught:
            await InjectionApi(proxy.url, timeout=0.2).get_enter_count("p")
    assert str(caught.value) == (
        f"GET {proxy.url}/v2/error_injection/injection/p/enters: no answer within 0.2s"
    )


def test_the_sync_view_keeps_the_timeout() -> None:
    """A listening socket nobody accepts on: TCP connects, no answer ever comes."""
    with socket.socket() as wedged:
        wedged.bind(("127.0.0.1", 0))
        wedged.listen()
        api = InjectionApi(f"127.0.0.1:{wedged.getsockname()[1]}", timeout=0.2)
        with pytest.raises(ConnectionError, match=r"no answer within 0\.2s$"):
            api.sync.get_enabled_injections()


# -- sync view ----------------------------------------------------------------------


def test_sync_view_in_a_sync_test(node: FakeNode) -> None:
    api = InjectionApi(node.url).sync
    api.enable_injection("kv_write_delay", one_shot=True, parameters={"ms": 1})
    api.enable_injection("p")
    assert sorted(api.get_enabled_injections()) == ["kv_write_delay", "p"]
    assert api.get_injection("kv_write_delay") == [
        {"enabled": True, "parameters": [{"key": "ms", "value": "1"}]}
    ]
    hit(node, "p")
    assert api.get_enter_count("p") == 1
    api.message_injection("p")
    assert {p["name"] for p in api.points()} >= {"kv_write_delay", "p"}
    api.disable_injection("p")
    assert api.get_enabled_injections() == ["kv_write_delay"]
    api.disable_all()
    assert api.get_enabled_injections() == []
    with pytest.raises(ConnectionError, match="node unreachable"):
        SyncInjectionApi(f"127.0.0.1:{closed_port()}").points()


@pytest.mark.asyncio
async def test_sync_view_refuses_inside_a_running_loop(node: FakeNode) -> None:
    api = InjectionApi(node.url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(
            SyncCallInLoop,  # a RuntimeError too
            match=r"^SyncInjectionApi blocks; in async code use `await` on InjectionApi$",
        ):
            api.sync.enable_injection("p")
        gc.collect()
    assert [str(w.message) for w in caught] == []  # the coroutine was closed, not leaked
    assert await api.get_enabled_injections() == []  # and nothing was sent


# -- sessions -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_with_shares_one_connection(node: FakeNode) -> None:
    """Inside `async with` calls reuse one pooled connection; outside, each call opens
    (and closes) its own. The proxy counts what reaches the node."""
    async with Proxy(node.url) as proxy:
        async with InjectionApi(proxy.url) as api:
            session = api._session
            await api.enable_injection("p")
            await api.get_enabled_injections()
            await api.get_enter_count("p")
            await api.disable_all()
            assert api._session is session
            assert proxy.accepted == 1
        assert session is not None and session.closed
        await api.get_enabled_injections()  # still usable after the block
        await api.points()
        assert proxy.accepted == 3


@pytest.mark.asyncio
async def test_a_given_session_is_used_and_left_open(
    node: FakeNode, http: aiohttp.ClientSession
) -> None:
    async with InjectionApi(node.url, session=http) as api:
        await api.enable_injection("p")
        assert api._session is http
    assert not http.closed
    assert await InjectionApi(node.url, session=http).get_enabled_injections() == ["p"]


# -- nodes given by URL, and naming one ----------------------------------------------


def test_remote_cluster_is_shaped_like_a_fake_cluster() -> None:
    cluster = RemoteCluster(["db1", "http://db2:7000", "[::1]:9"])
    assert cluster.urls == ["http://db1:10000", "http://db2:7000", "http://[::1]:9"]
    assert len(cluster) == 3 and cluster[1].node_id == "db2:7000"
    assert [node.host for node in cluster] == ["db1", "db2", "::1"]
    with pytest.raises(ValueError, match="not a node address"):
        RemoteCluster(["db1", "not a url"])


def test_resolve_node_by_index_id_url_or_object() -> None:
    with FakeCluster(2) as cluster:
        urls = cluster.urls
        assert resolve_node(0, urls) == resolve_node(-2, urls) == urls[0]
        assert resolve_node(cluster[1], urls) == urls[1]  # anything with .url
        assert resolve_node(cluster[1].node_id, urls) == urls[1]
        assert resolve_node(urls[1], urls) == urls[1]
        for wrong, words in [
            (2, "node=2 but there are 2 node(s)"),
            (True, "node=True is none of"),
            ("10.0.0.1:1", "node='10.0.0.1:1' is none of"),
        ]:
            with pytest.raises(UnknownNode, match=words.replace("(", r"\(").replace(")", r"\)")):
                resolve_node(wrong, urls)
    assert issubclass(UnknownNode, ValueError) and issubclass(UnknownNode, InjectionEventsError)
