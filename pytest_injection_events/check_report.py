"""What a conformance run found: one finding per point checked, and how to print them.

See docs/conformance.md for what each check means.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import InjectionEventsError

PASS = "pass"
FAIL = "fail"
NOT_CHECKED = "not checked"


class CheckError(InjectionEventsError, ConnectionError):
    """The target cannot be checked at all: unreachable, not an injection API, bad token."""


@dataclass
class Finding:
    """One point of the protocol and what the server did; `request` shows how to see it."""

    check: str
    status: str
    detail: str
    request: str | None = None


@dataclass
class Latency:
    """Hit -> event (and hit -> log line) over `hits` hits, in milliseconds."""

    hits: int = 0
    event_ms: list[float] = field(default_factory=list)
    log_ms: list[float] = field(default_factory=list)
    log_path: str | None = None

    @staticmethod
    def percentile(values: list[float], q: float) -> float | None:
        """Nearest rank: the smallest value with at least q of them at or below it."""
        if not values:
            return None
        ordered = sorted(values)
        rank = max(1, -(-len(ordered) * q // 1))  # ceil without math
        return ordered[int(rank) - 1]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hits": self.hits}
        for key, values in (("event", self.event_ms), ("log", self.log_ms)):
            if key == "log" and self.log_path is None:
                continue
            p50, p99 = self.percentile(values, 0.5), self.percentile(values, 0.99)
            out[key] = {
                "count": len(values),
                "p50_ms": None if p50 is None else round(p50, 3),
                "p99_ms": None if p99 is None else round(p99, 3),
            }
        if self.log_path is not None:
            out["log"]["path"] = self.log_path
        return out


@dataclass
class Report:
    """The whole run: what was checked, against what, and with which trigger."""

    url: str
    shards: int | None = None
    trigger: str | None = None
    findings: list[Finding] = field(default_factory=list)
    latency: Latency | None = None

    def add(self, check: str, status: str, detail: str, request: str | None = None) -> Finding:
        finding = Finding(check, status, detail, request)
        self.findings.append(finding)
        return finding

    def passed(self, check: str, detail: str, request: str | None = None) -> Finding:
        return self.add(check, PASS, detail, request)

    def failed(self, check: str, detail: str, request: str | None = None) -> Finding:
        return self.add(check, FAIL, detail, request)

    def not_checked(self, check: str, reason: str, request: str | None = None) -> Finding:
        return self.add(check, NOT_CHECKED, reason, request)

    def verdict(self, check: str, problems: list[str], ok: str, request: str | None) -> None:
        """Pass with `ok`, or fail with the problems found (the first few, each once)."""
        problems = list(dict.fromkeys(problems))
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            self.failed(check, "; ".join(problems[:3]) + more, request)
        else:
            self.passed(check, ok, request)

    def count(self, status: str) -> int:
        return sum(1 for f in self.findings if f.status == status)

    @property
    def conforms(self) -> bool:
        return self.count(FAIL) == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "conforms": self.conforms,
            "shards": self.shards,
            "trigger": self.trigger,
            "summary": {
                "passed": self.count(PASS),
                "failed": self.count(FAIL),
                "not_checked": self.count(NOT_CHECKED),
            },
            "findings": [asdict(f) for f in self.findings],
            "latency": self.latency.summary() if self.latency is not None else None,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        lines = [f"injection-events check {self.url}"]
        lines.append(f"  shards: {self.shards if self.shards is not None else 'unknown'}")
        lines.append(f"  trigger: {self.trigger or 'none'}")
        marks = {PASS: "ok  ", FAIL: "FAIL", NOT_CHECKED: "--  "}
        for finding in self.findings:
            lines.append(f"{marks[finding.status]} {finding.check}: {finding.detail}")
            if finding.request and finding.status != PASS:
                lines.append(f"       seen on: {finding.request}")
        if self.latency is not None and self.latency.hits:
            lines.extend(self._latency_lines())
        verdict = "conforms" if self.conforms else "does NOT conform"
        lines.append(
            f"{verdict}: {self.count(PASS)} passed, {self.count(FAIL)} failed, "
            f"{self.count(NOT_CHECKED)} not checked"
        )
        return "\n".join(lines)

    def _latency_lines(self) -> list[str]:
        assert self.latency is not None
        summary = self.latency.summary()
        lines = [f"latency over {summary['hits']} hits (ms):"]
        for key, label in (("event", "hit -> event   "), ("log", "hit -> log line")):
            if key in summary:
                part = summary[key]
                lines.append(
                    f"  {label}  p50 {_ms(part['p50_ms'])}  p99 {_ms(part['p99_ms'])}"
                    f"  ({part['count']} seen)"
                )
        return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
