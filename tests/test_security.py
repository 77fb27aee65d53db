"""Security (issue 6, item 4), beyond what test_api.py and test_cli_serve.py prove (every
endpoint refuses a missing or wrong token with 401; `serve` and FakeNode refuse a
non-loopback address):

- a 401 gives nothing away: byte for byte the same body, and the same headers, for
  every endpoint, the stream, a wrong method, an unknown path, bad input and a huge
  body; no injection name or state, no echo of the token sent, no node identity;
- no Authorization header but the exact one passes (fuzzed), while the scheme is
  matched without regard to case (RFC 9110 §11.1), and a refused request changes nothing;
- the token comparison runs through `hmac.compare_digest` on every request (a code
  review note made executable, not a timing measurement);
- `serve` and FakeNode refuse the wildcard addresses (0.0.0.0, ::) without
  `--allow-remote`, with exit 2 and a clear message, before binding anything.

Only loopback addresses are ever bound here.
"""

from __future__ import annotations

import http.client
import json
import socket
import types
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_injection_events import (
    ApiError,
    InjectionApi,
    StreamConnectError,
    injection_event_stream,
)
from pytest_injection_events import security as security_module
from pytest_injection_events.cli import main
from pytest_injection_events.node import FakeCluster, FakeNode
from pytest_injection_events.server import MAX_BODY, PREFIX

TOKEN = "s3cret-t0ken"
SECRET = "topsecret_injection"
#: Headers that vary between any two answers, whatever they say.
VOLATILE = {"Date"}


@pytest.fixture
def secured() -> Iterator[FakeNode]:
    """A node with a token, an injection whose name must not leak, enabled and hit."""
    with FakeNode(token=TOKEN, shards=2) as node:
        node.call(node.injector.enable, SECRET, False, {"password": "hunter2"})
        node.call(lambda: node.injector.inject(SECRET, lambda: None, shard=1))
        yield node


