"""Small things several test files need: §4's keys, stated independently of the product."""

from __future__ import annotations

import socket

#: The keys of every event (SPEC §4).
EVENT_KEYS = frozenset(
    {
        "injection",
        "type",
        "phase",
        "shard",
        "node",
        "seq",
        "timestamp",
        "enter_count",
        "one_shot",
        "parameters",
    }
)
#: A `gap` event carries these too.
GAP_KEYS = EVENT_KEYS | {"missed_from", "missed_to", "reason"}


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
