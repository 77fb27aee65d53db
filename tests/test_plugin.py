"""The pytest plugin as a user meets it: inner pytest runs driven by `pytester`.

Inner runs are in-process (fast); the ones that need a fresh interpreter (xdist
workers, marker registration) live in `test_plugin_xdist.py`. The outer conftest's
autouse check also proves that no inner run leaves a thread behind.
"""

from __future__ import annotations

import json
import re
import socket
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_injection_events import FakeCluster, FakeNode, SyncInjectionApi

#: Shared by inner test files: a blocking write that enters the kv_write_* points.
PRELUDE = '''
import json
import pathlib
import urllib.request

import pytest


def put(url, key="k", value=b"v"):
    """PUT without replication, so only the node written to enters its points."""
    request = urllib.request.Request(f"{url}/kv/{key}?replicate=false", data=value, method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status
'''

#: Inner runs: no pytest-asyncio "loop scope unset" deprecation in their output, and no
#: hypothesis plugin, whose lazy imports pytester's module snapshot undoes after every
#: in-process run (1 s each time).
BASE_INI = {
    "asyncio_default_fixture_loop_scope": "function",
    "addopts": "-p no:hypothesispytest",
}


def make_ini(pytester: pytest.Pytester, **keys: str) -> None:
    lines = [f"{key} = {value}" for key, value in {**BASE_INI, **keys}.items()]
    pytester.makeini("[pytest]\n" + "\n".join(lines) + "\n")


def make_tests(pytester: pytest.Pytester, source: str, name: str = "test_inner") -> Path:
    return pytester.makepyfile(**{name: PRELUDE + textwrap.dedent(source)})


def port_is_closed(url: str) -> bool:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester directory with the base ini and no key of this plugin."""
    make_ini(pytester)
    return pytester


@pytest.fixture
def outer_node() -> Iterator[FakeNode]:
    """A node started outside the inner run, so its state can be read after the run."""
    with FakeNode() as node:
        yield node


# -- loading -------------------------------------------------------------------------

USES_PLUGIN = """
import pytest_injection_events.plugin


def test_uses_fixtures(request, injection_node, injection_api):
    manager = request.config.pluginmanager
    assert sum(p is pytest_injection_events.plugin for p in manager.get_plugins()) == 1
    assert manager.hasplugin("pytest_injection_events")
    assert manager.hasplugin("pytest_injection_events.plugin")
    assert injection_api.url == injection_node.url
    assert injection_api.sync.get_enabled_injections() == []
"""

CONFTESTS = {
    "none": None,
    "package": 'pytest_plugins = ["pytest_injection_events"]',
    "plugin-module": 'pytest_plugins = ["pytest_injection_events.plugin"]',
}


@pytest.mark.parametrize("conftest", CONFTESTS)
@pytest.mark.parametrize(
    "args",
    [[], ["-p", "pytest_injection_events"], ["-p", "pytest_injection_events.plugin"]],
    ids=["no-p", "p-package", "p-plugin-module"],
)
def test_every_way_of_loading_registers_the_plugin_once(
    inner: pytest.Pytester, conftest: str, args: list[str]
) -> None:
    """Entry point, conftest and `-p`, alone or together, in either spelling: one plugin.

    pytest raises ValueError when one module is registered under two names; the
    plugin takes its other name as it registers, so none of these can do that.
    """
    if CONFTESTS[conftest]:
        inner.makeconftest(CONFTESTS[conftest])
    make_tests(inner, USES_PLUGIN)
    result = inner.runpytest(*args)
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*already registered*")


@pytest.mark.parametrize("conftest", ["package", "plugin-module"])
def test_conftest_way_works_without_plugin_autoload(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, conftest: str
) -> None:
    """With entry points off, `pytest_plugins` in a conftest is how a user opts in."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    make_tests(inner, USES_PLUGIN)
    result = inner.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'injection_node' not found*"])
    inner.makeconftest(CONFTESTS[conftest])
    inner.runpytest().assert_outcomes(passed=1)


@pytest.mark.parametrize("conftest", ["none", "package"])
def test_no_option_turns_the_plugin_off(inner: pytest.Pytester, conftest: str) -> None:
    """`-p no:` wins over the entry point and over a conftest's `pytest_plugins`."""
    if CONFTESTS[conftest]:
        inner.makeconftest(CONFTESTS[conftest])
    make_tests(inner, USES_PLUGIN)
    result = inner.runpytest("-p", "no:pytest_injection_events")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'injection_node' not found*"])
    result.stdout.no_fnmatch_line("*--injection-node-url*")