def raw(
    node: FakeNode, method: str, target: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body, exactly as sent (http.client: the target as written)."""
    connection = http.client.HTTPConnection(node.host, node.port, timeout=10)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for key, value in headers.items():
            connection.putheader(key, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        answer = (
            response.read() if response.headers.get_content_type() != "text/event-stream" else b""
        )
        return response.status, dict(response.headers.items()), answer
    finally:
        connection.close()


def state(node: FakeNode) -> tuple[Any, ...]:
    def take() -> tuple[Any, ...]:
        injector = node.injector
        return (
            injector.enabled_injections(),
            injector.injection_state(SECRET),
            injector.enter_counts(),
            node.event_log.last_seq,
            node.event_log.subscriber_count,
        )

    return node.call(take)


REQUESTS: list[tuple[str, str, bytes | None]] = [
    ("POST", f"{PREFIX}/injection/{SECRET}?one_shot=true", b'{"a": "b"}'),
    ("DELETE", f"{PREFIX}/injection/{SECRET}", None),
    ("GET", f"{PREFIX}/injection/{SECRET}", None),
    ("GET", f"{PREFIX}/injection", None),
    ("DELETE", f"{PREFIX}/injection", None),
    ("POST", f"{PREFIX}/injection/{SECRET}/message", None),
    ("GET", f"{PREFIX}/injection/{SECRET}/enters", None),
    ("GET", f"{PREFIX}/points", None),
    ("GET", f"{PREFIX}/events", None),
    ("GET", f"{PREFIX}/events?last_event_id=0&injection={SECRET}", None),
    ("PUT", f"{PREFIX}/injection/{SECRET}", None),  # a wrong method: 401, not 405
    ("HEAD", f"{PREFIX}/events", None),
    ("GET", f"{PREFIX}/nope", None),  # an unknown path: 401, not 404
    ("GET", "/", None),
    ("POST", f"{PREFIX}/injection/{'n' * 5000}", None),  # too long a name: 401, not 400
    ("POST", f"{PREFIX}/injection/x", b"[not json"),
    ("POST", f"{PREFIX}/injection/x", b'{"k": "' + b"v" * MAX_BODY + b'"}'),  # over 1 MiB
    ("PUT", "/kv/k", b"v"),  # the fake node's workload is guarded too
    ("POST", "/topology/requests", b"{}"),
]
WRONG = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer  {TOKEN} extra"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"X-Token": TOKEN},
]


def test_a_401_gives_nothing_away(secured: FakeNode) -> None:
    """Whatever is asked and however the token is wrong, the answer is the same bytes:
    nothing tells a protected path from an unknown one, or a valid request from a bad one,
    and nothing of the node (names, state, identity) or of the token sent comes back."""
    before = state(secured)
    answers = set()
    for method, target, body in REQUESTS:
        for headers in WRONG:
            status, response_headers, answer = raw(secured, method, target, headers, body)
            assert status == 401, (method, target, headers, answer)
            kept = tuple(sorted((k, v) for k, v in response_headers.items() if k not in VOLATILE))
            answers.add((kept, answer if method != "HEAD" else None))
            shown = answer.decode() + json.dumps(response_headers)
            for secret in (SECRET, "hunter2", TOKEN[:-1], "X-Injection", secured.event_log.boot_id):
                assert secret not in shown, (method, target, secret)
    # One set of headers, and one body (HEAD has none): the same for all.
    assert len({headers for headers, _ in answers}) == 1, answers
    bodies = {answer for _, answer in answers if answer is not None}
    assert bodies == {b'{"error": "missing or wrong bearer token"}'}
    assert state(secured) == before


def test_the_scheme_is_case_insensitive_but_the_token_is_exact(secured: FakeNode) -> None:
    """RFC 9110 §11.1: the auth scheme is case-insensitive (`bearer`, `BEARER` work), the
    token is not (and surrounding spaces after the scheme are allowed, RFC 6750 `1*SP`)."""
    target = f"{PREFIX}/injection"
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        for space in (" ", "  "):
            status, _, body = raw(secured, "GET", target, {"Authorization": scheme + space + TOKEN})
            assert (status, json.loads(body)) == (200, [SECRET]), scheme
    for token in (TOKEN.upper(), TOKEN.swapcase(), f"\t{TOKEN}", f"{TOKEN}\u00a0"):
        status, _, _ = raw(secured, "GET", target, {"Authorization": f"Bearer {token}"})
        assert status == 401, token


ANY_VALUE = st.text(
    st.one_of(st.just("\t"), st.characters(min_codepoint=0x20, max_codepoint=0xFF)).filter(
        lambda c: c != "\x7f"
    ),
    max_size=40,
)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    value=st.one_of(
        ANY_VALUE,
        ANY_VALUE.map(lambda v: f"Bearer {v}"),
        st.sampled_from([TOKEN, f"Bearer:{TOKEN}", f"Bearer{TOKEN}", f"Token {TOKEN}"]),
    ),
    call=st.sampled_from(REQUESTS[:13]),
)
def test_no_other_authorization_passes(
    secured: FakeNode, value: str, call: tuple[str, str, bytes | None]
) -> None:
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer" and rest.lstrip(" ") == TOKEN:
        return  # the right token (by the rule of the test above)
    method, target, body = call
    before = state(secured)
    status, _, answer = raw(secured, method, target, {"Authorization": value}, body)
    assert status == 401, (value, method, target, answer)
    assert state(secured) == before


@pytest.mark.asyncio
async def test_the_stream_and_the_client_with_and_without_the_token(secured: FakeNode) -> None:
    """The stream refuses the wrong token before subscribing anything, also when it
    resumes (a Last-Event-ID replays nothing to a stranger); the right one streams."""
    with pytest.raises(StreamConnectError, match="401 missing or wrong bearer token"):
        async with injection_event_stream(secured.url, token="wrong"):
            pass
    status, headers, _ = raw(
        secured, "GET", f"{PREFIX}/events", {"Last-Event-ID": "0", "Authorization": "Bearer no"}
    )
    assert status == 401 and "X-Injection-Boot" not in headers
    assert secured.call(lambda: secured.event_log.subscriber_count) == 0
    async with injection_event_stream(secured.url, token=TOKEN) as stream:
        await InjectionApi(secured.url, TOKEN).enable_injection("kv_write_delay")
        event = await stream.wait_for_injection("kv_write_delay", phase="enable", timeout=10)
    assert event.node == secured.node_id


def test_the_token_is_compared_in_constant_time(
    secured: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Code review, made executable: every request's token check is one
    `hmac.compare_digest` of the given token's bytes with the expected ones, whatever
    their length or how early they differ. (compare_digest takes time that depends on
    the lengths only, not on where the bytes differ; the scheme, which is public, is
    compared apart.) The middleware looks `hmac` up in the server module at each
    request, so a spy there sees every comparison made."""
    calls: list[tuple[bytes, bytes]] = []
    real = security_module.hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        calls.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr(security_module, "hmac", types.SimpleNamespace(compare_digest=spy))
    tries = ["", "x", TOKEN[0] + "x" * (len(TOKEN) - 1), "x" * len(TOKEN), TOKEN + TOKEN, TOKEN]
    for attempt in tries:
        headers = {"Authorization": f"Bearer {attempt}"}
        status, _, _ = raw(secured, "GET", f"{PREFIX}/points", headers)
        assert status == (200 if attempt == TOKEN else 401)
    assert [compared for compared, _ in calls] == [t.encode() for t in tries]
    assert {expected for _, expected in calls} == {TOKEN.encode()}


def test_a_token_with_any_characters_works_end_to_end() -> None:
    """A token outside ASCII is compared as UTF-8 bytes on both sides."""
    token = "ключ-🔑"
    with FakeNode(token=token) as node:
        api = InjectionApi(node.url, token).sync
        api.enable_injection("x")
        assert api.get_enabled_injections() == ["x"]
        with pytest.raises(ApiError) as refused:
            InjectionApi(node.url, "ключ").sync.get_enabled_injections()
        assert refused.value.status == 401
        status, _, _ = raw(node, "GET", f"{PREFIX}/injection", {"Authorization": "Bearer x"})
        assert status == 401


# -- binding --------------------------------------------------------------------------


@pytest.fixture
def no_bind(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Fail the test if anything binds a socket: the refusal must come first."""
    bound: list[Any] = []
    real = socket.socket.bind

    def bind(self: socket.socket, address: Any) -> None:
        bound.append(address)
        return real(self, address)

    monkeypatch.setattr(socket.socket, "bind", bind)
    return bound


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]", "0", "10.0.0.1", "::ffff:10.0.0.1"])
def test_serve_refuses_a_non_loopback_address_before_binding(
    host: str, no_bind: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--host", host, "--port", "0", "--token", TOKEN]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"refusing to listen on {host!r}: not a loopback address" in err
    assert "--allow-remote" in err and "Traceback" not in err
    assert TOKEN not in err
    assert no_bind == []


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7"])
def test_fake_nodes_refuse_a_non_loopback_address_before_binding(
    host: str, no_bind: list[Any]
) -> None:
    with pytest.raises(ValueError, match=r"not a loopback address.*--allow-remote"):
        FakeNode(host=host, token=TOKEN)
    with pytest.raises(ValueError, match="not a loopback address"):
        FakeCluster(2, host=host)
    assert no_bind == []
