"""`injection-events check URL`: a conformance run of the protocol against any server.

It drives a running server through the REST API and the event stream and
reports, point by point, what conforms and what does not, each finding with the
request that showed it. docs/conformance.md describes every check.
"""

from __future__ import annotations

import asyncio
import os

import aiohttp

from .check_latency import check_latency
from .check_lifecycle import check_lifecycle
from .check_report import CheckError, Finding, Latency, Report
from .check_rest import check_one_shot, check_rest
from .check_run import CheckRun, Trigger
from .check_stream import check_stream
from .check_transport import Http, ServerStopped
from .check_triggers import CommandTrigger, TriggerFailed, WorkloadTrigger
from .node import KV_WRITE_BEFORE_APPLY, KV_WRITE_DELAY
from .protocol import base_url

__all__ = ["CheckError", "Finding", "Latency", "Report", "run_check"]

DEFAULT_TIMEOUT = 5.0
DEFAULT_HITS = 30
DEFAULT_CLIENTS = 20
DEFAULT_GAP_BUDGET = 1000
#: The whole run's bound, whatever the server does: this many step timeouts, at least.
BUDGET_TIMEOUTS = 40
MIN_BUDGET = 120.0


async def run_check(
    url: str,
    *,
    token: str | None = None,
    log: str | None = None,
    point: str | None = None,
    trigger: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    hits: int = DEFAULT_HITS,
    clients: int = DEFAULT_CLIENTS,
    gap_budget: int = DEFAULT_GAP_BUDGET,
) -> Report:
    """Check the server at `url`; the report says what conforms. `CheckError` when the
    server cannot be checked at all (unreachable, not an injection API, refused token,
    a trigger that does not work)."""
    if (point is None) != (trigger is None):
        raise ValueError(
            "--point and --trigger go together: the trigger makes the server pass the point"
        )
    _check_log(log)
    try:
        target = base_url(url)
    except ValueError as exc:
        raise CheckError(str(exc)) from None
    report = Report(target)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        http = Http(session, target, token, timeout)
        await _probe(http)
        chosen = await _choose_trigger(http, point, trigger, timeout)
        report.trigger = chosen.describe() if chosen is not None else None
        run = CheckRun(
            http,
            report,
            trigger=chosen,
            timeout=timeout,
            hits=hits,
            clients=clients,
            gap_budget=gap_budget,
            log=log,
        )
        budget = max(MIN_BUDGET, BUDGET_TIMEOUTS * timeout)
        try:
            await asyncio.wait_for(_stages(run, chosen), budget)
        except ServerStopped as exc:
            report.failed("server", f"stopped answering: {exc}", exc.request)
        except asyncio.TimeoutError:
            report.failed("server", f"the check did not end within {budget:g}s")
        finally:
            await run.clean_up()
    return report


def _check_log(log: str | None) -> None:
    if log is not None and not os.path.isfile(log):
        raise CheckError(f"no such log file: {log}")


async def _stages(run: CheckRun, trigger: Trigger | None) -> None:
    await check_rest(run)
    if trigger is None:
        await check_stream(run)
        run.report.not_checked(
            "hits",
            "no way to make the server hit a point: give --point NAME --trigger CMD "
            "(enter events, one-shot, shards, lifecycle and latency need hits)",
        )
        return
    try:
        if not await check_stream(run):
            run.report.not_checked(
                "hits",
                "one-shot, lifecycle and latency need a stream that shows the hits "
                "(see the failures above)",
            )
            return
        await run.close_readers()
        await check_one_shot(run)
        await run.close_readers()
        await check_lifecycle(run)
        await run.close_readers()
        if isinstance(trigger, WorkloadTrigger):
            # The breakpoint, not the sleep: it is the point that logs a line to compare with.
            trigger = WorkloadTrigger(run.http, KV_WRITE_BEFORE_APPLY)
        await check_latency(run, trigger)
    except TriggerFailed as exc:
        run.report.failed("trigger", f"stopped: {exc}")


async def _probe(http: Http) -> None:
    """Is there an injection API at all? A clear CheckError if not."""
    path = http.path("injection")
    try:
        answer = await http.request("GET", path)
    except ConnectionError as exc:
        raise CheckError(f"cannot reach {http.url}: {exc}") from None
    if answer.status in (401, 403):
        hint = "give the right --token" if http.token is None else "the --token was refused"
        raise CheckError(f"{http.url} refused the check ({answer.shown()}): {hint}")
    if answer.status != 200 or not isinstance(answer.json, list):
        raise CheckError(
            f"{http.url} is not an injection API: {answer.shown()} "
            "(expected 200 with a JSON array of enabled injections)"
        )


async def _choose_trigger(
    http: Http, point: str | None, command: str | None, timeout: float
) -> Trigger | None:
    """The user's command, else our fake node's workload when `/points` lists its points."""
    if point is not None and command is not None:
        return CommandTrigger(point, command, timeout)
    try:
        answer = await http.request("GET", http.path("points"))
    except ConnectionError:
        return None
    names = (
        {p.get("name") for p in answer.json if isinstance(p, dict)}
        if answer.status == 200 and isinstance(answer.json, list)
        else set()
    )
    if {KV_WRITE_DELAY, KV_WRITE_BEFORE_APPLY} <= names:
        return WorkloadTrigger(http, KV_WRITE_DELAY, {"ms": "0"})
    return None
