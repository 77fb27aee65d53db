"""The events of the stream as a client sees them (docs/http-api.md): the phases, the
reasons of a gap and `InjectionEvent`.

Readers (the client side) need this and nothing of the node's log; `events` re-exports
it with the log that numbers and keeps the events (docs/design.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ENTER = "enter"
WAIT = "wait"
RESUME = "resume"
TIMEOUT = "timeout"
ENABLE = "enable"
DISABLE = "disable"
MESSAGE = "message"
GAP = "gap"
PHASES = frozenset({ENTER, WAIT, RESUME, TIMEOUT, ENABLE, DISABLE, MESSAGE, GAP})
#: Control events: they apply to every shard (`shard: null`).
CONTROL_PHASES = frozenset({ENABLE, DISABLE, MESSAGE})
#: `?phase=all`: every phase.
ALL_PHASES = "all"
#: What a reader that names no phase gets, as the original proposal sent: one `enter`
#: event per hit (and `gap` notices, which every reader gets whatever it asked).
DEFAULT_PHASES = frozenset({ENTER})

#: A gap because the node no longer keeps the range (replay asked for too old a seq).
GAP_DROPPED = "dropped"
#: A gap because this client read too slowly and was cut off; the range is still kept.
GAP_SLOW_CLIENT = "slow_client"


@dataclass(frozen=True)
class InjectionEvent:
    """One event of the stream, as a client sees it (docs/http-api.md)."""

    injection: str | None
    type: str | None
    phase: str
    shard: int | None
    node: str
    seq: int | None
    timestamp: float
    enter_count: int | None = None
    one_shot: bool | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    missed_from: int | None = None
    missed_to: int | None = None
    reason: str | None = None
    #: The injection's parameters were too large to send in events: ask the REST API.
    parameters_truncated: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, node: str | None = None) -> InjectionEvent:
        """Build from a decoded `data:` object; unknown keys are ignored (forward compatible)."""
        try:
            return cls(
                injection=data.get("injection"),
                type=data.get("type"),
                phase=data["phase"],
                shard=data.get("shard"),
                node=data.get("node") or node or "",
                seq=data.get("seq"),
                timestamp=float(data.get("timestamp") or 0.0),
                enter_count=data.get("enter_count"),
                one_shot=data.get("one_shot"),
                parameters=dict(data.get("parameters") or {}),
                missed_from=data.get("missed_from"),
                missed_to=data.get("missed_to"),
                reason=data.get("reason"),
                parameters_truncated=bool(data.get("parameters_truncated")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an injection event: {data!r}") from exc

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "injection": self.injection,
            "type": self.type,
            "phase": self.phase,
            "shard": self.shard,
            "node": self.node,
            "seq": self.seq,
            "timestamp": self.timestamp,
            "enter_count": self.enter_count,
            "one_shot": self.one_shot,
            "parameters": None if self.parameters_truncated else dict(self.parameters),
        }
        if self.parameters_truncated:
            data["parameters_truncated"] = True
        if self.phase == GAP:
            data.update(missed_from=self.missed_from, missed_to=self.missed_to, reason=self.reason)
        return data