@pytest.mark.parametrize(
    ("conftest", "blocked"),
    [
        ("plugin-module", "pytest_injection_events"),
        ("none", "pytest_injection_events.plugin"),
    ],
)
def test_turned_off_under_one_name_and_loaded_under_the_other_is_a_usage_error(
    inner: pytest.Pytester, conftest: str, blocked: str
) -> None:
    """A run that both turns the plugin off and loads it: say so, never half of each."""
    if CONFTESTS[conftest]:
        inner.makeconftest(CONFTESTS[conftest])
    make_tests(inner, USES_PLUGIN)
    result = inner.runpytest("-p", f"no:{blocked}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*the plugin is turned off (-p no:{blocked}) but was also*"])


# -- options and ini keys -----------------------------------------------------------

NEVER_HIT = """
@pytest.mark.wait_for_injection("kv_write_delay")
def test_never_hit(injection_node):
    pass
"""


@pytest.mark.parametrize(
    ("ini", "args", "shown"),
    [
        ({}, ["--injection-timeout=0.2"], "0.2s"),
        ({"injection_timeout": "0.25"}, [], "0.25s"),
        ({"injection_timeout": "60"}, ["--injection-timeout", "0.15"], "0.15s"),
    ],
    ids=["option", "ini", "option-beats-ini"],
)
def test_default_timeout_of_the_marker(
    pytester: pytest.Pytester, ini: dict[str, str], args: list[str], shown: str
) -> None:
    """The marker's default wait comes from the option, else the ini key."""
    make_ini(pytester, **ini)
    make_tests(pytester, NEVER_HIT)
    result = pytester.runpytest(*args)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [f"*timed out after {shown} waiting for injection 'kv_write_delay'*"]
    )


def test_marker_timeout_beats_option(inner: pytest.Pytester) -> None:
    """A test that knows its injection comes fast says so, whatever the run's default."""
    make_tests(
        inner,
        """
        @pytest.mark.wait_for_injection("kv_write_delay", timeout=0.1)
        def test_never_hit(injection_node):
            pass
        """,
    )
    result = inner.runpytest("--injection-timeout=60")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*timed out after 0.1s*"])


SIZES = """
def test_sizes(injection_node, injection_cluster, injection_api):
    assert len(injection_cluster) == {nodes}
    assert len({{node.url for node in injection_cluster}}) == {nodes}
    # One state per shard, as ScyllaDB answers.
    assert len(injection_api.sync.get_injection("kv_write_delay")) == {shards}
    for node in injection_cluster:
        state = SyncInjectionApi(node.url).get_injection("kv_write_delay")
        assert len(state) == {shards}
"""


@pytest.mark.parametrize(
    ("ini", "nodes", "shards"),
    [({}, 3, 1), ({"injection_cluster_size": "2", "injection_shards": "4"}, 2, 4)],
    ids=["defaults", "ini"],
)
def test_cluster_size_and_shards(
    pytester: pytest.Pytester, ini: dict[str, str], nodes: int, shards: int
) -> None:
    """The ini keys shape the fake cluster and each fake node (one state per shard)."""
    make_ini(pytester, **ini)
    source = "from pytest_injection_events import SyncInjectionApi\n"
    make_tests(pytester, source + SIZES.format(nodes=nodes, shards=shards))
    pytester.runpytest().assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("ini", "args", "message"),
    [
        ({"injection_timeout": "soon"}, [], "*ini option injection_timeout must be a number*"),
        ({"injection_timeout": "-1"}, [], "*injection_timeout must be at least 0*"),
        ({"injection_timeout": "nan"}, [], "*injection_timeout must be at least 0*"),
        ({"injection_cluster_size": "0"}, [], "*injection_cluster_size must be at least 1*"),
        ({"injection_cluster_size": "2.5"}, [], "*injection_cluster_size must be an integer*"),
        ({"injection_shards": "two"}, [], "*injection_shards must be an integer*"),
        ({}, ["--injection-timeout=-1"], "*--injection-timeout must be >= 0*"),
        ({}, ["--injection-timeout=nan"], "*--injection-timeout must be >= 0*"),
        ({}, ["--injection-timeout=abc"], "*--injection-timeout: invalid float value*"),
        ({}, ["--injection-node-url=ftp://node"], "*--injection-node-url: not a node address*"),
        ({}, ["--injection-node-url=node:99999"], "*--injection-node-url: bad port*"),
        ({}, ["--injection-node-url", "not a url"], "*--injection-node-url: not a node address*"),
    ],
)
def test_bad_settings_are_usage_errors(
    pytester: pytest.Pytester, ini: dict[str, str], args: list[str], message: str
) -> None:
    """A bad setting stops the run once, at startup, instead of failing every test."""
    make_ini(pytester, **ini)
    make_tests(pytester, USES_PLUGIN)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


