"""A node's events from its log file, for nodes without an event stream (ScyllaDB today).

The file is followed as it grows: on Linux through inotify, read on the event
loop (`loop.add_reader`), so a line is seen as soon as it is written, with no
thread and no dependency; elsewhere by a short poll. Only the injection
framework's own lines (logger `errinj`, protocol.py) become events, numbered
per node in file order. A file truncated or replaced is a new life. See
docs/design.md.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import logging
import math
import os
import sys
from typing import Any

from .errors import StreamConnectError
from .event_schema import DISABLE, ENABLE, ENTER, RESUME, InjectionEvent
from .injector import HANDLER, WAIT_FOR_MESSAGE
from .protocol import LOG_LOGGER, parse_framework_message, parse_log_line
from .source import NodeSource, StreamHost, stop_task

#: Where inotify is missing, the file is checked this often.
POLL_PERIOD = 0.01
_READ_SIZE = 1 << 20
#: Reading at an offset without a seek (not on Windows, where an open file also blocks
#: its rename: there the file is opened for each read).
_PREAD = hasattr(os, "pread")

_log = logging.getLogger("pytest_injection_events.client")


def log_file_of(log: Any) -> str:
    """The path of a log given as a path or as a log object with a `.file` path."""
    path = getattr(log, "file", log)
    try:
        return os.fspath(path)
    except TypeError:
        raise TypeError(
            f"log must be a path or an object with a `.file` path, got {type(log).__name__}"
        ) from None


class _Inotify:
    """Wakes a callback when anything in one directory changes (Linux only)."""

    # IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE |
    # IN_DELETE: growth, truncation, replacement and removal of any file in it.
    _MASK = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200
    _FLAGS = os.O_NONBLOCK | os.O_CLOEXEC  # IN_NONBLOCK, IN_CLOEXEC have the same values
    _libc: Any = None

    def __init__(self, directory: str, callback: Any) -> None:
        libc = self._load()
        fd = libc.inotify_init1(self._FLAGS)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if libc.inotify_add_watch(fd, os.fsencode(directory), self._MASK) < 0:
            code = ctypes.get_errno()
            os.close(fd)
            raise OSError(code, f"inotify_add_watch failed on {directory}")
        self.fd = fd
        self._loop = asyncio.get_running_loop()
        self._callback = callback
        self._loop.add_reader(fd, self._ready)

    @classmethod
    def _load(cls) -> Any:
        if cls._libc is None:
            if not sys.platform.startswith("linux"):
                raise OSError(errno.ENOSYS, "inotify is Linux only")
            cls._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return cls._libc

    def _ready(self) -> None:
        # One read: what did not fit keeps the descriptor readable, and the loop calls again.
        try:
            os.read(self.fd, 65536)
        except BlockingIOError:
            pass
        self._callback()

    def close(self) -> None:
        self._loop.remove_reader(self.fd)
        os.close(self.fd)


class LogSource(NodeSource):
    kind = "log"
    phases = frozenset({ENTER, RESUME, ENABLE, DISABLE})

    def __init__(self, host: StreamHost, url: str, node_id: str, path: str) -> None:
        super().__init__(host, url, node_id)
        self.path = path
        self._offset = 0
        self._inode: int | None = None
        self._partial = b""
        self._since: float | None = None  # drop lines stamped before this (a late attach)
        self._kinds: dict[str, str | None] = {}  # the kind of each injection seen entering
        #: (name, shard) whose last line was `Triggering injection "NAME" with injection
        #: handler`: a breakpoint is a handler point, so its `NAME: waiting for message`
        #: that follows (at debug level) is the same hit, not a second one.
        self._handler_entered: set[tuple[str | None, int]] = set()
        self._watch: _Inotify | None = None
        self._poller: asyncio.Task[None] | None = None
        #: The file, kept open between reads where reading at an offset needs no seek
        #: (POSIX): a read after a wakeup is then a stat and a pread, not six calls.
        self._fd: int | None = None

    def describe(self) -> str:
        return f"log {self.path}"

    async def start(self, history: bool) -> None:
        # Local file work of microseconds: done on the loop, as every later read is.
        if not self._begin(history):
            self._poller = asyncio.create_task(self._poll(), name=f"injection-log {self.path}")
        self.read()

    def _begin(self, history: bool) -> bool:
        """Take the starting point and watch the file; False where inotify is missing."""
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise StreamConnectError(f"cannot follow the log {self.path}: no such directory")
        if history:
            # The line's clock has milliseconds: a line of the stream's own millisecond counts.
            self._since = math.floor(self.host.opened_at * 1000) / 1000
        else:
            try:
                stat = os.stat(self.path)
                self._offset, self._inode = stat.st_size, stat.st_ino
            except FileNotFoundError:
                pass  # not written yet: all of it will be new
        try:
            self._watch = _Inotify(directory, self.read)
        except OSError as exc:
            _log.debug("no inotify for %s (%s); polling every %gs", self.path, exc, POLL_PERIOD)
            return False
        return True

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_PERIOD)
            self.read()

    async def position(self) -> tuple[int, int]:
        self.read()  # every line written before the mark is numbered before it
        return self.life, self.seq

    def read(self) -> None:
        """Turn every whole line written since the last read into events."""
        if self._fd is None or not _PREAD:
            self._read_anew()
            return
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return
        if stat.st_ino != self._inode or stat.st_size < self._offset:
            self._read_anew()  # replaced or truncated: the open file is the old one
            return
        while stat.st_size > self._offset:
            chunk = os.pread(self._fd, _READ_SIZE, self._offset)
            if not chunk:
                break
            self._offset += len(chunk)
            self._lines(chunk)

    def _read_anew(self) -> None:
        """Open the file (again), tell a new life by its inode or size, read what is new."""
        self._close_file()
        try:
            file = open(self.path, "rb")
        except FileNotFoundError:
            return
        with file:
            stat = os.fstat(file.fileno())
            if self._inode is not None and (
                stat.st_ino != self._inode or stat.st_size < self._offset
            ):
                self._new_life("replaced" if stat.st_ino != self._inode else "truncated")
            self._inode = stat.st_ino
            if _PREAD:
                self._fd = os.dup(file.fileno())
            file.seek(self._offset)
            while chunk := file.read(_READ_SIZE):
                self._offset += len(chunk)
                self._lines(chunk)

    def _close_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _new_life(self, why: str) -> None:
        self.life += 1
        self.seq = 0
        self._offset = 0
        self._partial = b""
        self.host.restarted(self.node_id, f"log {why}")

    def _lines(self, chunk: bytes) -> None:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            if LOG_LOGGER.encode() not in raw:  # most lines: skipped without decoding
                continue
            line = parse_log_line(raw.decode("utf-8", "replace"))
            if line is None or line.logger != LOG_LOGGER:
                continue
            said = parse_framework_message(line.message)
            if said is None:
                continue
            if self._since is not None:
                if line.timestamp < self._since:
                    continue
                self._since = None  # the file is in time order: the rest is all new
            where = (said.injection, line.shard)
            follows_handler_line = where in self._handler_entered
            self._handler_entered.discard(where)
            if said.phase == ENTER:
                if follows_handler_line and said.kind == WAIT_FOR_MESSAGE:
                    continue  # the breakpoint's own line for the hit just numbered
                if said.kind == HANDLER:
                    self._handler_entered.add(where)
                self._kinds[said.injection or ""] = said.kind
            self.seq += 1
            self.deliver(
                InjectionEvent(
                    injection=said.injection,
                    type=said.kind or self._kinds.get(said.injection or ""),
                    phase=said.phase,
                    shard=line.shard if said.phase in (ENTER, RESUME) else None,
                    node=self.node_id,
                    seq=self.seq,
                    timestamp=line.timestamp,
                    one_shot=said.one_shot,
                )
            )

    async def close(self) -> None:
        self._close_file()
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._poller is not None:
            await stop_task(self._poller)
            self._poller = None
