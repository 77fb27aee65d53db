"""The `injection-events` command: serve fake nodes, watch a stream, migrate tests."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

from .event_schema import PHASES
from .events import DEFAULT_CAPACITY, DEFAULT_MAX_BYTES
from .node import FakeCluster
from .protocol import DEFAULT_PORT, TOKEN_ENV
from .stream import format_event, injection_event_stream


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="injection-events",
        description="Error-injection event streams for tests of clustered servers.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run fake nodes that speak the injection API")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port of the first node, the next ones count up; 0 picks free ports "
        f"(default {DEFAULT_PORT})",
    )
    serve.add_argument("--nodes", type=_positive_int, default=1, help="how many nodes (default 1)")
    serve.add_argument(
        "--shards", type=_positive_int, default=1, help="shards per node (default 1)"
    )
    serve.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"require 'Authorization: Bearer TOKEN' on every endpoint (or set {TOKEN_ENV})",
    )
    serve.add_argument(
        "--allow-remote", action="store_true", help="allow binding a non-loopback address"
    )
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="without a token, also answer requests whose Host is NAME (any port) or "
        "NAME:PORT; repeatable. Loopback names and addresses are always allowed",
    )
    serve.add_argument(
        "--event-capacity",
        type=_positive_int,
        default=DEFAULT_CAPACITY,
        metavar="N",
        help=f"events each node keeps for replay (default {DEFAULT_CAPACITY:,})",
    )
    serve.add_argument(
        "--event-max-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_BYTES,
        metavar="BYTES",
        help=f"bytes of events each node keeps for replay, whichever bound comes first "
        f"(default {DEFAULT_MAX_BYTES // 2**20} MiB)",
    )
    serve.set_defaults(run=run_serve)

    watch = commands.add_parser("watch", help="print a node's injection events until Ctrl-C")
    watch.add_argument(
        "urls", nargs="+", metavar="URL", help="node URL (or host[:port]); several merge"
    )
    watch.add_argument(
        "--injection",
        action="append",
        default=[],
        metavar="NAME",
        help="only this injection (repeatable)",
    )
    watch.add_argument(
        "--phase",
        action="append",
        default=[],
        choices=sorted(PHASES),
        help="only this phase (repeatable; default: every phase)",
    )
    watch.add_argument("--json", action="store_true", help="one JSON object per line")
    watch.add_argument("--token", default=os.environ.get(TOKEN_ENV), help="bearer token")
    watch.set_defaults(run=run_watch)

    migrate = commands.add_parser(
        "migrate", help="rewrite log.wait_for(...) waits into injection event waits (libcst)"
    )
    migrate.add_argument("paths", nargs="+", metavar="PATH", help="files or directories")
    mode = migrate.add_mutually_exclusive_group()
    mode.add_argument(
        "--diff", action="store_true", help="print the diff, change nothing (default)"
    )
    mode.add_argument("--write", action="store_true", help="rewrite the files in place")
    migrate.add_argument(
        "--points",
        metavar="SOURCE",
        help="which injection points are breakpoints: a catalog JSON file (as GET "
        "/v2/error_injection/points answers), a running node's URL, or a source tree to scan; "
        "without it only whole framework lines ('NAME: waiting for message') convert",
    )
    migrate.set_defaults(run=run_migrate)

    check = commands.add_parser(
        "check", help="check a server's injection API and event stream against the protocol"
    )
    check.add_argument("url", metavar="URL", help="the server (URL or host[:port])")
    check.add_argument(
        "--log", metavar="PATH", help="the server's log file: compare its lines' latency"
    )
    check.add_argument("--token", default=os.environ.get(TOKEN_ENV), help="bearer token")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--point", metavar="NAME", help="the injection point --trigger passes")
    check.add_argument(
        "--trigger", metavar="CMD", help="shell command that makes the server pass --point"
    )
    check.add_argument(
        "--timeout",
        type=_positive_float,
        default=5.0,
        help="seconds any one step may take (default 5)",
    )
    check.add_argument(
        "--hits", type=_positive_int, default=30, help="hits timed for latency (default 30)"
    )
    check.add_argument(
        "--clients", type=_positive_int, default=20, help="concurrent clients (default 20)"
    )
    check.set_defaults(run=run_check)
    return parser


#: How often `serve` looks whether a stop signal came, in seconds.
STOP_CHECK = 0.05


def run_serve(args: argparse.Namespace) -> int:
    cluster = FakeCluster(
        args.nodes,
        args.shards,
        host=args.host,
        token=args.token or None,
        allow_remote=args.allow_remote,
        allowed_hosts=args.allowed_host,
        event_capacity=args.event_capacity,
        event_max_bytes=args.event_max_bytes,
    )
    for index, node in enumerate(cluster):
        node.port = args.port + index if args.port else 0
    # The handlers only note the signal. One that takes a lock (`threading.Event.set`)
    # deadlocks when the signal lands while the main thread holds that lock, inside
    # `Event.wait` itself: the stop then never came (seen under load in CI).
    received: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: received.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with cluster:
            for node in cluster:
                print(f"node {node.node_id} listening on {node.url}", flush=True)
            while not received:
                time.sleep(STOP_CHECK)  # the handler runs when the signal comes
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


async def _watch(args: argparse.Namespace) -> None:
    stream = injection_event_stream(
        args.urls, injections=args.injection, phases=args.phase, token=args.token or None
    )
    async with stream:
        print(f"watching {', '.join(stream.urls)} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        async for event in stream:
            line = json.dumps(event.to_dict()) if args.json else format_event(event)
            print(line, flush=True)


def run_watch(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        asyncio.run(_watch(args))
    except KeyboardInterrupt:
        pass
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    from .migrate import run_migrate as migrate_paths

    # The report goes to stderr so that `migrate tests/ > fix.patch` is a clean diff.
    return migrate_paths(args.paths, write=args.write, points=args.points, err=sys.stderr)


def run_check(args: argparse.Namespace) -> int:
    from .check import CheckError
    from .check import run_check as check_server

    if (args.point is None) != (args.trigger is None):
        raise ValueError("--point and --trigger go together")
    try:
        report = asyncio.run(
            check_server(
                args.url,
                token=args.token or None,
                log=args.log,
                point=args.point,
                trigger=args.trigger,
                timeout=args.timeout,
                hits=args.hits,
                clients=args.clients,
            )
        )
    except CheckError as exc:
        print(f"injection-events check: {exc}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report.to_text(), flush=True)
    return 0 if report.conforms else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"injection-events {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