# -- fixtures, sync and async ---------------------------------------------------------

ASYNC_FIXTURES = """
import aiohttp
from pytest_injection_events import FakeNode, InjectionEventStream


{mark}
async def test_node_api_stream(injection_node, injection_api, injection_event_stream):
    assert isinstance(injection_node, FakeNode)
    assert isinstance(injection_event_stream, InjectionEventStream)
    assert injection_event_stream.urls == [injection_node.url]
    await injection_api.enable_injection("kv_write_delay", parameters={{"ms": 1}})
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{{injection_node.url}}/kv/k", data=b"v") as response:
            assert response.status == 200
    event = await injection_event_stream.wait_for_injection("kv_write_delay", timeout=10)
    assert (event.node, event.parameters) == (injection_node.node_id, {{"ms": "1"}})
    assert await injection_api.get_enter_count("kv_write_delay") == 1


{mark}
async def test_cluster_stream(injection_cluster, injection_event_stream):
    assert injection_event_stream.urls == injection_cluster.urls
    last = injection_cluster[-1]
    await InjectionApi(last.url).enable_injection("kv_write_delay", parameters={{"ms": 1}})
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{{last.url}}/kv/k?replicate=false", data=b"v") as response:
            assert response.status == 200
    event = await injection_event_stream.wait_for_injection("kv_write_delay", timeout=10)
    assert event.node == last.node_id


{mark}
@pytest.mark.wait_for_injection("kv_write_delay", parameters={{"ms": 1}}, timeout=10)
async def test_marker(injection_node, injection_api):
    assert await injection_api.get_enabled_injections() == ["kv_write_delay"]
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{{injection_node.url}}/kv/k", data=b"v") as response:
            assert response.status == 200
"""


@pytest.mark.parametrize(
    ("mark", "ini", "args"),
    [
        ("@pytest.mark.asyncio", {}, []),
        ("", {}, ["-o", "asyncio_mode=auto"]),
        ("", {"asyncio_mode": "auto"}, []),
    ],
    ids=["strict-marked", "auto-option", "auto-ini"],
)
def test_fixtures_in_async_tests(
    pytester: pytest.Pytester, mark: str, ini: dict[str, str], args: list[str]
) -> None:
    """The thread-mode stream is awaited from pytest-asyncio's loop in either mode."""
    make_ini(pytester, **ini)
    source = "from pytest_injection_events import InjectionApi\n"
    make_tests(pytester, source + ASYNC_FIXTURES.format(mark=mark))
    pytester.runpytest(*args).assert_outcomes(passed=3)


def test_fixtures_in_sync_tests(inner: pytest.Pytester) -> None:
    """No event loop in the test: `.sync` calls and `wait_for_injection_sync` do it all."""
    make_tests(
        inner,
        """
        import threading

        from pytest_injection_events import SyncInjectionApi


        def test_node_api_stream(injection_node, injection_api, injection_event_stream):
            api = injection_api.sync
            api.enable_injection("kv_write_before_apply", one_shot=True)
            statuses = []
            writer = threading.Thread(target=lambda: statuses.append(put(injection_node.url)))
            writer.start()
            event = injection_event_stream.wait_for_injection_sync("kv_write_before_apply", 10)
            assert event.phase == "enter" and event.node == injection_node.node_id
            assert statuses == []  # parked at the breakpoint
            api.message_injection("kv_write_before_apply")
            writer.join(10)
            assert statuses == [200]


        def test_cluster(injection_cluster, injection_event_stream):
            assert injection_event_stream.urls == injection_cluster.urls
            first = injection_cluster[0]
            SyncInjectionApi(first.url).enable_injection("kv_write_delay", parameters={"ms": 1})
            put(first.url)
            event = injection_event_stream.wait_for_injection_sync("kv_write_delay", 10)
            assert event.node == first.node_id
        """,
    )
    inner.runpytest().assert_outcomes(passed=2)


