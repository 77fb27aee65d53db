"""`injection-events watch` (issue #3 item 5) as a user runs it: a subprocess on a real node.

Readiness is the `watching ...` line on stderr; each event is waited for as a line
on stdout, never with a sleep.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from helpers import EVENT_KEYS, closed_port

from pytest_injection_events.node import FakeNode

COMMAND = [sys.executable, "-m", "pytest_injection_events.cli", "watch"]
LINE = re.compile(
    r"\d\d:\d\d:\d\d\.\d{6} node (?P<node>\S+) shard (?P<shard>\S+) "
    r"(?P<name>\S+) (?P<phase>\w+) \(seq (?P<seq>\d+)\)"
)


@contextmanager
def watch(*args: str) -> Iterator[subprocess.Popen[str]]:
    """Run `watch` and return once it is connected (its `watching` line on stderr)."""
    with subprocess.Popen(
        [*COMMAND, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stderr is not None
            ready = process.stderr.readline()
            assert ready.startswith("watching "), ready + process.stderr.read()
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)


def interrupt(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Ctrl-C: a clean exit 0 with no traceback."""
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "Traceback" not in err, err
    return out, err


def test_one_line_per_event_with_time_node_shard_name_phase(node: FakeNode) -> None:
    with watch(node.url) as process:
        assert process.stdout is not None
        node.call(node.injector.enable, "p")
        node.call(node.injector.inject, "p", lambda: None)
        lines = [process.stdout.readline().rstrip("\n") for _ in range(2)]
        matches = [LINE.fullmatch(line) for line in lines]
        assert all(matches), lines
        assert [(m["node"], m["shard"], m["name"], m["phase"], m["seq"]) for m in matches] == [
            (node.node_id, "-", "p", "enable", "1"),
            (node.node_id, "0", "p", "enter", "2"),
        ]
        out, _ = interrupt(process)
        assert out == ""


def test_json_and_filters(node: FakeNode) -> None:
    """`--json` prints §4's objects; `--injection` and `--phase` filter on the node."""
    with watch(node.url, "--json", "--injection", "q", "--phase", "enter") as process:
        assert process.stdout is not None
        for name in ("p", "q"):
            node.call(node.injector.enable, name)
            node.call(node.injector.inject, name, lambda: None)
        event = json.loads(process.stdout.readline())
        assert set(event) == EVENT_KEYS
        assert (event["injection"], event["phase"], event["seq"]) == ("q", "enter", 4)
        interrupt(process)


def test_a_node_that_cannot_be_watched_is_exit_2_with_the_reason() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = subprocess.run(
        [*COMMAND, url], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert f"cannot open the event stream of {url}" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_arguments_are_usage_errors() -> None:
    for args in ([], ["http://127.0.0.1:1", "--phase", "nope"]):
        result = subprocess.run(
            [*COMMAND, *args], capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 2, args
        assert "usage:" in result.stderr
