"""Benchmarks of SPEC §10, in one run: `python benchmarks/run.py` (about 2 minutes).

Why each part is built the way it is:
- The node runs in a process of its own (`node_server.py`) and this process is
  the test that waits, so no number hides a shared GIL or loop.
- Hits come at random moments after an idle, one way at a time, the ways
  interleaved in shuffled cycles, so drift and other load hit every way alike.
- The floor (`tcp_floor.py`) is the same idle and push with nothing on top.

Writes `docs/benchmarks.md`, `docs/benchmarks-latency.png`, the raw samples in
`docs/benchmarks.json` and the README's figures; exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import report

from pytest_injection_events import InjectionApi, injection_event_stream, stream_source
from pytest_injection_events.events import DEFAULT_CAPACITY, EventLog
from pytest_injection_events.injector import Injector

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOCS = ROOT / "docs"

#: One point per way, so a stream never wakes for another way's hit. `stream` and `poll`
#: hit the node with `/events`; `logsrc` and `log` hit the node without (as ScyllaDB is
#: today), whose log both read: the same kind of line, in the same file.
POINT = {
    "stream": "bench_stream",
    "poll": "bench_poll",
    "logsrc": "bench_logsrc",
    "log": "bench_log",
}
WAYS = (*POINT, "floor")
BURST_POINT = "bench_burst"
#: The idle before a hit: uniform in this range, in seconds.
IDLE = (0.02, 0.15)
WARMUP = 5
#: ScyllaDB's test/pylib wait_for: first period, factor, cap.
POLL_PERIOD, POLL_FACTOR, POLL_CAP = 0.1, 1.5, 1.0
LOG_EOF_SLEEP = 0.01


class NodeProcess:
    """The node's process and its stdin/stdout command channel."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str, log_path: str) -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path

    @classmethod
    async def start(cls, *options: str) -> NodeProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "node_server.py"),
            *options,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        try:
            assert proc.stdout is not None
            info = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        except BaseException:
            await _end(proc)
            raise
        return cls(proc, info["url"], info["log_path"])

    async def ask(self, *words: object) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((" ".join(map(str, words)) + "\n").encode())
        await self.proc.stdin.drain()
        answer: dict[str, Any] = json.loads(await self.proc.stdout.readline())
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"quit\n")
            await self.proc.stdin.drain()
        await _end(self.proc)


async def _end(proc: asyncio.subprocess.Process) -> None:
    """Wait for a child to exit after its stdin closes; kill it if it lingers."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()


class LogTail:
    """ScyllaDB's ScyllaLogFile.wait_for: readline through a thread pool, 10 ms sleep at EOF."""

    def __init__(self, path: str, pool: ThreadPoolExecutor) -> None:
        self.path = path
        self.pool = pool

    async def mark(self) -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, os.path.getsize, self.path)

    async def wait_for(self, pattern: str, from_mark: int, timeout: float = 30) -> None:
        regex = re.compile(pattern)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with open(self.path, encoding="utf-8") as log_file:  # noqa: ASYNC230 (as ScyllaDB does)
            log_file.seek(from_mark)
            line = ""
            while True:
                line += await loop.run_in_executor(self.pool, log_file.readline)
                if line:
                    if regex.search(line):
                        return
                    if line.endswith("\n"):
                        line = ""
                elif loop.time() > deadline:
                    raise TimeoutError(f"no {pattern!r} in {self.path} within {timeout}s")
                else:
                    await asyncio.sleep(LOG_EOF_SLEEP)


async def poll_enters(api: InjectionApi, name: str, seen: int, timeout: float = 30) -> None:
    """ScyllaDB's wait_for over `/enters`: ask at once, then 0.1 s, x1.5, capped at 1 s."""
    period = POLL_PERIOD
    deadline = time.monotonic() + timeout
    while await api.get_enter_count(name) <= seen:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: enters stayed at {seen} for {timeout}s")
        await asyncio.sleep(period)
        period = min(period * POLL_FACTOR, POLL_CAP)


@dataclass
class Latencies:
    """Seconds from the hit (the node's clock) to the return of the waiting call, per way."""

    samples: dict[str, list[float]] = field(default_factory=dict)