# -- the marker ---------------------------------------------------------------------


def test_marker_enables_before_the_body_and_checks_after(inner: pytest.Pytester) -> None:
    """The body sees the injection enabled with its parameters; a hit satisfies the check."""
    make_tests(
        inner,
        """
        @pytest.mark.wait_for_injection("kv_write_delay", parameters={"ms": 1, "note": "x"})
        def test_enabled_before_the_body(injection_node, injection_api, injection_event_stream):
            api = injection_api.sync
            assert api.get_enabled_injections() == ["kv_write_delay"]
            [state] = api.get_injection("kv_write_delay")
            assert state["enabled"]
            assert {p["key"]: p["value"] for p in state["parameters"]} == {"ms": "1", "note": "x"}
            put(injection_node.url)
            event = injection_event_stream.wait_for_injection_sync("kv_write_delay", 10)
            assert event.parameters == {"ms": "1", "note": "x"} and event.one_shot
            assert api.get_enabled_injections() == []  # one-shot by default: fired, gone


        @pytest.mark.wait_for_injection("kv_write_delay", one_shot=False, parameters={"ms": 1})
        def test_not_one_shot(injection_node, injection_api):
            put(injection_node.url)
            assert injection_api.sync.get_enabled_injections() == ["kv_write_delay"]
        """,
    )
    inner.runpytest().assert_outcomes(passed=2)


def test_marker_fails_a_test_that_never_hits_with_the_timeout_message(
    inner: pytest.Pytester,
) -> None:
    """A near miss of a declared point gets the did-you-mean hint of the timeout message."""
    make_tests(
        inner,
        """
        @pytest.mark.wait_for_injection("kv_write_befor_apply", timeout=0.2)
        def test_near_miss(injection_node):
            assert put(injection_node.url) == 200
        """,
    )
    result = inner.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_near_miss _*",
            "@pytest.mark.wait_for_injection('kv_write_befor_apply'): timed out after 0.2s "
            "waiting for injection 'kv_write_befor_apply' (phase 'enter') on http://127.0.0.1:*",
            "*enabled on 127.0.0.1:*: kv_write_befor_apply*",
            "*did you mean 'kv_write_before_apply'?*",
        ]
    )
    result.stdout.no_fnmatch_line("*plugin.py*")  # the message alone, no plugin traceback
    result.stdout.no_fnmatch_line("*During handling of the above exception*")


def test_marker_disables_at_teardown_even_after_a_failing_body(
    inner: pytest.Pytester, outer_node: FakeNode
) -> None:
    """Seen from a later test on the same node, and from outside once the run is over."""
    make_tests(
        inner,
        """
        @pytest.mark.wait_for_injection("kv_write_delay", one_shot=False, parameters={"ms": 1})
        def test_a_hits(injection_node, injection_api):
            put(injection_node.url)
            assert injection_api.sync.get_enabled_injections() == ["kv_write_delay"]


        @pytest.mark.wait_for_injection("kv_write_error", one_shot=False)
        def test_b_body_fails(injection_node):
            assert False, "the body failed"


        def test_c_finds_nothing_enabled(injection_api):
            assert injection_api.sync.get_enabled_injections() == []
        """,
    )
    result = inner.runpytest("-p", "no:randomly", f"--injection-node-url={outer_node.url}")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*the body failed*"])
    assert SyncInjectionApi(outer_node.url).get_enabled_injections() == []


