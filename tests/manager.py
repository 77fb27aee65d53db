"""A small ScyllaDB-style test harness over fake nodes (not shipped).

It follows the shape of ScyllaDB's `ManagerClient` and `ScyllaLogFile`
(`test/pylib/`), so the project's tests are written the way a cluster suite is:
servers added, stopped, restarted and removed in the test body, a log opened per
server, marks and waits on it. The log reader polls every 10 ms at the end of the
file, as ScyllaDB's does: it is the old way the event stream replaces.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_injection_events.node import FakeCluster, FakeNode

#: How long `ScyllaLogFile` sleeps at the end of the file before reading again.
POLL_INTERVAL = 0.01
_ERROR = re.compile(r"ERROR\b")
_INFO = re.compile(r"INFO\b")
#: The start of a ScyllaDB log line: a level, then the date.
_LOG_LINE = re.compile(r"^[A-Z]+ +\d{4}-\d\d-\d\d ")


@dataclass(frozen=True)
class ServerInfo:
    """What ScyllaDB's manager answers for a server; `url` since fake nodes listen on
    free ports rather than on 10000."""

    server_id: int
    ip_addr: str
    rpc_address: str
    url: str

    def __str__(self) -> str:
        return f"Server({self.server_id}, {self.url})"


class ScyllaLogFile:
    """One server's log, browsed as ScyllaDB's tests do: marks are byte offsets."""

    def __init__(
        self, thread_pool: concurrent.futures.Executor | None, logfile_path: str | Path
    ) -> None:
        self.thread_pool = thread_pool
        self.file = Path(logfile_path)
        if not self.file.is_file():
            raise FileNotFoundError(f"log file {self.file} does not exist")

    async def _io(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.thread_pool, fn, *args)

    async def mark(self) -> int:
        """The log's size now: lines written after this are `from_mark=mark`."""
        return (await self._io(self.file.stat)).st_size

    async def wait_for(
        self,
        *patterns: str | re.Pattern[str],
        from_mark: int | None = None,
        timeout: float = 600,
    ) -> tuple[int, list[tuple[str, re.Match[str]]]]:
        """Wait until every pattern matched a line (from the mark, else from the start).

        Returns the position after the last line read and `(line, match)` per pattern,
        in the order they matched; TimeoutError when some did not match in time.
        """
        compiled = [re.compile(pattern) for pattern in patterns]
        matches: list[tuple[str, re.Match[str]]] = []
        with self.file.open("rb") as log:
            if from_mark is not None:
                await self._io(log.seek, from_mark)

            async def tail() -> None:
                line = b""
                while compiled:
                    line += await self._io(log.readline)
                    if not line.endswith(b"\n"):
                        await asyncio.sleep(POLL_INTERVAL)  # at the end: poll, as ScyllaDB
                        continue
                    text = line.decode("utf-8", "replace")
                    line = b""
                    for pattern in list(compiled):
                        if match := pattern.search(text):
                            matches.append((text, match))
                            compiled.remove(pattern)

            try:
                await asyncio.wait_for(tail(), timeout)
            except asyncio.TimeoutError:  # the builtin one from 3.11 on only
                unmatched = ", ".join(repr(p.pattern) for p in compiled)
                raise TimeoutError(f"{unmatched} not in {self.file} within {timeout}s") from None
            return await self._io(log.tell), matches

    async def _lines(self, from_mark: int | None) -> list[str]:
        def read() -> list[str]:
            with self.file.open("rb") as log:
                if from_mark:
                    log.seek(from_mark)
                return [raw.decode("utf-8", "replace") for raw in log]

        return await self._io(read)

    async def grep(
        self,
        expr: str | re.Pattern[str],
        filter_expr: str | re.Pattern[str] | None = None,
        from_mark: int | None = None,
        max_count: int = 0,
    ) -> list[tuple[str, re.Match[str]]]:
        """Lines matching `expr` and not `filter_expr`; at most `max_count` (0: all)."""
        pattern = re.compile(expr)
        excluded = re.compile(filter_expr) if filter_expr is not None else None
        found: list[tuple[str, re.Match[str]]] = []
        for line in await self._lines(from_mark):
            if excluded is not None and excluded.search(line):
                continue
            if match := pattern.search(line):
                found.append((line, match))
                if max_count and len(found) >= max_count:
                    break
        return found

    async def grep_for_errors(
        self, distinct_errors: bool = False, from_mark: int | None = None
    ) -> list[str] | list[list[str]]:
        """ERROR lines: each with the lines after it up to the next INFO line, or (with
        `distinct_errors`) each distinct ERROR line once."""
        lines = await self._lines(from_mark)
        if distinct_errors:
            return list(dict.fromkeys(line for line in lines if _ERROR.match(line)))
        errors: list[list[str]] = []
        current: list[str] | None = None
        for line in lines:
            if _ERROR.match(line):
                current = [line]
                errors.append(current)
            elif _INFO.match(line):
                current = None
            elif current is not None:
                current.append(line)
        return errors

    async def find_backtraces(self, from_mark: int | None = None) -> list[str]:
        """Each `Backtrace:` with the address lines that follow it, as one string."""
        backtraces: list[str] = []
        current: list[str] | None = None
        for line in await self._lines(from_mark):
            if current is not None and line.strip() and not _LOG_LINE.match(line):
                current.append(line)
                continue
            if current is not None:
                backtraces.append("".join(current))
                current = None
            if "Backtrace:" in line:
                current = [line]
        if current is not None:
            backtraces.append("".join(current))
        return backtraces


