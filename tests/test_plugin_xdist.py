"""Inner pytest runs that need a fresh interpreter: pytest-xdist workers, and marker
registration (pytest caches known marker names process-wide, so an in-process run
would see the outer run's registration)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_plugin import make_ini, make_tests, port_is_closed

XDIST_TESTS = """
import os

URLS = pathlib.Path({urls_dir!r})


def record(i, node, worker_id):
    (URLS / f"{{i}}.json").write_text(json.dumps([node.url, worker_id, os.getpid()]))


@pytest.mark.parametrize("i", range(4))
def test_stream(i, injection_node, injection_api, injection_event_stream, worker_id):
    injection_api.sync.enable_injection("kv_write_delay", True, {{"ms": 1}})
    put(injection_node.url)
    event = injection_event_stream.wait_for_injection_sync("kv_write_delay", 10)
    # Only this test's own node speaks on this stream.
    assert {{e.node for e in injection_event_stream.events}} == {{injection_node.node_id}}
    assert event.node == injection_node.node_id
    record(i, injection_node, worker_id)


@pytest.mark.parametrize("i", range(4, 8))
@pytest.mark.wait_for_injection("kv_write_delay", parameters={{"ms": 1}}, timeout=10)
def test_marker(i, injection_node, worker_id):
    put(injection_node.url)
    record(i, injection_node, worker_id)
"""


def test_xdist_workers_each_get_their_own_nodes_and_the_report_is_printed(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """`-n 4`: every test has its own node on a free port, and the controller, which runs
    no test, prints the report from what the workers sent."""
    pytest.importorskip("xdist")
    urls_dir = tmp_path / "urls"
    urls_dir.mkdir()
    make_ini(pytester)
    make_tests(pytester, XDIST_TESTS.format(urls_dir=str(urls_dir)))
    result = pytester.runpytest_subprocess(
        "-n",
        "4",
        "--injection-report",
        "--strict-markers",
        "-W",
        "error::ResourceWarning",
        "-W",
        "error::pytest.PytestUnraisableExceptionWarning",
        timeout=60,
    )
    result.assert_outcomes(passed=8)
    records = [json.loads(path.read_text()) for path in urls_dir.iterdir()]
    urls = [url for url, _, _ in records]
    assert len(records) == 8 and len(set(urls)) == 8
    workers = {(worker, pid) for _, worker, pid in records}
    assert len(workers) > 1 and all(worker.startswith("gw") for worker, _ in workers)
    assert len({worker for worker, _ in workers}) == len({pid for _, pid in workers})
    assert [url for url in urls if not port_is_closed(url)] == []

    report = result.stdout.str().split(" injection report ", 1)[1]
    listed = re.findall(
        r"^(test_inner\.py::\S+)\n    kv_write_delay +x1 +first at \+\d+\.\d{3}s$",
        report,
        flags=re.MULTILINE,
    )
    expected = [f"test_inner.py::test_stream[{i}]" for i in range(4)]
    expected += [f"test_inner.py::test_marker[{i}]" for i in range(4, 8)]
    assert sorted(listed) == sorted(expected)


MARKED = """
@pytest.mark.wait_for_injection("kv_write_delay", parameters={"ms": 1}, timeout=10)
def test_marked(injection_node):
    put(injection_node.url)
"""


def test_marker_is_registered_for_strict_markers(pytester: pytest.Pytester) -> None:
    """Users who run with `--strict-markers` need not register the marker themselves."""
    make_ini(pytester)
    make_tests(pytester, MARKED)
    pytester.runpytest_subprocess("--strict-markers", timeout=60).assert_outcomes(passed=1)


def test_marker_is_unknown_when_the_plugin_is_off(pytester: pytest.Pytester) -> None:
    """The control for the test above: the registration is the plugin's doing."""
    make_ini(pytester)
    make_tests(pytester, MARKED)
    result = pytester.runpytest_subprocess(
        "--strict-markers", "-p", "no:pytest_injection_events", timeout=60
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*'wait_for_injection' not found in `markers`*"])
