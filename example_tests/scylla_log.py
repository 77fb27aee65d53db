"""The log-tailing helper tests use today (modelled on ScyllaDB's ScyllaLogFile).

Kept here only so `test_log_wait_old_way.py` shows the way we migrate off:
it reads the node's log file and sleeps 10 ms whenever it reaches the end.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path


class ScyllaLogFile:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.file = Path(path)  # as ScyllaDB's: what a stream reads a node's log from

    async def mark(self) -> int:
        return os.stat(self.path).st_size

    async def wait_for(
        self, *exprs: str, from_mark: int | None = None, timeout: float = 600
    ) -> tuple[int, list[tuple[str, re.Match[str]]]]:
        return await asyncio.wait_for(self._tail(exprs, from_mark), timeout)

    async def _tail(
        self, exprs: tuple[str, ...], from_mark: int | None
    ) -> tuple[int, list[tuple[str, re.Match[str]]]]:
        patterns = [re.compile(expr) for expr in exprs]
        matches: list[tuple[str, re.Match[str]]] = []
        # ScyllaDB reads through a thread pool; a local file read is quick enough inline.
        with open(self.path, encoding="utf-8") as log_file:  # noqa: ASYNC230
            if from_mark is not None:
                log_file.seek(from_mark)
            line = ""
            while patterns:
                line += log_file.readline()
                if line:
                    for pattern in list(patterns):
                        if match := pattern.search(line):
                            matches.append((line, match))
                            patterns.remove(pattern)
                    if line.endswith("\n"):
                        line = ""
                else:
                    await asyncio.sleep(0.01)  # what log tailing costs: the poll at EOF
            return log_file.tell(), matches
