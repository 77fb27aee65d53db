"""What a test knows of a node by its URL: the REST client of its injection API
(mirroring ScyllaDB's test client), the node and cluster given by URL, and how a
node named by index, id or URL is found among them. See docs/design.md."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

from .errors import InjectionEventsError
from .protocol import DEFAULT_PORT, PREFIX, auth_headers, base_url, node_id_of, target_url

T = TypeVar("T")


class ApiError(InjectionEventsError):
    """A request the node answered with an error status."""

    def __init__(self, method: str, url: str, status: int, message: str) -> None:
        super().__init__(f"{method} {url} -> {status}: {message}")
        self.method = method
        self.url = url
        self.status = status
        self.message = message


class NodeUnreachable(InjectionEventsError, ConnectionError):
    """A node that did not answer: refused, reset, or silent past the timeout."""


class SyncCallInLoop(InjectionEventsError, RuntimeError):
    """A blocking call made from a running event loop, which it would freeze."""


class UnknownNode(InjectionEventsError, ValueError):
    """A node named by index, id or URL that is none of the test's nodes."""


class BadParameters(InjectionEventsError, TypeError):
    """Injection parameters that are not a dict of str to str, int, float or bool."""


#: The parameter values ScyllaDB's API takes: each is sent as its `str()`.
PARAMETER_TYPES = (str, int, float, bool)


def parameter_strings(parameters: Mapping[str, Any] | None) -> dict[str, str]:
    """The parameters as the node receives them, refusing a value that is no scalar.

    `None`, a list or an object would be sent as its `str()` (`"None"`) and read
    by the node as that text: a `TypeError` here names the key instead.
    """
    if parameters is None:
        return {}
    if not isinstance(parameters, Mapping):
        raise BadParameters(f"parameters must be a dict, got {type(parameters).__name__}")
    strings = {}
    for key, value in parameters.items():
        if not isinstance(key, str) or not isinstance(value, PARAMETER_TYPES):
            raise BadParameters(
                f"parameter {key!r}: keys are str and values str, int, float or bool "
                f"(sent as text), got {type(value).__name__} {value!r}"
            )
        strings[key] = str(value)
    return strings


class InjectionApi:
    """Async REST client of one node.

    Inside `async with api:` calls share one connection pool; outside it each
    call opens and closes its own, so the object works from any event loop and
    never leaks a session. `api.sync` has the same calls for synchronous code.
    """

    def __init__(
        self,
        target: Any,
        token: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = target_url(target)
        self.token = token
        self._session = session
        self._owns_session = False
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def __aenter__(self) -> InjectionApi:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session, self._owns_session = None, False

    @property
    def sync(self) -> SyncInjectionApi:
        """The same calls, blocking, for synchronous tests."""
        return SyncInjectionApi(self.url, self.token, timeout=self._timeout.total or 30.0)

    def _url(self, *segments: str) -> URL:
        path = "/".join(quote(s, safe="") for s in segments)
        return URL(f"{self.url}{PREFIX}/{path}", encoded=True)

    async def _request(
        self, method: str, url: URL, *, params: dict[str, str] | None = None, body: Any = None
    ) -> Any:
        if self._session is None:
            async with aiohttp.ClientSession() as session:
                return await self._send(session, method, url, params, body)
        return await self._send(self._session, method, url, params, body)

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: URL,
        params: dict[str, str] | None,
        body: Any,
    ) -> Any:
        data = json.dumps(body) if body is not None else None
        headers = auth_headers(self.token)
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with session.request(
                method, url, params=params, data=data, headers=headers, timeout=self._timeout
            ) as response:
                text = await response.text()
                if response.status != 200:
                    try:
                        message = json.loads(text)["error"]
                    except (ValueError, KeyError, TypeError):
                        message = text[:500]
                    raise ApiError(method, str(url), response.status, message)
                return json.loads(text) if text else None
        except asyncio.TimeoutError as exc:  # first: aiohttp's timeouts are connection errors too
            detail = f" ({exc})" if str(exc) else ""
            raise NodeUnreachable(
                f"{method} {url}: no answer within {self._timeout.total:g}s{detail}"
            ) from exc
        except aiohttp.ClientConnectionError as exc:
            raise NodeUnreachable(
                f"{method} {url}: node unreachable: {str(exc) or type(exc).__name__}"
            ) from exc

    async def enable_injection(
        self, name: str, one_shot: bool = False, parameters: dict[str, Any] | None = None
    ) -> None:
        """Enable `name`; parameter values go as strings, as ScyllaDB's client sends them.

        Raises `BadParameters` (a `TypeError`) before any request for a value that
        is not str, int, float or bool.
        """
        body = parameter_strings(parameters)
        params = {"one_shot": "true" if one_shot else "false"}
        await self._request("POST", self._url("injection", name), params=params, body=body)

    async def disable_injection(self, name: str) -> None:
        await self._request("DELETE", self._url("injection", name))

    async def disable_all(self) -> None:
        await self._request("DELETE", self._url("injection"))

    async def get_enabled_injections(self) -> list[str]:
        return list(await self._request("GET", self._url("injection")))

    async def get_injection(self, name: str) -> list[dict[str, Any]]:
        """One `{"enabled", "parameters": [{"key", "value"}]}` per shard."""
        return list(await self._request("GET", self._url("injection", name)))

    async def message_injection(self, name: str) -> None:
        await self._request("POST", self._url("injection", name, "message"))

    async def get_enter_count(self, name: str) -> int:
        return int(await self._request("GET", self._url("injection", name, "enters")))

    async def points(self) -> list[dict[str, Any]]:
        """The node's catalog: `[{"name", "type", "doc", "enter_count"}]`."""
        return list(await self._request("GET", self._url("points")))

    def __repr__(self) -> str:
        return f"<InjectionApi {self.url}>"