def test_stacked_markers_each_must_be_hit(inner: pytest.Pytester) -> None:
    """Two markers enable two injections; the one never entered fails the test."""
    make_tests(
        inner,
        """
        def add_topology_request(url):
            request = urllib.request.Request(f"{url}/topology/requests", data=b"{}", method="POST")
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200


        @pytest.mark.wait_for_injection("kv_write_delay", parameters={"ms": 1}, timeout=10)
        @pytest.mark.wait_for_injection("coordinator_batch_size", parameters={"value": 1})
        def test_both_hit(injection_node, injection_api):
            enabled = injection_api.sync.get_enabled_injections()
            assert sorted(enabled) == ["coordinator_batch_size", "kv_write_delay"]
            put(injection_node.url)
            add_topology_request(injection_node.url)


        @pytest.mark.wait_for_injection("kv_write_delay", parameters={"ms": 1}, timeout=10)
        @pytest.mark.wait_for_injection("coordinator_batch_size", timeout=0.2)
        def test_one_missed(injection_node):
            put(injection_node.url)
        """,
    )
    result = inner.runpytest("--injection-timeout=10")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*timed out after 0.2s waiting for injection 'coordinator_batch_size'*"]
    )
    result.stdout.no_fnmatch_line("*waiting for injection 'kv_write_delay'*")


def test_marker_count_beyond_the_shards_of_a_one_shot_is_refused_before_the_body(
    pytester: pytest.Pytester,
) -> None:
    """A one-shot fires once per shard: with 2 shards, count=3 would fail after 30 s."""
    make_ini(pytester, injection_shards="2")
    make_tests(
        pytester,
        """
        BODIES = []


        @pytest.mark.wait_for_injection("kv_write_delay", count=3)
        def test_impossible(injection_node):
            BODIES.append(1)


        @pytest.mark.wait_for_injection("kv_write_delay", count=2, parameters={"ms": 1})
        def test_possible(injection_node):
            def entered():
                return injection_node.injector.enter_count("kv_write_delay")

            keys = iter(range(1000))  # keys map to shards: write until both took their one hit
            while injection_node.call(entered) < 2:
                put(injection_node.url, key=f"k{next(keys)}")


        def test_body_never_ran():
            assert BODIES == []
        """,
    )
    result = pytester.runpytest("-p", "no:randomly", "--injection-timeout=10")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*wait_for_injection('kv_write_delay'): count=3 can never be reached: one_shot=True "
            "fires at most once per shard and the 1 node(s) have 2 shard(s) in all; "
            "pass one_shot=False or count<=2"
        ]
    )


def test_injection_node_options_fixture_shapes_every_fake_node(inner: pytest.Pytester) -> None:
    """Overridden in a conftest, with no code of ours to touch, like any config fixture."""
    inner.makeconftest(
        """
        import pytest


        @pytest.fixture
        def injection_node_options(injection_node_options):
            return {**injection_node_options, "shards": 3}
        """
    )
    make_tests(
        inner,
        """
        def test_node(injection_node, injection_api):
            assert len(injection_api.sync.get_injection("kv_write_delay")) == 3


        def test_cluster(injection_cluster):
            assert [node.injector.shards for node in injection_cluster] == [3, 3, 3]
        """,
    )
    inner.runpytest().assert_outcomes(passed=2)


def test_a_failed_direct_wait_shows_the_test_line_and_the_message(inner: pytest.Pytester) -> None:
    """No frame of the package between the test's line and the timeout message."""
    make_tests(
        inner,
        """
        def test_waits(injection_node, injection_event_stream):
            injection_event_stream.wait_for_injection_sync("kv_write_delay", 0.1)
        """,
    )
    result = inner.runpytest()
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    failure = output[output.index("_ test_waits _") : output.index("short test summary")]
    result.stdout.fnmatch_lines(
        [
            '>       injection_event_stream.wait_for_injection_sync("kv_write_delay", 0.1)',
            "E   *InjectionTimeout: timed out after 0.1s waiting for injection 'kv_write_delay'*",
        ]
    )
    assert "pytest_injection_events/" not in failure  # no frame of the package's files
    assert len(failure.splitlines()) < 25, failure
    # --full-trace still shows everything, for whoever debugs the package itself.
    full = inner.runpytest("--full-trace").stdout.str()
    assert "pytest_injection_events/" in full


def test_marker_count(inner: pytest.Pytester) -> None:
    """`count=3` needs three hits; two are a timeout that says `count 3`."""
    make_tests(
        inner,
        """
        COUNT_3 = pytest.mark.wait_for_injection(
            "kv_write_delay", one_shot=False, parameters={"ms": 1}, count=3, timeout=0.3
        )


        @COUNT_3
        def test_three_hits(injection_node):
            for key in "abc":
                put(injection_node.url, key)


        @COUNT_3
        def test_two_hits(injection_node):
            for key in "ab":
                put(injection_node.url, key)
        """,
    )
    result = inner.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*timed out after 0.3s waiting for injection 'kv_write_delay' (phase 'enter', count 3)*"]
    )


