"""Hit -> event, side by side with hit -> the server's own log line (docs/conformance.md)."""

from __future__ import annotations

from .check_report import Latency
from .check_run import CheckRun, Trigger, record_failure
from .check_transport import StreamRefused
from .check_triggers import LogTail

#: How long a log line may take to appear after its event before the log is given up on.
LOG_WAIT = 2.0


async def check_latency(run: CheckRun, trigger: Trigger) -> None:
    """`run.hits` hits of `trigger`'s point, each timed from the server's own timestamp
    of the hit to the event's arrival here, and to its log line appearing in `run.log`."""
    report, point = run.report, trigger.point
    latency = run.report.latency = Latency(log_path=run.log)
    try:
        watch = await run.open_stream([("injection", point)])
        await run.enable(point, parameters=trigger.parameters)
    except (ConnectionError, StreamRefused) as exc:
        record_failure(report, "latency.event", exc, prefix="could not set up: ")
        return
    tail = LogTail(run.log, point) if run.log else None
    if tail is not None:
        tail.start()
    missing: str | None = None
    log_missing: str | None = None
    try:
        for i in range(run.hits):
            shard = i % run.shards if trigger.chooses_shard else None
            hit = await run.hit(watch, shard, trigger)
            if hit.event is None or not isinstance(hit.event.data, dict):
                missing = f"no event within {run.timeout:g}s for {hit.request}"
                break
            stamp = hit.event.data.get("timestamp")
            when = float(stamp) if isinstance(stamp, (int, float)) else hit.started
            latency.hits += 1
            latency.event_ms.append((hit.event.at - when) * 1000)
            if tail is not None and log_missing is None:
                seen = await tail.wait_count(latency.hits, min(run.timeout, LOG_WAIT))
                if seen is None:
                    log_missing = (
                        f'no line `{point}: waiting for message` or `Triggering ... "{point}"` '
                        f"appeared in {run.log} within {min(run.timeout, LOG_WAIT):g}s of hit "
                        f"{latency.hits}"
                    )
                else:
                    latency.log_ms.append((seen - when) * 1000)
    finally:
        if tail is not None:
            await tail.close()
        try:
            await run.disable(point)
        except ConnectionError:
            pass
    summary = latency.summary()
    if missing:
        report.failed("latency.event", missing, watch.request)
    else:
        part = summary["event"]
        report.passed(
            "latency.event",
            f"p50 {part['p50_ms']} ms, p99 {part['p99_ms']} ms over {latency.hits} hits of "
            f"{point!r} (the server's timestamp of the hit to the event's arrival here)",
            watch.request,
        )
    if tail is None:
        report.not_checked("latency.log", "no --log PATH given to compare with the server's log")
    elif log_missing and not latency.log_ms:
        report.not_checked("latency.log", log_missing)
    else:
        part, event = summary["log"], summary["event"]
        ratio = (
            f"; the stream is {part['p50_ms'] / event['p50_ms']:.1f}x faster at p50"
            if part["p50_ms"] and event["p50_ms"]
            else ""
        )
        report.passed(
            "latency.log",
            f"hit -> log line p50 {part['p50_ms']} ms, p99 {part['p99_ms']} ms over "
            f"{part['count']} lines{ratio}",
        )