async def measure_latency(
    node: NodeProcess,
    log_node: NodeProcess,
    hits: int,
    rng: random.Random,
    ways: tuple[str, ...] = WAYS,
) -> Latencies:
    """Interleave the ways in shuffled cycles; each round is one hit after a random idle.

    `node` serves `/events`; `log_node` does not (ScyllaDB's API only), and both log
    ways read its log: our log source through a stream (`add_node(url, log=path)`),
    and ScyllaDB's 10 ms tail."""
    returned: dict[str, list[float]] = {way: [] for way in ways}
    floor_latency: list[float] = []
    owner = {way: log_node if way in ("logsrc", "log") else node for way in POINT}
    for way in ways:
        if way in POINT:
            await owner[way].ask("enable", POINT[way])
    floor = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "tcp_floor.py"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="log-tail")
    writer: asyncio.StreamWriter | None = None
    try:
        assert floor.stdout is not None
        port = int(await asyncio.wait_for(floor.stdout.readline(), 30))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        log = LogTail(log_node.log_path, pool)
        async with (
            InjectionApi(node.url) as api,
            injection_event_stream(node.url, injections=[POINT["stream"]]) as stream,
            injection_event_stream() as log_stream,
        ):
            # As a cluster test attaches a node it started: by URL, with its log.
            attached = await log_stream.add_node(log_node.url, log=log_node.log_path)
            if not attached.source.startswith("log"):
                raise RuntimeError(f"the log node is read through {attached.source}")

            async def via_stream(idle: float) -> float:
                await node.ask("arm", POINT["stream"], idle)
                await stream.wait_for_injection(POINT["stream"], timeout=10)
                return time.time()

            async def via_logsrc(idle: float) -> float:
                mark = await log_stream.mark(log_node.url)
                await log_node.ask("arm", POINT["logsrc"], idle)
                await log_stream.wait_for_injection(POINT["logsrc"], timeout=10, after=mark)
                return time.time()

            async def via_poll(idle: float) -> float:
                seen = len(returned["poll"])
                await node.ask("arm", POINT["poll"], idle)
                await poll_enters(api, POINT["poll"], seen)
                return time.time()

            async def via_log(idle: float) -> float:
                mark = await log.mark()
                await log_node.ask("arm", POINT["log"], idle)
                await log.wait_for(f"{POINT['log']}: waiting for message", mark)
                return time.time()

            async def via_floor(idle: float) -> float:
                assert writer is not None
                writer.write(f"{idle!r}\n".encode())
                await reader.readline()  # ok
                pushed = float(await reader.readline())
                now = time.time()
                floor_latency.append(now - pushed)
                return now

            every: dict[str, Callable[[float], Awaitable[float]]] = {
                "stream": via_stream,
                "logsrc": via_logsrc,
                "poll": via_poll,
                "log": via_log,
                "floor": via_floor,
            }
            chosen = {way: every[way] for way in ways}
            for _ in range(WARMUP + hits):
                cycle = list(chosen)
                rng.shuffle(cycle)
                for way in cycle:
                    # The way itself reads the clock as its call returns; no task or
                    # timeout wrapper here, which would add loop turns to the figure.
                    returned[way].append(await chosen[way](rng.uniform(*IDLE)))
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        await _end(floor)
        pool.shutdown()
    result = Latencies()
    for way in ways:
        if way == "floor":
            result.samples[way] = floor_latency[WARMUP:]
            continue
        stamps = (await owner[way].ask("hits", POINT[way]))["timestamps"]
        if len(stamps) != len(returned[way]):
            raise RuntimeError(f"{way}: {len(stamps)} hits but {len(returned[way])} returns")
        result.samples[way] = [r - s for r, s in zip(returned[way], stamps, strict=True)][WARMUP:]
    return result


@contextlib.contextmanager
def standard_json(wanted: bool) -> Iterator[str]:
    """The client decodes events with the standard library instead of orjson while in it
    (the optional speedup's own gain, measured in the same run); yields the decoder."""
    chosen = stream_source.fast_loads
    if wanted:
        stream_source.fast_loads = stream_source._scan_whole
    try:
        yield stream_source.json_decoder()
    finally:
        stream_source.fast_loads = chosen


