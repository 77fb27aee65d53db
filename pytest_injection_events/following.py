"""The nodes a stream follows: attaching them (at open or late), naming them, removing them.

A node is known by its key, its base URL; each is read by one source, the best
it offers (event stream, log, `/enters` polling). See docs/design.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .log_source import LogSource, log_file_of
from .poll_source import PollSource
from .protocol import base_url, node_id_of, target_url
from .source import NodeSource, StreamHost, check_injection_node
from .stream_source import NoStream, StreamSource
from .waits import Mark

_log = logging.getLogger("pytest_injection_events.client")


@dataclass(frozen=True)
class StreamNode:
    """A node the stream reads: where, its id, and the source its events come from."""

    url: str
    node_id: str
    source: str


class Following:
    """The followed nodes of one stream, each with its source."""

    def __init__(self, host: StreamHost) -> None:
        self.host = host
        self.sources: dict[str, NodeSource] = {}
        self._attaching: dict[str, asyncio.Future[NodeSource]] = {}

    def nodes(self) -> list[StreamNode]:
        return [StreamNode(s.url, s.node_id, s.describe()) for s in self.sources.values()]

    def keep_order(self, targets: Iterable[Any]) -> None:
        """List the nodes given at open in their order, however their attaches ended."""
        order = dict.fromkeys(target_url(target) for target in targets)
        self.sources = {url: self.sources[url] for url in order}

    async def close(self) -> None:
        await asyncio.gather(*(source.close() for source in self.sources.values()))

    async def remove(self, node: Any) -> None:
        key = self.known_key(node)
        source = self.sources.pop(key, None) if key is not None else None
        if source is None:
            raise ValueError(f"{node!r} is not a node this stream follows ({self.describe()})")
        await source.close()

    async def attach(self, target: Any, log: Any, history: bool) -> NodeSource:
        url = target_url(target)
        log_path = log_file_of(log) if log is not None else None
        if log_path is None and not isinstance(target, str):
            log_path = getattr(target, "log_path", None)
        pending = self._attaching.get(url)
        if pending is not None:  # attached right now by another call: share its result
            await asyncio.shield(pending)
        existing = self.sources.get(url)
        if existing is not None and not (log_path and isinstance(existing, PollSource)):
            return existing
        future: asyncio.Future[NodeSource] = asyncio.get_running_loop().create_future()
        self._attaching[url] = future
        try:
            source = await self._open_source(target, url, log_path, history)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: only the caller reports it
            raise
        finally:
            del self._attaching[url]
        if existing is not None:  # a log given for a polled node: read it instead
            await existing.close()
        self.sources[url] = source
        future.set_result(source)
        return source

    async def _open_source(
        self, target: Any, url: str, log_path: str | None, history: bool
    ) -> NodeSource:
        given_id = None if isinstance(target, str) else getattr(target, "node_id", None)
        node_id = str(given_id) if given_id else node_id_of(url)
        stream = StreamSource(self.host, url, node_id)
        try:
            await stream.start(history)
            return stream
        except NoStream:
            pass
        await check_injection_node(self.host, url)
        source: NodeSource
        if log_path:
            source = LogSource(self.host, url, node_id, log_path)
        else:
            source = PollSource(self.host, url, node_id)
            _log.info(
                "%s has no event stream and no log was given: polling /enters, which sees "
                "phase 'enter' only, counted from now",
                url,
            )
        await source.start(history)
        return source

    def node_id(self, node: Any) -> str | None:
        """The id the events of a followed node carry (`event.node`); None if not followed."""
        key = self.known_key(node)
        return self.sources[key].node_id if key is not None else None

    def describe(self) -> str:
        return ", ".join(f"{s.node_id} ({s.url})" for s in self.sources.values()) or "no node"

    def known_key(self, node: Any) -> str | None:
        """The key of a followed node named by id, URL, host or node object; else None."""
        if isinstance(node, Mark):
            return node.node
        if isinstance(node, str):
            for key, source in self.sources.items():
                if node in (key, source.node_id):
                    return key
            try:
                key = base_url(node)
            except ValueError:
                return None
            return key if key in self.sources else None
        try:
            key = target_url(node)
        except (TypeError, ValueError):
            return None
        return key if key in self.sources else None

    async def key(self, node: Any) -> str:
        """The key of a node a wait or a mark names, attaching it if it is new."""
        key = self.known_key(node)
        if key is not None:
            return key
        try:
            target_url(node)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"node={node!r} names no node this stream follows ({self.describe()}) "
                f"and is not an address to attach: {exc}"
            ) from None
        return (await self.attach(node, None, history=True)).url