def test_marker_node_picks_one_node_of_the_cluster(inner: pytest.Pytester) -> None:
    """Enabled on that node only, and only that node's hits count."""
    make_tests(
        inner,
        """
        from pytest_injection_events import SyncInjectionApi


        def enabled(cluster):
            return [SyncInjectionApi(node.url).get_enabled_injections() for node in cluster]


        @pytest.mark.wait_for_injection("kv_write_delay", node=1, parameters={"ms": 1})
        def test_hit_on_that_node(injection_cluster):
            assert enabled(injection_cluster) == [[], ["kv_write_delay"], []]
            put(injection_cluster[1].url)


        @pytest.mark.wait_for_injection("kv_write_delay", node=-1, timeout=0.2)
        def test_hit_on_another_node(injection_cluster, injection_event_stream):
            first = injection_cluster[0]
            SyncInjectionApi(first.url).enable_injection("kv_write_delay", parameters={"ms": 1})
            put(first.url)
            event = injection_event_stream.wait_for_injection_sync("kv_write_delay", 10)
            assert event.node == first.node_id
        """,
    )
    result = inner.runpytest("--injection-timeout=10")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*timed out after 0.2s waiting for injection 'kv_write_delay' (phase 'enter') "
            "on 127.0.0.1:*"
        ]
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("", "*takes one injection name as a string, got args ()*"),
        ("'a', 'b'", "*takes one injection name as a string, got args ('a', 'b')*"),
        ("'x', colour='red'", "*unknown keyword(s) colour*"),
        ("'x', count=0", "*count must be a positive integer, got 0*"),
        ("'x', one_shot='false'", "*one_shot must be True or False, got 'false'*"),
        ("'x', timeout=-1", "*timeout must be a number of seconds >= 0, got -1*"),
        ("'x', timeout=float('nan')", "*timeout must be a number of seconds >= 0, got nan*"),
        ("'x', timeout=True", "*timeout must be a number of seconds >= 0, got True*"),
        ("'x', parameters=['ms']", "*parameters must be a dict, got list*"),
        ("'x', node=5", "*node=5 but there are 1 node(s)*"),
        ("'x', parameters={'ms': None}", "*parameter 'ms': *got NoneType None*"),
        ("'x', count=2", "*count=2 can never be reached: one_shot=True fires at most once per*"),
        ("'x', node='10.0.0.1:1'", "*node='10.0.0.1:1' is none of*"),
    ],
)
def test_bad_marker_arguments_are_clear_errors(
    inner: pytest.Pytester, arguments: str, message: str
) -> None:
    """The test errors at setup with one line that names the marker and the mistake."""
    make_tests(
        inner,
        f"""
        @pytest.mark.wait_for_injection({arguments})
        def test_marked(injection_node):
            pass
        """,
    )
    result = inner.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*wait_for_injection*{message}"])
    result.stdout.no_fnmatch_line("*plugin.py*")  # the user's mistake, not a plugin traceback
    result.stdout.no_fnmatch_line("*During handling of the above exception*")


# -- nodes given by URL ---------------------------------------------------------------


@pytest.fixture
def outer_cluster() -> Iterator[FakeCluster]:
    with FakeCluster(2) as cluster:
        yield cluster


