"""The `injection-events` command: serve fake nodes, watch a stream, migrate tests."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence

from .node import FakeCluster
from .server import DEFAULT_PORT, TOKEN_ENV


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
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
    serve.set_defaults(run=run_serve)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    cluster = FakeCluster(
        args.nodes,
        args.shards,
        host=args.host,
        token=args.token or None,
        allow_remote=args.allow_remote,
    )
    for index, node in enumerate(cluster):
        node.port = args.port + index if args.port else 0
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with cluster:
            for node in cluster:
                print(f"node {node.node_id} listening on {node.url}", flush=True)
            stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (ValueError, OSError) as exc:
        print(f"injection-events {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
