"""`injection-events serve` (SPEC §6) as a user runs it: a subprocess, real signals, real HTTP.

Readiness is the `node <id> listening on <url>` lines on stdout, never a sleep.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from pytest_injection_events.cli import main

COMMAND = [sys.executable, "-m", "pytest_injection_events.cli", "serve"]
LINE = re.compile(r"node (?P<id>\S+) listening on (?P<url>http://\S+)")
API = "/v2/error_injection"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "INJECTION_EVENTS_TOKEN"}
    return {**env, **extra}


@contextmanager
def serve(*args: str, nodes: int, env: dict[str, str] | None = None) -> Iterator[Any]:
    """Run `serve`, wait for its `nodes` ready lines; yield (process, [(id, url)])."""
    with subprocess.Popen(
        [*COMMAND, "--port", "0", "--nodes", str(nodes), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or _env(),
    ) as process:
        try:
            assert process.stdout is not None
            ready = []
            for _ in range(nodes):
                line = process.stdout.readline()
                match = LINE.fullmatch(line.rstrip("\n"))
                assert match, f"not a ready line: {line!r}; stderr: {process.stderr.read()}"  # type: ignore[union-attr]
                ready.append((match["id"], match["url"]))
            yield process, ready
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=10)


def stop(process: subprocess.Popen, sig: signal.Signals) -> tuple[str, str]:
    process.send_signal(sig)
    out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert "Traceback" not in err, err
    return out, err


def request(
    method: str, url: str, data: bytes | None = None, token: str | None = None
) -> tuple[int, Any, Any]:
    """Status, body (decoded if JSON) and headers; a stream is closed once its headers came."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            if response.headers.get_content_type() == "text/event-stream":
                return response.status, None, response.headers
            body = response.read()
            status, response_headers = response.status, response.headers
    except urllib.error.HTTPError as error:
        with error:
            body, status, response_headers = error.read(), error.code, error.headers
    if response_headers.get_content_type() == "application/json":
        body = json.loads(body)
    return status, body, response_headers


def test_three_nodes_answer_and_sigterm_exits_0() -> None:
    with serve(nodes=3) as (process, ready):
        ids = [node_id for node_id, _ in ready]
        urls = [url for _, url in ready]
        assert len(set(urls)) == 3
        for node_id, url in ready:
            assert url == f"http://{node_id}"  # the default id is host:port
            assert url.startswith("http://127.0.0.1:")
            assert request("GET", f"{url}{API}/injection")[:2] == (200, [])
            status, points, _ = request("GET", f"{url}{API}/points")
            assert status == 200 and len(points) == 8
        status, body, _ = request("PUT", f"{urls[0]}/kv/k", b"v")  # the nodes know each other
        assert status == 200
        assert sorted(body["replicated_to"]) == sorted(ids[1:])
        for url in urls:
            assert request("GET", f"{url}/kv/k")[:2] == (200, b"v")
        out, _ = stop(process, signal.SIGTERM)
        assert out == ""  # nothing after the ready lines


def test_sigint_exits_0_and_token_from_environment() -> None:
    """SIGINT is a clean stop too (no KeyboardInterrupt trace); the token can come from env."""
    with serve("--shards", "2", nodes=1, env=_env(INJECTION_EVENTS_TOKEN="from-env")) as (
        process,
        [(_, url)],
    ):
        assert request("GET", f"{url}{API}/injection")[0] == 401
        status, state, _ = request("GET", f"{url}{API}/injection/x", token="from-env")
        assert (status, state) == (200, [{"enabled": False, "parameters": []}] * 2)
        stop(process, signal.SIGINT)


def test_token_guards_every_endpoint() -> None:
    token = "s3cret"
    endpoints = [
        ("GET", f"{API}/injection"),
        ("DELETE", f"{API}/injection"),
        ("POST", f"{API}/injection/x"),
        ("GET", f"{API}/injection/x"),
        ("POST", f"{API}/injection/x/message"),
        ("GET", f"{API}/injection/x/enters"),
        ("DELETE", f"{API}/injection/x"),
        ("GET", f"{API}/points"),
        ("GET", f"{API}/events"),
        ("PUT", "/kv/k"),
        ("GET", "/kv/k"),
        ("POST", "/topology/requests"),
        ("GET", "/topology/requests/1"),
        ("GET", "/no/such/endpoint"),
    ]
    with serve("--token", token, nodes=2) as (process, [(_, url), (second_id, second)]):
        for method, path in endpoints:
            data = b"{}" if method in ("POST", "PUT") else None
            for wrong in (None, "wrong", f"{token}x"):
                status, body, headers = request(method, f"{url}{path}", data, token=wrong)
                assert status == 401, (method, path, wrong, body)
                assert "token" in body["error"]
                assert headers["WWW-Authenticate"].startswith("Bearer")
        assert request("GET", f"{url}/kv/k", token=token)[0] == 404  # the 401s changed nothing
        for method, path in endpoints[:-1]:
            data = b"{}" if method in ("POST", "PUT") else None
            status, body, _ = request(method, f"{url}{path}", data, token=token)
            assert status == 200, (method, path, body)
        # Replication between nodes carries the token too.
        status, body, _ = request("PUT", f"{url}/kv/r", b"v", token=token)
        assert (status, body["replicated_to"]) == (200, [second_id])
        assert request("GET", f"{second}/kv/r", token=token)[:2] == (200, b"v")
        assert request("GET", f"{url}/no/such/endpoint", token=token)[0] == 404
        stop(process, signal.SIGTERM)


def test_ports_past_65535_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """`--port 65535 --nodes 2` would need port 65536: a clear error, not a traceback."""
    assert main(["serve", "--port", "65535", "--nodes", "2"]) == 2
    assert "not a TCP port: 65536" in capsys.readouterr().err


def test_non_loopback_host_needs_allow_remote() -> None:
    result = subprocess.run(
        [*COMMAND, "--host", "10.1.2.3", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "refusing to listen on '10.1.2.3'" in result.stderr
    assert "--allow-remote" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "0"], "must be at least 1"),
        (["--shards", "0"], "must be at least 1"),
        (["--port", "70000"], "not a TCP port"),
    ],
)
def test_bad_arguments_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", *args])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