def test_node_urls_replace_the_fake_nodes(
    inner: pytest.Pytester, outer_cluster: FakeCluster
) -> None:
    """With `--injection-node-url`, every fixture and the marker use the given nodes."""
    urls = outer_cluster.urls
    make_tests(
        inner,
        f"""
        from pytest_injection_events import SyncInjectionApi

        URLS = {urls!r}


        def test_node(injection_node, injection_api, injection_event_stream):
            assert injection_node.url == injection_api.url == URLS[0]
            assert injection_event_stream.urls == URLS[:1]
            injection_api.sync.enable_injection("kv_write_delay", True, {{"ms": 1}})
            put(URLS[0])
            event = injection_event_stream.wait_for_injection_sync("kv_write_delay", 10)
            assert event.node == injection_node.node_id


        def test_cluster(injection_cluster, injection_event_stream):
            assert injection_cluster.urls == injection_event_stream.urls == URLS
            assert len(injection_cluster) == 2
            for node in injection_cluster:
                SyncInjectionApi(node.url).enable_injection("kv_write_delay", True, {{"ms": 1}})
                put(node.url)
            events = [
                injection_event_stream.wait_for_injection_sync("kv_write_delay", 10, node=node)
                for node in injection_cluster
            ]
            assert [event.node for event in events] == [node.node_id for node in injection_cluster]


        @pytest.mark.wait_for_injection("kv_write_delay", node=URLS[1], parameters={{"ms": 1}})
        def test_marker_node_by_url(injection_cluster):
            assert SyncInjectionApi(URLS[0]).get_enabled_injections() == []
            assert SyncInjectionApi(URLS[1]).get_enabled_injections() == ["kv_write_delay"]
            put(URLS[1])
        """,
    )
    args = [f"--injection-node-url={url}" for url in urls]
    inner.runpytest(*args, "--injection-timeout=10").assert_outcomes(passed=3)
    # The given nodes are the user's: still running, with what the tests did on them.
    assert all(node.running for node in outer_cluster)
    writes = [node.call(lambda n=node: sorted(n.workload.store)) for node in outer_cluster]
    assert writes == [["k"], ["k"]]


def test_unreachable_node_url_is_one_clear_line(inner: pytest.Pytester) -> None:
    """A given node that is down errors the test with the reason, not an aiohttp traceback."""
    make_tests(inner, "def test_x(injection_node, injection_event_stream):\n    pass\n")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    result = inner.runpytest(f"--injection-node-url={url}")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"injection_event_stream: cannot open the event stream of {url}*"])
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*During handling*")


def test_marker_checks_a_user_overridden_stream_fixture(inner: pytest.Pytester) -> None:
    """A conftest may provide its own `injection_event_stream`; the marker checks that one."""
    make_tests(
        inner,
        """
        from pytest_injection_events import injection_event_stream as open_stream


        @pytest.fixture
        def injection_event_stream(injection_node):
            with open_stream(injection_node.url) as stream:
                stream.opened_by_user = True
                yield stream


        @pytest.mark.wait_for_injection("kv_write_delay", parameters={"ms": 1}, timeout=10)
        def test_hit(injection_node, injection_event_stream):
            assert injection_event_stream.opened_by_user
            put(injection_node.url)


        @pytest.mark.wait_for_injection("kv_write_delay", timeout=0.2)
        def test_missed(injection_node):
            pass
        """,
    )
    result = inner.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*wait_for_injection('kv_write_delay'): timed out after 0.2s*"])


# -- --injection-report and the event log ---------------------------------------------------

REPORTED = """
import urllib.error


def test_two_hits(injection_node, injection_api, injection_event_stream):
    injection_api.sync.enable_injection("kv_write_delay", parameters={"ms": 1})
    put(injection_node.url, "a")
    put(injection_node.url, "b")
    injection_event_stream.wait_for_injection_sync("kv_write_delay", 10, count=2)


@pytest.mark.wait_for_injection("kv_write_error", timeout=10)
def test_marker_hit(injection_node):
    with pytest.raises(urllib.error.HTTPError):
        put(injection_node.url)


def test_stream_without_hits(injection_event_stream):
    pass


def test_without_stream():
    pass
"""


def test_injection_report_lists_hits_per_test(inner: pytest.Pytester) -> None:
    make_tests(inner, REPORTED)
    result = inner.runpytest("--injection-report")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "*= injection report =*",
            "test_inner.py::test_two_hits",
            "    kv_write_delay * x2 * first at +*.???s",
            "test_inner.py::test_marker_hit",
            "    kv_write_error * x1 * first at +*.???s",
            "test_inner.py::test_stream_without_hits",
            "    (no injection entered)",
        ]
    )
    result.stdout.no_fnmatch_line("test_inner.py::test_without_stream*")
    firsts = [float(m) for m in re.findall(r"first at \+(\d+\.\d{3})s", result.stdout.str())]
    assert len(firsts) == 2 and all(0 <= first < 10 for first in firsts)


def test_injection_report_is_off_by_default_and_says_when_empty(inner: pytest.Pytester) -> None:
    make_tests(inner, REPORTED)
    result = inner.runpytest()
    result.assert_outcomes(passed=4)
    result.stdout.no_fnmatch_line("*injection report*")
    result = inner.runpytest("--injection-report", "-k", "test_without_stream")
    result.stdout.fnmatch_lines(
        ["*= injection report =*", "no test used an injection event stream"]
    )


