"""REST answers ScyllaDB's client relies on: 200 with JSON, per-shard state, counters.

Runs on names no code path hits, so it needs no trigger (docs/conformance.md).
"""

from __future__ import annotations

from collections.abc import Awaitable

from .check_events import is_int
from .check_run import CheckRun, Hit, record_failure
from .check_transport import Answer, StreamRefused
from .check_triggers import TriggerFailed


def json_200(answer: Answer) -> list[str]:
    """Problems of an answer that should be a success: 200 and a JSON body."""
    if answer.status != 200:
        return [
            f"answered {answer.status}, expected 200 "
            "(ScyllaDB's client takes any other as an error)"
        ]
    if not answer.is_json:
        return [f"answered 200 with a body that is not JSON: {answer.text[:60]!r}"]
    return []


def shard_states(answer: Answer, enabled: bool, parameters: dict[str, str]) -> list[str]:
    """Problems of `GET .../injection/{name}`: one `{"enabled", "parameters"}` per shard."""
    problems = json_200(answer)
    if problems:
        return problems
    states = answer.json
    if not isinstance(states, list) or not states:
        return [f"expected a non-empty array, one object per shard, got {answer.text[:80]!r}"]
    for shard, state in enumerate(states):
        if not isinstance(state, dict) or not {"enabled", "parameters"} <= set(state):
            problems.append(f"shard {shard}: expected {{'enabled', 'parameters'}}, got {state!r}")
            continue
        if state["enabled"] is not enabled:
            problems.append(f"shard {shard}: enabled is {state['enabled']!r}, expected {enabled}")
        pairs = state["parameters"]
        if not isinstance(pairs, list) or not all(
            isinstance(p, dict) and set(p) == {"key", "value"} for p in pairs
        ):
            problems.append(
                f"shard {shard}: parameters must be [{{'key', 'value'}}], got {pairs!r}"
            )
        elif enabled and {p["key"]: p["value"] for p in pairs} != parameters:
            problems.append(
                f"shard {shard}: parameters {pairs!r} do not match those enabled {parameters!r}"
            )
    return problems


async def check_rest(run: CheckRun) -> None:
    """Each REST call on scratch names; sets `run.shards` from the per-shard array."""
    report = run.report
    name, other = run.scratch, run.scratch + "_2"
    parameters = {"check": "1", "words": "two words / and a slash"}

    async def step(check: str, coro: Awaitable[Answer]) -> Answer | None:
        try:
            return await coro
        except ConnectionError as exc:
            record_failure(report, check, exc)
            return None

    answer = await step("rest.enable", run.enable(name, parameters=parameters))
    if answer is not None:
        report.verdict("rest.enable", json_200(answer), "200 with a JSON body", answer.shown())

    answer = await step("rest.get_injection", run.request("GET", run.path("injection", name)))
    if answer is not None:
        problems = shard_states(answer, True, parameters)
        if answer.status == 200 and isinstance(answer.json, list) and answer.json:
            run.shards = report.shards = len(answer.json)
        shape = [p for p in problems if "do not match" not in p]
        report.verdict(
            "rest.get_injection",
            shape,
            f"one {{'enabled', 'parameters': [{{'key', 'value'}}]}} per shard ({run.shards})",
            answer.shown(),
        )
        if not shape:
            report.verdict(
                "rest.parameters",
                [p for p in problems if "do not match" in p],
                "parameters round trip on every shard",
                answer.shown(),
            )

    answer = await step("rest.enabled_list", run.request("GET", run.path("injection")))
    if answer is not None:
        problems = json_200(answer)
        if not problems and (not isinstance(answer.json, list) or name not in answer.json):
            problems.append(f"expected an array of names holding {name!r}")
        report.verdict("rest.enabled_list", problems, "an array of enabled names", answer.shown())

    answer = await step("rest.enters", run.request("GET", run.path("injection", name, "enters")))
    if answer is not None:
        problems = json_200(answer)
        if not problems and not is_int(answer.json):
            problems.append(f"expected a bare integer, got {answer.text[:60]!r}")
        elif not problems and answer.json != 0:
            problems.append(f"an injection nothing hit counts {answer.json} enters, expected 0")
        report.verdict("rest.enters", problems, "a bare integer", answer.shown())

    answer = await step("rest.message", run.request("POST", run.path("injection", name, "message")))
    if answer is not None:
        report.verdict("rest.message", json_200(answer), "200 with a JSON body", answer.shown())

    # ScyllaDB's client sends `one_shot=True` and may send no body at all.
    run.touched.add(other)
    answer = await step(
        "rest.enable_no_body",
        run.request("POST", run.path("injection", other), params=[("one_shot", "True")]),
    )
    if answer is not None:
        problems = json_200(answer)
        if not problems:
            state = await step(
                "rest.enable_no_body", run.request("GET", run.path("injection", other))
            )
            if state is not None:
                problems = shard_states(state, True, {})
        report.verdict(
            "rest.enable_no_body",
            problems,
            "one_shot=True with no body enables with no parameters",
            answer.shown(),
        )

    answer = await step("rest.disable", run.disable(name))
    if answer is not None:
        problems = json_200(answer)
        shown = answer.shown()
        if not problems:
            state = await step("rest.disable", run.request("GET", run.path("injection", name)))
            if state is not None:
                problems = shard_states(state, False, {})
                if problems:
                    shown = state.shown()
        report.verdict("rest.disable", problems, "disabled on every shard", shown)

    await step("rest.disable_all", run.enable(name))
    answer = await step("rest.disable_all", run.request("DELETE", run.path("injection")))
    if answer is not None:
        problems = json_200(answer)
        shown = answer.shown()
        if not problems:
            listed = await step("rest.disable_all", run.request("GET", run.path("injection")))
            if listed is not None:
                left = [
                    n for n in (name, other) if isinstance(listed.json, list) and n in listed.json
                ]
                if not isinstance(listed.json, list) or left:
                    problems.append(f"still enabled after disable-all: {listed.text[:80]!r}")
                    shown = listed.shown()
        report.verdict("rest.disable_all", problems, "disables every injection", shown)


