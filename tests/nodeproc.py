"""A node run as a separate process (`injection-events serve`), for what only a process
shows: its memory (RSS from /proc) and its file descriptor limit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

LINE = re.compile(r"node (?P<id>\S+) listening on (?P<url>http://\S+)")

#: Runs `serve` after lowering the soft descriptor limit when NOFILE is set.
_BOOT = """
import os, resource, sys
limit = os.environ.get("NODEPROC_NOFILE")
if limit:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(limit), hard))
from pytest_injection_events.cli import main
sys.exit(main(["serve", "--port", "0", *sys.argv[1:]]))
"""


class NodeProcess:
    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url
        self.host, port = url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)

    def rss(self) -> int:
        """Resident set size in bytes, from /proc/PID/status."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def open_descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))


@contextmanager
def node_process(*args: str, nofile: int | None = None) -> Iterator[NodeProcess]:
    env = {k: v for k, v in os.environ.items() if k != "INJECTION_EVENTS_TOKEN"}
    if nofile is not None:
        env["NODEPROC_NOFILE"] = str(nofile)
    with subprocess.Popen(
        [sys.executable, "-c", _BOOT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        try:
            assert process.stdout is not None and process.stderr is not None
            line = process.stdout.readline()
            match = LINE.fullmatch(line.rstrip("\n"))
            assert match, f"not a ready line: {line!r}; stderr: {process.stderr.read()}"
            yield NodeProcess(process, match["url"])
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.communicate()