def test_failing_test_shows_the_event_timeline_in_its_captured_log(inner: pytest.Pytester) -> None:
    make_ini(inner, injection_shards="2")
    make_tests(
        inner,
        """
        def test_fails_after_a_hit(injection_node, injection_api, injection_event_stream):
            injection_api.sync.enable_injection("kv_write_delay", parameters={"ms": 1})
            put(injection_node.url, key="k")
            event = injection_event_stream.wait_for_injection_sync("kv_write_delay", 10)
            assert event.shard is None, f"the body failed after a hit on shard {event.shard}"
        """,
    )
    result = inner.runpytest()
    result.assert_outcomes(failed=1)
    shard = re.search(r"after a hit on shard (\d)", result.stdout.str()).group(1)
    line = "INFO *pytest_injection_events.events:* ??:??:??.?????? node 127.0.0.1:*"
    line += " shard {} {} (seq {})"
    result.stdout.fnmatch_lines(
        [
            "*- Captured log call -*",
            line.format("-", "kv_write_delay enable", 1),
            line.format(shard, "kv_write_delay enter", 2),
        ]
    )


# -- nothing left running -------------------------------------------------------------------


def test_nothing_left_running_after_the_tests(inner: pytest.Pytester, tmp_path: Path) -> None:
    """Threads, ports, sessions: sync and async, passing and failing, nodes and clusters."""
    urls_dir = tmp_path / "urls"
    urls_dir.mkdir()
    inner.makeconftest(
        f"""
        import gc
        import json
        import pathlib

        import pytest


        @pytest.hookimpl(wrapper=True)
        def pytest_runtest_call(item):
            # Note the test's nodes while its fixtures are alive.
            urls = []
            for name in ("injection_node", "injection_cluster"):
                if name in item.funcargs:
                    value = item.funcargs[name]
                    urls += getattr(value, "urls", None) or [value.url]
            path = pathlib.Path({str(urls_dir)!r}) / f"{{item.name}}.json"
            path.write_text(json.dumps(urls))
            return (yield)


        def pytest_runtest_teardown():
            gc.collect()  # an unclosed session or socket warns now, inside the test
        """
    )
    make_tests(
        inner,
        """
        import asyncio

        import aiohttp

        from pytest_injection_events import InjectionApi


        @pytest.mark.asyncio
        @pytest.mark.wait_for_injection("kv_write_delay", parameters={"ms": 1}, timeout=10)
        async def test_async_all(injection_node, injection_api, injection_event_stream):
            await injection_api.enable_injection("kv_write_error", one_shot=True)
            async with aiohttp.ClientSession() as http:
                async with http.put(f"{injection_node.url}/kv/k", data=b"v") as response:
                    assert response.status == 500
            await injection_event_stream.wait_for_injection("kv_write_error", 10)


        @pytest.mark.wait_for_injection("kv_write_delay", timeout=0.1)
        def test_sync_marker_times_out(injection_node):
            pass


        @pytest.mark.asyncio
        async def test_async_cluster(injection_cluster, injection_event_stream):
            last = injection_cluster[-1]
            await InjectionApi(last.url).enable_injection("kv_write_delay", parameters={"ms": 1})
            async with aiohttp.ClientSession() as http:
                # Iteration yields events from the next one on: write once it has begun.
                write = asyncio.create_task(http.put(f"{last.url}/kv/k?replicate=false"))
                async for event in injection_event_stream:  # left suspended: the loop closes it
                    if event.phase == "enter":
                        break
                async with await write as response:
                    assert response.status == 200
            assert event.node == last.node_id


        def test_sync_cluster_fails(injection_cluster, injection_event_stream):
            assert False
        """,
    )
    before = set(threading.enumerate())
    result = inner.runpytest(
        "-W", "error::ResourceWarning", "-W", "error::pytest.PytestUnraisableExceptionWarning"
    )
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.no_fnmatch_line("*Warning*")
    assert set(threading.enumerate()) <= before
    recorded = [json.loads(path.read_text()) for path in sorted(urls_dir.iterdir())]
    urls = [url for urls in recorded for url in urls]
    assert len(recorded) == 4 and len(urls) == 1 + 1 + 3 + 3
    assert [url for url in urls if not port_is_closed(url)] == []
