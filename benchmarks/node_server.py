"""A FakeNode in a process of its own, driven over stdin, so waiters are timed honestly.

The benchmark's waiter runs in another process, as a test would: nothing it does
shares a GIL or a loop with the node. `--no-events` makes a node as ScyllaDB is
today (no `/events`: its log is what a test reads). Commands come one per line on stdin; each
gets one line of JSON on stdout:

- `enable NAME`: enable NAME (not one-shot) on the node's loop.
- `arm NAME DELAY`: release NAME's previous hit if it is parked, then hit NAME as a
  breakpoint DELAY seconds later (what the workload's write path does).
- `burst NAME N`: hit the `lambda` point NAME N times, as fast as the slowest
  reader takes the events; answers the seq range the hits will get.
- `hits NAME`: the node's timestamps of every `enter` of NAME, oldest first.
- `quit` (or end of input): stop the node and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from pytest_injection_events.events import DEFAULT_CAPACITY
from pytest_injection_events.node import FakeNode

#: Hits made in a row before the burst lets the server write.
BURST_CHUNK = 200
#: The burst pauses while any reader has more records than this waiting to be written,
#: so a reader is measured at its own speed instead of being cut off as slow.
BURST_MAX_PENDING = 4_000


class Driver:
    """What the commands do; every method that touches the injector runs on the node's loop."""

    def __init__(self, node: FakeNode) -> None:
        self.node = node
        self.tasks: set[asyncio.Task[Any]] = set()

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def enable(self, name: str) -> dict[str, Any]:
        self.node.injector.enable(name)
        return {"ok": True}

    def arm(self, name: str, delay: float) -> dict[str, Any]:
        injector = self.node.injector
        injector.receive_message(name)  # let the previous round's hit go on
        loop = asyncio.get_running_loop()

        def hit() -> None:
            self._keep(asyncio.ensure_future(injector.inject_wait_for_message(name, 60.0)))

        loop.call_later(delay, hit)
        return {"ok": True}

    def burst(self, name: str, count: int) -> dict[str, Any]:
        event_log = self.node.event_log
        first = event_log.last_seq + 1
        self._keep(asyncio.ensure_future(self._burst(name, count)))
        return {"first": first, "last": first + count - 1}

    async def _burst(self, name: str, count: int) -> None:
        inject = self.node.injector.inject
        subscriptions = self.node.event_log._subscriptions  # read-only: the readers' backlog
        done = 0
        while done < count:
            chunk = min(BURST_CHUNK, count - done)
            for _ in range(chunk):
                inject(name, _nothing)
            done += chunk
            await asyncio.sleep(0)  # let the server write what is pending
            # Readers have no event to wait on us with: look at their backlog every 0.5 ms.
            while True:
                if all(s.backlog <= BURST_MAX_PENDING for s in subscriptions):
                    break
                await asyncio.sleep(0.0005)

    def hits(self, name: str) -> dict[str, Any]:
        records = self.node.event_log.since(0)
        stamps = [
            r.data["timestamp"]
            for r in records
            if r.data["injection"] == name and r.data["phase"] == "enter"
        ]
        return {"timestamps": stamps}


def _nothing() -> None:
    return None


def serve() -> None:
    """Run the node until `quit` or the end of stdin."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--no-events", action="store_true", help="ScyllaDB's API only: no /events (a log node)"
    )
    parser.add_argument("--log-level", default="info", help="the node log's level")
    parser.add_argument(
        "--capacity",
        type=int,
        default=DEFAULT_CAPACITY,
        help=f"events the node keeps (default {DEFAULT_CAPACITY:,}, a FakeNode's own)",
    )
    args = parser.parse_args()
    # `hits` reads the node's own record of its hits (a node without /events keeps one
    # too), so the caller asks for a capacity that holds every hit it will ask about. Not
    # more: a node that keeps a million records pays the garbage collector's passes over
    # them on every hit of a burst (docs/benchmarks.md).
    with FakeNode(
        event_capacity=args.capacity, events=not args.no_events, log_level=args.log_level
    ) as node:
        driver = Driver(node)
        print(json.dumps({"url": node.url, "log_path": node.log_path}), flush=True)
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            command, args = words[0], words[1:]
            if command == "quit":
                break
            if command == "enable":
                answer = node.call(driver.enable, args[0])
            elif command == "arm":
                answer = node.call(driver.arm, args[0], float(args[1]))
            elif command == "burst":
                answer = node.call(driver.burst, args[0], int(args[1]))
            elif command == "hits":
                answer = node.call(driver.hits, args[0])
            else:
                answer = {"error": f"unknown command {command!r}"}
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    serve()