async def measure_throughput(
    node: NodeProcess, clients: int, per_client: int, bursts: int = 3, *, stdlib: bool = False
) -> report.Throughput:
    """Every client parses and matches every event (`wait_for_injection(count=N)`).
    Several bursts on the same streams, so one scheduling hiccup does not make the figure;
    every client must get exactly the seqs of every burst."""
    async with contextlib.AsyncExitStack() as stack:
        decoder = stack.enter_context(standard_json(stdlib))
        streams = [
            await stack.enter_async_context(
                injection_event_stream(node.url, injections=[BURST_POINT], phases=["enter"])
            )
            for _ in range(clients)
        ]

        async def drain(stream: Any) -> float:
            await stream.wait_for_injection(BURST_POINT, count=per_client, timeout=120)
            return time.time()

        expected: list[int] = []
        seconds: list[float] = []
        client_cpu, node_cpu = time.process_time(), process_cpu(node.proc.pid)
        for _ in range(bursts):
            already = len(streams[0].events)
            seqs = await node.ask("burst", BURST_POINT, per_client)
            expected += range(seqs["first"], seqs["last"] + 1)
            ends = await asyncio.gather(*(drain(s) for s in streams))
            seconds.append(max(ends) - streams[0].events[already].timestamp)
        events = bursts * per_client
        client_cpu = (time.process_time() - client_cpu) / (events * clients)
        node_cpu = (process_cpu(node.proc.pid) - node_cpu) / events
        lost = duplicated = 0
        for stream in streams:
            got = [e.seq for e in stream.events]
            lost += len(set(expected) - set(got))
            duplicated += len(got) - len(set(got))
        return report.Throughput(
            clients=clients,
            per_client=per_client,
            seconds=seconds,
            lost=lost,
            duplicated=duplicated,
            gaps=sum(len(s.gaps) for s in streams),
            reconnects=sum(s.reconnects for s in streams),
            client_cpu=client_cpu,
            node_cpu=node_cpu,
            decoder=decoder,
        )


def process_cpu(pid: int) -> float:
    """CPU seconds a process has used so far, from /proc (0.0 where there is none)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _nothing() -> None:
    return None


def measure_call_costs(number: int = 5_000, repeat: int = 30) -> dict[str, float]:
    """Nanoseconds per call of a `lambda` point, timeit-style, in this process.

    The injector is wired as a FakeNode wires it (its event log listens), with a full
    log (each hit also drops the oldest record). The cases take turns, repeat by
    repeat, so drift in the machine's speed hits them alike."""
    timers: dict[str, timeit.Timer] = {}
    for label, enabled in ((report.DISABLED, False), (report.ENABLED, True)):
        injector = Injector()
        event_log = EventLog("bench")
        injector.add_listener(event_log.publish)
        if enabled:
            injector.enable("point")
            for _ in range(event_log.capacity):
                injector.inject("point", _nothing)
        timers[label] = timeit.Timer(
            "inject('point', fn)", globals={"inject": injector.inject, "fn": _nothing}
        )
    timers[report.REFERENCE] = timeit.Timer("'point' in enabled", globals={"enabled": {}})
    best = dict.fromkeys(timers, float("inf"))
    for _ in range(repeat):
        for label, timer in timers.items():
            best[label] = min(best[label], timer.timeit(number) / number * 1e9)
    return best


