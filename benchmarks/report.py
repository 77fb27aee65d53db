"""Turns one benchmark run into `docs/benchmarks.md`, the latency plot and the raw data.

Kept apart from the measuring code so the figures a reader sees are computed in
one place: every ratio and pass/fail comes from the samples of the same run. The
raw samples go to `docs/benchmarks.json`, so `python benchmarks/report.py` can
render the page again (after a wording change) without measuring again.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

LABELS = {
    "stream": "SSE stream, `wait_for_injection`",
    "poll": "poll `/enters` (0.1 s first, x1.5, cap 1 s)",
    "log": "tail the log (10 ms sleep at EOF)",
    "floor": "floor: raw asyncio TCP push",
}
PLOT_LABELS = {
    "stream": "SSE stream (wait_for_injection)",
    "poll": "/enters polling (ScyllaDB backoff)",
    "log": "log tailing (10 ms at EOF)",
    "floor": "raw TCP push (floor)",
}
COLORS = {"stream": "tab:green", "poll": "tab:red", "log": "tab:orange", "floor": "tab:gray"}
PLOT_NAME = "benchmarks-latency.png"
DATA_NAME = "benchmarks.json"
MIN_ONE_CLIENT_RATE = 20_000
BOOTSTRAP = 2_000


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q))


def ratio_interval(
    top: list[float], top_q: float, bottom: list[float], bottom_q: float
) -> tuple[float, float]:
    """95 % bootstrap interval of pct(top, top_q) / pct(bottom, bottom_q): how much of a
    ratio is the luck of 200 draws (a p99 is the second or third worst of them)."""
    rng = np.random.default_rng(5)
    tops = np.percentile(rng.choice(top, (BOOTSTRAP, len(top))), top_q, axis=1)
    bottoms = np.percentile(rng.choice(bottom, (BOOTSTRAP, len(bottom))), bottom_q, axis=1)
    low, high = np.percentile(tops / bottoms, [2.5, 97.5])
    return float(low), float(high)


@dataclass
class Throughput:
    """Events per second to `clients` stream clients at once, and what they lost."""

    clients: int
    per_client: int
    seconds: list[float]  # per burst: first hit (node clock) to the last client's return
    lost: int
    duplicated: int
    gaps: int
    reconnects: int

    @property
    def slowest_client_rate(self) -> float:
        return self.per_client / statistics.median(self.seconds)

    @property
    def total_rate(self) -> float:
        return self.clients * self.slowest_client_rate


@dataclass
class SuiteRun:
    """Wall times of pytest runs of one set of tests, each in a fresh process."""

    label: str
    paths: list[str]
    wall: list[float] = field(default_factory=list)
    test_time: list[float] = field(default_factory=list)
    outcome: str = ""


@dataclass
class Target:
    """One target of issue #5, as a ratio of two figures of the same run."""

    text: str
    measured: str
    passed: bool


@dataclass
class Results:
    """Everything one run measured."""

    machine: dict[str, str]
    latency: dict[str, list[float]]
    throughput: list[Throughput]
    costs: dict[str, float]
    suites: list[SuiteRun]
    hits: int
    idle: tuple[float, float]
    runtime: float = 0.0

    def targets(self) -> list[Target]:
        lat = self.latency

        def ratio(
            text: str, goal: float, top: str, top_q: float, bottom: str, bottom_q: float
        ) -> Target:
            value = pct(lat[top], top_q) / pct(lat[bottom], bottom_q)
            low, high = ratio_interval(lat[top], top_q, lat[bottom], bottom_q)
            # "within Nx of" (the stream on top) must stay under N; "Nx lower" must reach N.
            passed = value <= goal if top == "stream" else value >= goal
            return Target(text, f"{value:.1f}x (95 % CI {low:.1f}-{high:.1f}x)", passed)

        one = next(t for t in self.throughput if t.clients == 1)
        return [
            ratio("stream p99 at least 20x lower than polling p50", 20, "poll", 50, "stream", 99),
            ratio("stream p99 at least 5x lower than log tailing p50", 5, "log", 50, "stream", 99),
            ratio("stream p50 within 10x of the raw TCP floor p50", 10, "stream", 50, "floor", 50),
            Target(
                f"one client at least {MIN_ONE_CLIENT_RATE:,} events/s",
                f"{one.total_rate:,.0f} events/s",
                one.total_rate >= MIN_ONE_CLIENT_RATE,
            ),
            *(
                Target(
                    f"{t.clients} clients lose nothing",
                    f"{t.lost} lost, {t.duplicated} duplicated, {t.gaps} gaps",
                    t.lost == 0 and t.duplicated == 0 and t.gaps == 0,
                )
                for t in self.throughput
                if t.clients > 1
            ),
        ]

    def all_pass(self) -> bool:
        return all(t.passed for t in self.targets())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Results:
        data = dict(data)
        data["throughput"] = [Throughput(**t) for t in data["throughput"]]
        data["suites"] = [SuiteRun(**s) for s in data["suites"]]
        data["idle"] = tuple(data["idle"])
        return cls(**data)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds < 0.01 else f"{seconds * 1e3:.1f} ms"


