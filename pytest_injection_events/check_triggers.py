"""How the check makes a server pass a point (a trigger), and watches its log.

See docs/conformance.md.
"""

from __future__ import annotations

import asyncio
import os
import time
import zlib
from typing import BinaryIO

from .check_report import CheckError
from .check_transport import Http
from .errors import InjectionEventsError


class TriggerFailed(InjectionEventsError):
    """The trigger could not make the server pass through the point."""


class WorkloadTrigger:
    """Our fake node's workload: `PUT /kv/{key}` passes the write points on the key's shard."""

    def __init__(self, http: Http, point: str, parameters: dict[str, str] | None = None):
        self.http = http
        self.point = point
        self.parameters = dict(parameters or {})
        self.chooses_shard = True
        self._keys: dict[tuple[int, int], int] = {}

    def describe(self) -> str:
        return f"fake node workload: PUT /kv/{{key}} passes {self.point!r} on the key's shard"

    def key_for(self, shard: int, shards: int) -> str:
        """A fresh key on `shard`: the fake node puts a key on crc32(key) % shards (node.py)."""
        n = self._keys.get((shard, shards), 0)
        while True:
            key = f"check-s{shard}-{n}"
            n += 1
            if zlib.crc32(key.encode()) % shards == shard:
                self._keys[(shard, shards)] = n
                return key

    async def run(self, shard: int | None, shards: int) -> str:
        key = self.key_for(shard or 0, shards)
        path = f"/kv/{key}"
        try:
            answer = await self.http.request("PUT", path, params=[("replicate", "false")])
        except ConnectionError as exc:
            raise TriggerFailed(str(exc)) from None
        if answer.status != 200:
            raise TriggerFailed(answer.shown())
        return f"PUT {path}?replicate=false"


class CommandTrigger:
    """A shell command the user gives that makes the server pass through `point`."""

    def __init__(self, point: str, command: str, timeout: float) -> None:
        self.point = point
        self.command = command
        self.timeout = timeout
        self.parameters: dict[str, str] = {}
        self.chooses_shard = False

    def describe(self) -> str:
        return f"command {self.command!r} passes {self.point!r}"

    async def run(self, shard: int | None, shards: int) -> str:
        process = await asyncio.create_subprocess_shell(
            self.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, err = await asyncio.wait_for(process.communicate(), self.timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            if process.returncode is None:
                process.kill()
            await process.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise TriggerFailed(
                f"trigger {self.command!r} did not finish within {self.timeout:g}s"
            ) from None
        if process.returncode != 0:
            last = (err or b"").decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise TriggerFailed(
                f"trigger {self.command!r} exited {process.returncode}: {last[0][:200]}"
            )
        return f"trigger {self.command!r}"


class LogTail:
    """Notes when lines about one injection appear in a log file (polled every millisecond)."""

    PERIOD = 0.001

    def __init__(self, path: str, point: str) -> None:
        self.path = path
        self.needles = (f"{point}: waiting for message", f'"{point}"')
        self.seen: list[float] = []  # time.time() each matching line was noticed
        self._task: asyncio.Task[None] | None = None
        self._file: BinaryIO | None = None
        self._changed = asyncio.Event()

    def start(self) -> None:
        try:
            self._file = open(self.path, "rb")  # closed by close()
        except OSError as exc:
            raise CheckError(f"cannot read the log {self.path}: {exc.strerror or exc}") from None
        self._file.seek(0, os.SEEK_END)
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        file = self._file
        assert file is not None
        pending = b""
        while True:
            chunk = file.read()  # a regular file: returns at once
            if chunk:
                now = time.time()
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    text = line.decode(errors="replace")
                    if any(needle in text for needle in self.needles) and (
                        "waiting for message" in text or "Triggering" in text
                    ):
                        self.seen.append(now)
                        self._changed.set()
            await asyncio.sleep(self.PERIOD)

    async def wait_count(self, count: int, timeout: float) -> float | None:
        """When the `count`-th matching line was noticed, or None if not within `timeout`."""
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return self.seen[count - 1] if len(self.seen) >= count else None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._file is not None:
            self._file.close()