async def check_one_shot(run: CheckRun) -> None:
    """A one-shot fires once per shard, then is disabled there; a re-enable resets it.

    A second pass on each shard must not fire: the next event the point sends is the
    one after a plain re-enable (its sentinel), with nothing in between."""
    assert run.trigger is not None
    report, point = run.report, run.trigger.point
    try:
        watch = await run.open_stream([("injection", point)])
    except (ConnectionError, StreamRefused) as exc:
        record_failure(report, "rest.one_shot", exc, prefix="no stream to watch it on: ")
        return
    check = "rest.one_shot"
    try:
        await run.enable_point(one_shot=True)
        aimed = run.trigger.chooses_shard
        shards = range(run.shards) if aimed else [None]
        fired: list[Hit] = []
        for shard in shards:
            fired.append(await run.hit(watch, shard))
            if aimed or run.shards == 1:
                await run.run_trigger(shard)  # must not fire again
        state = await run.request("GET", run.path("injection", point))
        listed = await run.request("GET", run.path("injection"))
        enters = await run.request("GET", run.path("injection", point, "enters"))
        await run.enable_point()
        sentinel = await run.hit(watch, 0 if aimed else None)
    except (ConnectionError, TriggerFailed) as exc:
        record_failure(report, check, exc)
        return
    problems = [f"no event for {h.request}" for h in fired if h.event is None]
    first = [h.event.data.get("shard") for h in fired if h.event is not None]
    if aimed or run.shards == 1:
        problems += shard_states(state, False, {})
        if isinstance(listed.json, list) and point in listed.json:
            problems.append(f"still listed as enabled: {listed.text[:80]!r}")
        if enters.json != len(fired):
            problems.append(f"/enters counts {enters.json!r} after {len(fired)} firing(s)")
        events = watch.events(point, "enter")
        before = events.index(sentinel.event) if sentinel.event in events else len(events)
        extra = before - len(first)
        if extra > 0:
            problems.append(f"{extra} more enter event(s) after it fired once on each shard")
    elif first and isinstance(state.json, list) and len(state.json) > (first[0] or 0):
        shard = first[0] or 0
        if state.json[shard].get("enabled") is not False:
            problems.append(f"shard {shard} fired but is still enabled: {state.text[:80]!r}")
    if sentinel.event is None:
        problems.append(f"no event after a plain re-enable ({sentinel.request})")
    elif isinstance(sentinel.event.data, dict) and sentinel.event.data.get("one_shot") is not False:
        problems.append(
            "the event after a plain re-enable says one_shot "
            f"{sentinel.event.data.get('one_shot')!r}"
        )
    how = "on each shard" if aimed or run.shards == 1 else "on the shard it fired on"
    report.verdict(check, problems, f"fired once {how}, then disabled there", state.shown())
