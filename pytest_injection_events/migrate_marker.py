"""The codemod's third stage: `@pytest.mark.wait_for_injection`, where it means what the wait did.

A test whose only log wait, its last statement, checks that the injection it
enabled first thing was hit on the fixture's node gets the marker instead, and
loses the enable, the mark and the wait. docs/migration.md, rule 7, says when;
docs/design.md, "The codemod", has the stages.
"""

from __future__ import annotations

from typing import Any

from .migrate_decide import _Decide
from .migrate_points import Points
from .migrate_reasons import LOG_TIMEOUT, WAIT
from .migrate_records import _Site
from .migrate_syntax import (
    _dotted,
    _fixture_scope,
    _is_literal,
    _method_call,
    _param_names,
    _py_str,
    _quote,
    _string_value,
    _walk_nodes,
)

#: Calls that leave work running on the test's loop after the body: the marker's check
#: runs once the body returned, so such work would not run before it.
_BACKGROUND = frozenset(
    {"create_task", "ensure_future", "TaskGroup", "call_soon", "call_later", "call_at"}
)


class _Marker(_Decide):
    """The marker, tried on each function once its waits are decided."""

    def __init__(self, wrapper: Any, points: Points | None) -> None:
        super().__init__(wrapper, points)
        self.marker_sites: list[_Site] = []
        self.remove: set[int] = set()
        self.decorators: dict[int, list[str]] = {}

    def _try_marker(self, host: Any, sites: list[_Site], converted: list[_Site]) -> bool:
        """`@pytest.mark.wait_for_injection(...)` for a test whose only log wait, its last
        statement, checks that the injection it enabled first thing was hit, on the
        fixture's node (the one node the marker can enable on before the body)."""
        c = self.c
        if len(sites) != 1 or len(converted) != 1 or not self.imports_pytest:
            return False
        site = sites[0]
        params = _param_names(host)
        body = list(host.body.body)
        if (
            not host.name.value.startswith("test")
            or _fixture_scope(host) is not None
            or "injection_cluster" in params
            or "injection_node" not in params
            or "injection_api" not in params
            or site.node_code != "injection_node"
            or site.pattern is None
            or site.pattern.phase != "enter"
            or site.usage != "await"
            or site.assign is not None
            or site.block is not host.body
            or site.stmt_line is not body[-1]
        ):
            return False
        enable_at, enable = self._enable_call(body, site.pattern.name)
        if enable is None:
            return False
        marks = [m for m in self.marks if m.name == site.mark_name and self._inside(m.ctx, host)]
        if site.mark_name is not None and (
            len(marks) != 1 or not any(marks[0].line is b for b in body[:enable_at])
        ):
            return False  # the mark must be taken before the injection is enabled
        before = {id(b.line) for b in site.log_bindings} | {id(m.line) for m in marks}
        for i, stmt in enumerate(body[:enable_at]):
            if id(stmt) not in before and not (i == 0 and self._is_docstring(stmt)):
                return False  # something else runs before the enable: the marker would not
        name_uses = [
            n
            for n in _walk_nodes(host.body)
            if isinstance(n, c.SimpleString)
            and site.pattern.name in str(n.evaluated_value)
            and n is not site.call.args[0].value
        ]
        if len(name_uses) != 1:
            return False  # the injection is also messaged, disabled, ... by name
        remove = {id(site.stmt_line), id(body[enable_at])} | {id(m.line) for m in marks}
        receivers = {id(site.call.func.value)} | {id(m.receiver) for m in marks}
        log_names = {b.name for b in site.log_bindings}
        if not any(
            u.name in log_names and self._inside(u.ctx, host) and id(u.node) not in receivers
            for u in self.uses
        ):
            remove |= {id(b.line) for b in site.log_bindings}
        if all(id(stmt) in remove or self._is_docstring(stmt) for stmt in body):
            return False  # nothing left to trigger the injection
        if any(
            isinstance(n, c.Call) and self._last_name(n.func) in _BACKGROUND
            for n in _walk_nodes(host.body)
        ):
            return False  # work left running on the test's loop: the marker checks after it
        one_shot, parameters = enable
        args = [_py_str(site.pattern.name, _quote(site)), f"one_shot={one_shot}"]
        if parameters is not None:
            args.append(f"parameters={parameters}")
        timeout = self.code(site.timeout.value) if site.timeout is not None else LOG_TIMEOUT
        args.append(f"timeout={timeout}")
        self.decorators[id(host)] = [f"pytest.mark.{WAIT}({', '.join(args)})"]
        self.marker_sites.append(site)
        self.remove |= remove
        return True

    def _is_docstring(self, stmt: Any) -> bool:
        c = self.c
        return (
            isinstance(stmt, c.SimpleStatementLine)
            and len(stmt.body) == 1
            and isinstance(stmt.body[0], c.Expr)
            and isinstance(stmt.body[0].value, (c.SimpleString, c.ConcatenatedString))
        )

    def _enable_call(self, body: list[Any], name: str) -> tuple[int, Any]:
        """`await injection_api.enable_injection("NAME", ...)` as a statement of the body:
        its index and (one_shot, parameters) as code, else (-1, None)."""
        c = self.c
        for i, stmt in enumerate(body):
            if not (isinstance(stmt, c.SimpleStatementLine) and len(stmt.body) == 1):
                continue
            expr = stmt.body[0]
            if not isinstance(expr, c.Expr):
                continue
            found = _method_call(expr.value, "enable_injection")
            if found is None or not found[1] or _dotted(found[0].func.value) != "injection_api":
                continue
            call = found[0]
            args = list(call.args)
            if not args or args[0].keyword is not None or _string_value(args[0].value) != name:
                return -1, None
            one_shot, parameters = "False", None
            for j, arg in enumerate(args[1:], start=1):
                key = (
                    arg.keyword.value
                    if arg.keyword is not None
                    else ("one_shot", "parameters")[min(j - 1, 1)]
                )
                if arg.star or (j > 2 and arg.keyword is None):
                    return -1, None
                if key == "one_shot" and _dotted(arg.value) in ("True", "False"):
                    one_shot = _dotted(arg.value) or "False"
                elif key == "parameters" and _is_literal(arg.value):
                    parameters = self.code(arg.value)
                else:
                    return -1, None
            return i, (one_shot, parameters)
        return -1, None