class SyncInjectionApi:
    """Blocking twin of `InjectionApi`, for synchronous tests; not for use inside a loop."""

    def __init__(self, target: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        self._api = InjectionApi(target, token, timeout=timeout)
        self.url = self._api.url

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(call)
        call.close()
        raise SyncCallInLoop("SyncInjectionApi blocks; in async code use `await` on InjectionApi")

    def enable_injection(
        self, name: str, one_shot: bool = False, parameters: dict[str, Any] | None = None
    ) -> None:
        parameter_strings(parameters)  # refused here, before a loop is started for nothing
        self._run(self._api.enable_injection(name, one_shot, parameters))

    def disable_injection(self, name: str) -> None:
        self._run(self._api.disable_injection(name))

    def disable_all(self) -> None:
        self._run(self._api.disable_all())

    def get_enabled_injections(self) -> list[str]:
        return self._run(self._api.get_enabled_injections())

    def get_injection(self, name: str) -> list[dict[str, Any]]:
        return self._run(self._api.get_injection(name))

    def message_injection(self, name: str) -> None:
        self._run(self._api.message_injection(name))

    def get_enter_count(self, name: str) -> int:
        return self._run(self._api.get_enter_count(name))

    def points(self) -> list[dict[str, Any]]:
        return self._run(self._api.points())

    def __repr__(self) -> str:
        return f"<SyncInjectionApi {self.url}>"


class RemoteNode:
    """A node given by URL (`--injection-node-url`): what a test can know of it."""

    def __init__(self, target: str) -> None:
        self.url = base_url(target)
        parts = urlsplit(self.url)
        self.host = parts.hostname or ""
        self.port = parts.port or DEFAULT_PORT
        self.node_id = node_id_of(self.url)

    def __repr__(self) -> str:
        return f"<RemoteNode {self.url}>"


class RemoteCluster:
    """The nodes given by URL (`--injection-node-url`), shaped like a `FakeCluster`."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.nodes = [RemoteNode(url) for url in urls]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def __getitem__(self, index: int) -> RemoteNode:
        return self.nodes[index]

    def __iter__(self) -> Iterator[RemoteNode]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        return f"<RemoteCluster {self.urls}>"


def resolve_node(node: object, urls: Sequence[str]) -> str:
    """The URL among `urls` of `node`: an index, a node id, a URL or an object with `.url`.

    Raises `UnknownNode` (a `ValueError`) when it is none of them.
    """
    if isinstance(node, int) and not isinstance(node, bool):
        if not -len(urls) <= node < len(urls):
            raise UnknownNode(f"node={node} but there are {len(urls)} node(s)")
        return urls[node]
    wanted = str(getattr(node, "url", node))
    for url in urls:
        if wanted in (url, node_id_of(url)):
            return url
    raise UnknownNode(f"node={node!r} is none of {list(urls)}")