class Manager:
    """ScyllaDB's test manager over a `FakeCluster` that starts empty.

    `with Manager() as manager` or `async with`: every server is stopped, and its
    temporary log removed, at the end. `node_options` are every server's FakeNode
    defaults.
    """

    def __init__(self, **node_options: Any) -> None:
        self.cluster = FakeCluster(0, **node_options)
        self._servers: dict[int, FakeNode] = {}
        self._ids = itertools.count(1)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    # -- servers -----------------------------------------------------------------

    def node(self, server_id: int) -> FakeNode:
        """The fake node behind a server, for what the REST API does not offer."""
        try:
            return self._servers[server_id]
        except KeyError:
            raise ValueError(f"no server {server_id!r} in this cluster") from None

    def _info(self, server_id: int) -> ServerInfo:
        node = self._servers[server_id]
        return ServerInfo(server_id, node.host, node.host, node.url)

    async def servers_add(
        self, n: int = 1, *, events: bool = True, **opts: Any
    ) -> list[ServerInfo]:
        """Start `n` servers that join the cluster (every peer list updated)."""
        nodes = await asyncio.to_thread(self.cluster.add_nodes, n, events=events, **opts)
        added = []
        for node in nodes:
            server_id = next(self._ids)
            self._servers[server_id] = node
            added.append(self._info(server_id))
        return added

    async def server_add(self, *, events: bool = True, **opts: Any) -> ServerInfo:
        (server,) = await self.servers_add(1, events=events, **opts)
        return server

    async def server_stop(self, server_id: int) -> None:
        await asyncio.to_thread(self.cluster.stop_node, self.node(server_id))

    async def server_start(self, server_id: int) -> None:
        await asyncio.to_thread(self.cluster.start_node, self.node(server_id))

    async def server_restart(self, server_id: int) -> None:
        await asyncio.to_thread(self.cluster.restart_node, self.node(server_id))

    async def server_remove(self, server_id: int) -> None:
        """Stop the server and drop it from the cluster; its log stays readable."""
        await asyncio.to_thread(self.cluster.remove_node, self.node(server_id))
        del self._servers[server_id]

    def running_servers(self) -> list[ServerInfo]:
        return [self._info(i) for i, node in self._servers.items() if node.running]

    def all_servers(self) -> list[ServerInfo]:
        return [self._info(i) for i in self._servers]

    async def server_open_log(self, server_id: int) -> ScyllaLogFile:
        path = self.node(server_id).log_path
        assert path is not None  # set once a node has started
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(2, "manager-log")
        return ScyllaLogFile(self._pool, path)

    # -- lifetime ----------------------------------------------------------------

    def start(self) -> Manager:
        self.cluster.start()
        return self

    def stop(self) -> None:
        """Stop every server, remove the logs they made, end the log readers' threads."""
        self.cluster.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> Manager:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Manager:
        return self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)
