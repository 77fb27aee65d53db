"""What the codemod says: its error for bad input, and why it leaves a log wait as it is.

The reasons are stable texts: users grep the report (`file:line: reason`) for
them, and docs/migration.md shows the rule behind each with a before/after
pair. The names the converted code uses live here too, as the reasons name them.
"""

from __future__ import annotations

from .errors import InjectionEventsError

# The fixture and the call the converted waits use.
FIXTURE = "injection_event_stream"
WAIT = "wait_for_injection"
LOG_TIMEOUT = "600"  # ScyllaDB's log browser waits 600 s unless told otherwise

# What the codemod tells its user.
INSTALL_HINT = (
    "injection-events migrate needs libcst, which is an optional extra: "
    "pip install 'pytest-injection-events[migrate]'"
)
FRAMEWORK_LINES = (
    "'NAME: waiting for message', 'NAME: message received' and the framework's DEBUG lines"
)

# Reasons a site is left as it is. Stable texts: users grep for them.
R_NOT_STRING = "pattern is not a string literal"
R_PLACEHOLDER = "pattern is an f-string with a placeholder: its text is only known at run time"
R_REGEX = "pattern is a regex, not the literal text of an injection framework line"
R_NO_PATTERN = "no pattern given"
R_SEVERAL = "waits for several patterns at once"
R_STARRED = "arguments are passed with * or **"
R_POSITIONAL = "a positional argument after the pattern is neither a mark nor a timeout"
R_PARAMETER = (
    "the 'Injected value' line names a parameter and a value that a stream wait cannot check"
)
R_ALL = "'Disabling all injections' names no injection"
R_NOT_AWAITED = "call is not awaited directly (nor an argument of an awaited asyncio.gather)"
R_SYNC_IN_ASYNC = "called without await from sync code inside an async test"
R_RESULT_USED = "result is used directly; wait_for_injection returns an event, not (mark, matches)"
R_TUPLE_USED = "the matched lines of the result are read later"
R_TARGETS = "result is assigned to something other than plain names"
R_LAMBDA = "inside a lambda: convert by hand"
R_HOST = f"not inside a test or fixture function, so it cannot request the {FIXTURE} fixture"
R_SCOPE = f"a fixture with a scope wider than 'function' cannot request the {FIXTURE} fixture"
R_UNITTEST = "unittest-style test method: it cannot request pytest fixtures"
R_NAME_TAKEN = f"the function already uses the name '{FIXTURE}' for something else"
R_COMMENT = "a comment inside the call would be lost"
R_LAYOUT = "the statement shares its line with others; put it on its own line first"
R_MARK_EXPR = "from_mark is neither None nor a name"


def _r_not_framework(text: str) -> str:
    return f"{text!r} is not an injection framework line (only {FRAMEWORK_LINES} are events)"


def _r_needs_points(name: str, text: str) -> str:
    return (
        f"pass --points to confirm {name} is a breakpoint ({text!r} is only the start of the "
        "framework's line, and a handler's own log line may start the same way)"
    )


def _r_handler(name: str, source: str) -> str:
    return (
        f"'{name}: ...' is not an injection framework line: {source} has {name} as a handler, "
        "and this is the handler's own log line, written after its filters (its 'wait' event "
        "may be what the test means: convert by hand)"
    )


def _r_unconfirmed(name: str, source: str, kind: str | None) -> str:
    what = f"a {kind} point" if kind else "not listed"
    return f"{name} is {what} in {source}, not a breakpoint, so this is not its framework line"


def _r_suffix(name: str, others: list[str]) -> str:
    listed = ", ".join(others[:3])
    return f"the pattern for {name} also matches the lines of {listed} (it matches anywhere)"


def _r_receiver(text: str) -> str:
    return (
        f"cannot tell which server the log {text!r} belongs to: open it in this function with "
        "'await manager.server_open_log(SERVER.server_id)'"
    )


def _r_log_rebound(name: str) -> str:
    return f"'{name}' is bound to something else than one server's log in this function"


def _r_node_rebound(node: str) -> str:
    return f"'{node}' is rebound between opening the log and this wait"


def _r_mark(name: str) -> str:
    return (
        f"mark '{name}' is not only taken with log.mark() on this server's log and read by "
        "converted waits (it stays a log mark)"
    )


def _r_kwarg(keyword: str) -> str:
    return f"unexpected argument '{keyword}'"


class MigrateError(InjectionEventsError, ValueError):
    """Bad input for the codemod (a missing path, a file that does not parse, bad --points);
    its message is meant to be shown to the user as is."""