def latency_table(results: Results) -> list[str]:
    lines = [
        "| way a test learns of a hit | p50 | p90 | p99 | mean | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for way, label in LABELS.items():
        samples = results.latency[way]
        lines.append(
            f"| {label} | {_ms(pct(samples, 50))} | {_ms(pct(samples, 90))} "
            f"| {_ms(pct(samples, 99))} "
            f"| {_ms(statistics.fmean(samples))} | {_ms(max(samples))} |"
        )
    return lines


def targets_table(results: Results) -> list[str]:
    lines = ["| target | measured | result |", "|---|---:|---|"]
    for target in results.targets():
        verdict = "pass" if target.passed else "**FAIL**"
        lines.append(f"| {target.text} | {target.measured} | {verdict} |")
    return lines


def markdown(results: Results) -> str:
    m = results.machine
    n = len(results.latency["stream"])
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python benchmarks/run.py` on {m['date']} in {results.runtime:.0f} s.",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}; Python {m['python']}, "
        f"aiohttp {m['aiohttp']}. "
        f"Load average (1, 5, 15 min) at start: {m['load']}; at the end: {m['load_end']}. "
        f"CPU during the latency runs: {m.get('cpu_during_latency', 'unknown')}.",
        "",
        "## From the hit to the return of the waiting call",
        "",
        f"{n} hits per way at random moments (after {results.idle[0] * 1e3:.0f} to "
        f"{results.idle[1] * 1e3:.0f} ms "
        "of idle), the four ways interleaved in shuffled cycles. The fake node runs in a "
        "process of its own; the hit's time is the node's `time.time()` at the hit (the "
        "event's `timestamp`), the end is `time.time()` in the waiting process when the "
        "call returns. Each way has its own breakpoint, so no waiter wakes for another's hit.",
        "",
        *latency_table(results),
        "",
        "- stream: `await stream.wait_for_injection(name)` on a stream opened once.",
        "- polling: ScyllaDB's `wait_for` loop over `GET .../enters`: at once, then "
        "after 0.1 s, 0.15 s, ... capped at 1 s.",
        "- log: ScyllaDB's `ScyllaLogFile.wait_for` from a mark: `readline` through a "
        "thread pool, 10 ms sleep at end of file, for `NAME: waiting for message`.",
        "- floor: another process pushes `time.time()` over a raw asyncio TCP "
        "connection on 127.0.0.1 after the same idle: no HTTP, SSE or JSON.",
        "",
        f"![latency distributions]({PLOT_NAME})",
        "",
        "## Targets (ratios from this run)",
        "",
        "The interval is a 95 % bootstrap over this run's hits: how far the luck of the draw "
        "moves a ratio (a p99 rests on the two or three worst hits).",
        "",
        *targets_table(results),
        "",
        "## Events per second",
        "",
        "Our stream client (`injection_event_stream`), each client parsing every event and "
        "matching it in `wait_for_injection(name, count=N)`; all clients in one process. "
        "The node hits a `lambda` point as fast as the slowest reader takes the events. "
        "A burst's time runs from its first hit (node clock) to the return of the last "
        "client's wait; three bursts on the same streams, the median shown, the range in "
        "parentheses. Loss: every client must get exactly the seqs of every burst, without "
        "hole or duplicate.",
        "",
        "| clients | events per client per burst | events/s to each client | events/s in all "
        "| lost | duplicated | gaps | reconnects |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in results.throughput:
        rates = sorted(t.clients * t.per_client / s for s in t.seconds)
        lines.append(
            f"| {t.clients} | {t.per_client:,} | {t.slowest_client_rate:,.0f} "
            f"| {t.total_rate:,.0f} ({rates[0]:,.0f} to {rates[-1]:,.0f}) "
            f"| {t.lost} | {t.duplicated} | {t.gaps} | {t.reconnects} |"
        )
    lines += [
        "",
        "## Cost of a point per call",
        "",
        "`injector.inject(name, fn)` in one process, timeit-style (best of 30 x 5,000 calls, "
        "the cases taking turns), wired as a FakeNode wires it: its event log listens and "
        "is full, so each hit also drops the oldest record. Subscribers are event-log "
        "subscriptions, what an SSE client holds.",
        "",
        "| point | ns per call |",
        "|---|---:|",
        *(f"| {label} | {ns:,.0f} |" for label, ns in results.costs.items()),
        "",
        "## Example tests: log waits against the stream",
        "",
        "The same test written both ways, each set run by pytest in a fresh process, the "
        f"two sets taking turns (median of {max((len(x.wall) for x in results.suites), default=0)} "
        "runs); most of the wall time is pytest and import start-up.",
        "",
        "| set | files | wall time (median) | time inside the tests (median) | result |",
        "|---|---|---:|---:|---|",
    ]
    if not results.suites:
        lines.append("| (not run: `--suite-runs 0`) | | | | |")
    for suite in results.suites:
        files = ", ".join(f"`{p}`" for p in suite.paths)
        lines.append(
            f"| {suite.label} | {files} | {statistics.median(suite.wall):.2f} s "
            f"| {statistics.median(suite.test_time) * 1e3:.0f} ms | {suite.outcome} |"
        )
    lines += [
        "",
        "## Notes",
        "",
        "- The p99s are the second and third worst of 200 hits: on a two-core machine any "
        "other busy process moves them first (a woken process can wait a scheduler tick, "
        "4 ms). Check the load average above before reading a tail. The stream's p99 "
        "against the log's p50 is the target at the edge, as its interval shows: in ten "
        "full runs on 2026-11-29 (load under 1) it ranged from 1.0x (a run where the "
        "floor's own p99 was 2.6 ms) to 7.2x, 4.4x at the median, and met 5x three times. "
        "The outliers behind it (2-3 % of hits at 1-2 ms) fall on every step alike: node, "
        "kernel, client.",
        "- Tuning found with these benchmarks (2026-11-29): Linux runs a socket reader "
        "woken by the node's write on the node's CPU, where it waited for the node's log "
        "line and loop turn (0.2-0.3 ms); the SSE writer now yields the CPU after pushing "
        "a few events (stream p50 0.88 -> 0.62 ms, p99 1.6-2.0 -> 0.85-1.45 ms; in-process "
        "node 0.85 -> 0.53 ms). The event timestamp no longer goes through `round(t, 6)` "
        "(an enabled hit 2.3 -> 1.6 us).",
        "- What is left between the stream and the floor is mostly the client's own work "
        "per event on cold caches after the idle: `json.loads` about 28 us, "
        "`InjectionEvent.from_dict` 20 us, delivery to the wait 25 us, then the loop turn "
        "that wakes the waiting task (three turns through `wait_for(shield(...))` before "
        "2026-11-29, one since); a bare asyncio reader of the same stream returns in "
        "0.39 ms at p50.",
        "",
        "Regenerate with `python benchmarks/run.py` (about two minutes on two cores; "
        "`--help` for the knobs).",
        "",
    ]
    return "\n".join(lines)


def plot(results: Results, path: Path) -> None:
    """Empirical CDFs on a log time axis: where each way's hits land, and the spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.6), dpi=110)
    for way in ("floor", "stream", "log", "poll"):
        samples = np.sort(np.array(results.latency[way]) * 1e3)
        fraction = np.arange(1, len(samples) + 1) / len(samples)
        p50, p99 = pct(results.latency[way], 50) * 1e3, pct(results.latency[way], 99) * 1e3
        label = f"{PLOT_LABELS[way]}: p50 {p50:.3g} ms, p99 {p99:.3g} ms"
        ax.step(samples, fraction, where="post", color=COLORS[way], label=label, linewidth=1.8)
    ax.set_xscale("log")
    ax.set_xlabel("hit -> waiting call returns (ms, log scale)")
    ax.set_ylabel("fraction of hits")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    n = len(results.latency["stream"])
    ax.set_title(
        f"Latency of learning of an injection hit ({n} hits per way, node in its own process)"
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8.5)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(results: Results, out: Path, *, data: bool = True) -> None:
    if data:
        (out / DATA_NAME).write_text(json.dumps(asdict(results)) + "\n", encoding="utf-8")
    (out / "benchmarks.md").write_text(markdown(results), encoding="utf-8")
    plot(results, out / PLOT_NAME)


def main() -> None:
    """Render the page and plot again from a run's saved data (default docs/)."""
    out = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "docs"
    )
    results = Results.from_json(json.loads((out / DATA_NAME).read_text(encoding="utf-8")))
    write(results, out, data=False)
    print(f"rendered {out / 'benchmarks.md'} and {out / PLOT_NAME} from {out / DATA_NAME}")


if __name__ == "__main__":
    main()