async def measure_fan_out(hits: int = 3_000) -> dict[str, float]:
    """A hit's cost with 1, 10 and 100 readers waiting for it, and the readers' work after.

    A reader waits as the SSE handler does, in `subscription.next_batch()`. For the
    hit alone, before every hit 100 readers' `next_batch()` are stepped by hand until
    they park: N on the node's log, the others on an unrelated log, so every case
    touches the same memory before its hit and differs only in the readers the hit
    finds waiting; nothing else runs in between. Each hit is timed alone (median, the
    clock's own cost taken off), the cases taking turns. Then, with real reader tasks,
    the loop's work from a hit until every reader has taken the record and waits
    again: the work that does grow with the readers, outside the hit."""
    results: dict[str, float] = {}
    clock = time.perf_counter_ns
    overhead = statistics.median(-clock() + clock() for _ in range(10_000))
    most = max(report.SUBSCRIBERS)
    elsewhere = EventLog("elsewhere")
    cases = []
    for readers in report.SUBSCRIBERS:
        injector = Injector()
        event_log = EventLog("bench")
        event_log.burst_gap = 0.0  # hits come back to back here; time the path of an idle hit
        injector.add_listener(event_log.publish)
        injector.enable("point")
        for _ in range(event_log.capacity):  # full: each hit also drops the oldest
            injector.inject("point", _nothing)
        subscriptions = [event_log.subscribe() for _ in range(readers)]
        others = [elsewhere.subscribe() for _ in range(most - readers)]
        cases.append((readers, injector, event_log, subscriptions, others, []))
    gc.disable()
    try:
        for _ in range(hits):
            for _readers, injector, _log, subscriptions, others, hit_ns in cases:
                parked = []
                for subscription in subscriptions + others:
                    while True:  # take what is new, then wait: the waiter is what it yields
                        waiting = subscription.next_batch()
                        try:
                            waiting.send(None)
                        except StopIteration:
                            continue
                        parked.append(waiting)
                        break
                start = clock()
                injector.inject("point", _nothing)
                hit_ns.append(clock() - start - overhead)
                for waiting in parked:
                    waiting.close()
                await asyncio.sleep(0)  # the wake callback of many readers runs
        for readers, injector, event_log, subscriptions, _others, hit_ns in cases:
            results[report.subscribers_label(readers)] = statistics.median(hit_ns)

            async def read(subscription: Any) -> None:
                while await subscription.next_batch():
                    pass

            tasks = [asyncio.create_task(read(s)) for s in subscriptions]
            after_ns: list[float] = []
            try:
                for _ in range(hits // 10):
                    # Turns of the loop are what is measured here: no event to wait on.
                    # `_waiting`, read only: the readers parked, each caught up, for the
                    # next event.
                    while len(event_log._waiting) < readers:  # noqa: ASYNC110
                        await asyncio.sleep(0)
                    hit = clock()
                    injector.inject("point", _nothing)
                    last = event_log.last_seq
                    while len(event_log._waiting) < readers or any(  # noqa: ASYNC110
                        s.cursor <= last for s in subscriptions
                    ):
                        await asyncio.sleep(0)
                    after_ns.append(clock() - hit)
            finally:
                event_log.close()
                await asyncio.gather(*tasks, return_exceptions=True)
            assert not any(s.overflow for s in subscriptions), "a reader fell behind"
            results[report.readers_work_label(readers)] = statistics.median(after_ns)
    finally:
        gc.enable()
        elsewhere.close()
    return results


def run_suite(suite: report.SuiteRun) -> None:
    """One pytest run of `suite` in a fresh process; junit XML gives the time inside the tests."""
    xml = Path(tempfile.gettempdir()) / f"bench-junit-{os.getpid()}.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    command += [f"--junitxml={xml}", *suite.paths]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    suite.wall.append(time.perf_counter() - start)
    try:
        if done.returncode != 0:
            raise RuntimeError(f"{suite.label}: pytest failed:\n{done.stdout}\n{done.stderr}")
        cases = ET.parse(xml).getroot().iter("testcase")
        suite.test_time.append(sum(float(case.get("time", 0)) for case in cases))
    finally:
        xml.unlink(missing_ok=True)
    tail = done.stdout.strip().splitlines()
    suite.outcome = tail[-1] if tail else f"exit {done.returncode}"


def example_suites(runs: int) -> list[report.SuiteRun]:
    """The same test written with log waits and with the stream (example_tests/), each
    set in its own pytest process; the two alternate, so drift in load touches both."""
    suites = [
        report.SuiteRun("log tailing (old way)", ["example_tests/test_log_wait_old_way.py"]),
        report.SuiteRun("event stream (new way)", ["example_tests/test_log_wait_new_way.py"]),
    ]
    for path in (p for suite in suites for p in suite.paths):
        if not (ROOT / path).exists():
            raise FileNotFoundError(f"{path} is gone: point example_suites() at the new pair")
    for _ in range(runs):
        for suite in suites:
            run_suite(suite)
    return suites


def cpu_times() -> tuple[int, int, int]:
    """Busy, stolen and total jiffies of the whole machine, from /proc/stat (zeros elsewhere)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(x) for x in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0, 0, 0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq, steal, sum(fields)


def cpu_use(before: tuple[int, int, int], after: tuple[int, int, int]) -> str:
    """How busy the machine was in between, this benchmark included, and what the
    hypervisor took: the context a tail figure needs."""
    busy, steal, total = (b - a for a, b in zip(before, after, strict=True))
    if total <= 0:
        return "unknown"
    return (
        f"{100 * busy / total:.0f} % busy (this benchmark included), "
        f"{100 * steal / total:.1f} % stolen by the hypervisor"
    )


def machine() -> dict[str, str]:
    import aiohttp

    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "os": f"{platform.system()} {platform.release()}",
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


async def run_all(args: argparse.Namespace) -> report.Results:
    """Every measurement, in the order that keeps them from disturbing each other."""
    rng = random.Random(args.seed)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, load {info['load']}", flush=True)
    parts = set(args.parts)
    costs = {**measure_call_costs(), **await measure_fan_out()} if "costs" in parts else {}
    if costs:
        print("cost per call (ns):", {k: round(v, 1) for k, v in costs.items()}, flush=True)
    # Every hit `hits` is asked about stays kept, and no more than a node keeps by default.
    capacity = ["--capacity", str(max(DEFAULT_CAPACITY, 4 * len(WAYS) * (WARMUP + args.hits)))]
    node = await NodeProcess.start(*capacity)
    latency = Latencies()
    throughput: list[report.Throughput] = []
    try:
        if "latency" in parts:
            log_node = await NodeProcess.start("--no-events", *capacity)
            try:
                started, cpu = time.perf_counter(), cpu_times()
                latency = await measure_latency(node, log_node, args.hits, rng, args.ways)
                info["cpu_during_latency"] = cpu_use(cpu, cpu_times())
            finally:
                await log_node.stop()
            print(f"latency: {args.hits} hits per way in {time.perf_counter() - started:.0f}s")
            for way, samples in latency.samples.items():
                print(
                    f"  {way:6} p50 {report.pct(samples, 50) * 1e3:8.3f} ms"
                    f"  p99 {report.pct(samples, 99) * 1e3:8.3f} ms",
                    flush=True,
                )
        if "throughput" in parts:
            await node.ask("enable", BURST_POINT)
            throughput = [
                await measure_throughput(node, 1, args.events),
                await measure_throughput(node, 50, args.events_each),
                await measure_throughput(node, 1, args.events, stdlib=True),
            ]
            for t in throughput:
                print(
                    f"throughput: {t.clients} client(s), {t.decoder}: "
                    f"{t.total_rate:,.0f} events/s, "
                    f"lost {t.lost}, duplicated {t.duplicated}, gaps {t.gaps}; CPU per event: "
                    f"client {t.client_cpu * 1e6:.1f} us, node {t.node_cpu * 1e6:.1f} us",
                    flush=True,
                )
    finally:
        await node.stop()
    suites = example_suites(args.suite_runs) if "suites" in parts and args.suite_runs > 0 else []
    for suite in suites:
        print(f"suite {suite.label}: median {statistics.median(suite.wall):.2f}s", flush=True)
    info["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return report.Results(info, latency.samples, throughput, costs, suites, args.hits, IDLE)


PARTS = ("costs", "latency", "throughput", "suites")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hits", type=int, default=200, help="hits per way (default 200)")
    parser.add_argument(
        "--events", type=int, default=20_000, help="events to one client, per burst"
    )
    parser.add_argument(
        "--events-each", type=int, default=1_000, help="events to each of 50, per burst"
    )
    parser.add_argument(
        "--suite-runs", type=int, default=3, help="pytest runs per example set (0: skip)"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the random idles")
    parser.add_argument("--out", type=Path, default=DOCS, help="where to write (default docs/)")
    parser.add_argument(
        "--parts",
        type=lambda text: tuple(text.split(",")),
        default=PARTS,
        help=f"a comma list of {', '.join(PARTS)}: anything less prints and writes nothing",
    )
    parser.add_argument(
        "--ways",
        type=lambda text: tuple(text.split(",")),
        default=WAYS,
        help=f"latency ways, a comma list of {', '.join(WAYS)} (fewer: writes nothing)",
    )
    args = parser.parse_args()
    if not set(args.parts) <= set(PARTS) or not set(args.ways) <= set(WAYS):
        parser.error(f"--parts takes {', '.join(PARTS)}; --ways takes {', '.join(WAYS)}")
    started = time.perf_counter()
    results = asyncio.run(run_all(args))
    results.runtime = time.perf_counter() - started
    if set(args.parts) != set(PARTS) or set(args.ways) != set(WAYS):
        print(f"a partial run ({results.runtime:.0f}s): nothing written")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    readme = ROOT / "README.md" if args.out.resolve() == DOCS else None
    report.write(results, args.out, readme=readme)
    for target in results.targets():
        print(f"{'pass' if target.passed else 'FAIL'}: {target.text}: {target.measured}")
    print(f"wrote {args.out / 'benchmarks.md'} and the plot in {results.runtime:.0f}s")
    return 0 if results.all_pass() else 1


if __name__ == "__main__":
    sys.exit(main())
