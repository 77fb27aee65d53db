"""What each event of a stream must look like: framing, numbering, keys and types.

The check states the protocol here itself, not from the server's code
(docs/conformance.md).
"""

from __future__ import annotations

from typing import Any

from .check_transport import Received, StreamReader

#: The keys of an event and their types, as the check states the protocol (not the server's).
ENTER_KEYS: dict[str, Any] = {
    "injection": str,
    "type": str,
    "phase": str,
    "shard": int,
    "node": str,
    "seq": int,
    "timestamp": (int, float),
    "enter_count": int,
    "one_shot": bool,
    "parameters": dict,
}
DEFAULT_PHASES = frozenset({"enter", "gap"})
CONTROL_PHASES = frozenset({"enable", "disable", "message"})


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def seq_of(received: Received) -> int | None:
    """The event's number: its `id:` if numeric, else its `seq` key."""
    ident = received.message.id
    if ident is not None and ident.isdigit():
        return int(ident)
    return received.seq if is_int(received.seq) else None


def framing_problems(reader: StreamReader) -> list[str]:
    """`id: <seq>`, one `data:` line of a JSON object, no `event:` field."""
    problems = []
    for received in reader.messages:
        message, data = received.message, received.data
        shown = message.data[:60]
        if message.event != "message":
            problems.append(f"an `event: {message.event}` field (EventSource.onmessage misses it)")
        if "\n" in message.data:
            problems.append(f"data over several `data:` lines: {shown!r}")
        if not isinstance(data, dict):
            problems.append(f"data is not a JSON object: {shown!r}")
            continue
        if message.id is None:
            problems.append(f"an event without an `id:` line: {shown!r}")
        elif data.get("phase") != "gap" and message.id != str(data.get("seq")):
            problems.append(f"`id: {message.id}` but seq {data.get('seq')!r}")
    return problems


def seq_problems(reader: StreamReader, *, contiguous: bool, first: int | None = None) -> list[str]:
    """Seqs strictly increasing; with `contiguous`, no holes (an unfiltered stream)."""
    problems = []
    previous = None if first is None else first - 1
    for received in reader.messages:
        if received.phase == "gap":
            missed_to = received.data.get("missed_to")
            previous = missed_to if is_int(missed_to) else previous
            continue
        seq = seq_of(received)
        if seq is None:
            continue  # framing_problems says so
        if previous is not None and seq <= previous:
            problems.append(f"seq {seq} after {previous}: not strictly increasing")
        elif previous is not None and contiguous and seq != previous + 1:
            problems.append(f"seq jumps from {previous} to {seq}: {seq - previous - 1} missing")
        previous = seq
    return problems


def event_problems(received: Received) -> list[str]:
    """The event's keys and types: every key on an enter event; shard null on a control event."""
    data = received.data
    if not isinstance(data, dict):
        return []  # framing_problems says so
    phase = data.get("phase")
    if phase == "gap":
        return [
            f"gap without integer {key}: {data!r}"[:160]
            for key in ("missed_from", "missed_to")
            if not is_int(data.get(key))
        ]
    problems = []
    for key, kind in ENTER_KEYS.items():
        value = data.get(key)
        if phase in CONTROL_PHASES and key in ("type", "shard", "enter_count"):
            if key == "shard" and value is not None:
                problems.append(f"control event {phase!r} with shard {value!r}, not null")
            continue
        if key == "parameters" and value is None and data.get("parameters_truncated") is True:
            continue
        if key not in data:
            problems.append(f"{phase} event without key {key!r} (seq {data.get('seq')!r})")
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            problems.append(f"{phase} event: {key} is {value!r}, not {_type_name(kind)}")
    return problems


def default_problems(reader: StreamReader) -> list[str]:
    """The proposal's stream: only `enter` (and `gap`), `injection`/`type` str, `shard` int."""
    problems = []
    for received in reader.messages:
        data = received.data
        if not isinstance(data, dict):
            continue
        phase = data.get("phase")
        if phase not in DEFAULT_PHASES:
            problems.append(f"a {phase!r} event (id {received.message.id}) in the default stream")
            continue
        if phase == "enter":
            for key, kind in (("injection", str), ("type", str), ("shard", int)):
                value = data.get(key)
                if not isinstance(value, kind) or isinstance(value, bool):
                    problems.append(
                        f"enter event with {key} {value!r}: the proposal's is a {kind.__name__}"
                    )
    return problems


def _type_name(kind: Any) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__
