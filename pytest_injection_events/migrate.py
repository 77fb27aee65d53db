"""Codemod: log waits on the injection framework's own lines -> event-stream waits.

`injection-events migrate` rewrites, in ScyllaDB-style cluster tests,

    log = await manager.server_open_log(s.server_id)
    mark = await log.mark()
    await log.wait_for("my_point: waiting for message", from_mark=mark)

into waits on the `injection_event_stream` fixture that keep the server, the
mark and the timeout:

    log = await manager.server_open_log(s.server_id)
    await injection_event_stream.add_node(s, log=log)
    mark = await injection_event_stream.mark(s)
    await injection_event_stream.wait_for_injection(
        "my_point", node=s, after=mark, timeout=600)

and lists every log wait it leaves as it is as `file:line: reason`. The rules,
with a before/after pair each, are in docs/migration.md. Parsing is libcst's own
(not the running Python's grammar), so files in 3.12+ syntax convert on 3.10.
"""

from __future__ import annotations

import difflib
import io
import os
import re
import sys
import tokenize
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .logfile import framework_pattern, regex_literal
from .migrate_points import _BREAKPOINT_KINDS, _SKIP_DIRS, Points, load_points
from .migrate_reasons import (
    FIXTURE,
    LOG_TIMEOUT,
    R_ALL,
    R_COMMENT,
    R_HOST,
    R_LAMBDA,
    R_LAYOUT,
    R_MARK_EXPR,
    R_NAME_TAKEN,
    R_NO_PATTERN,
    R_NOT_AWAITED,
    R_NOT_STRING,
    R_PARAMETER,
    R_PLACEHOLDER,
    R_POSITIONAL,
    R_REGEX,
    R_RESULT_USED,
    R_SCOPE,
    R_SEVERAL,
    R_STARRED,
    R_SYNC_IN_ASYNC,
    R_TARGETS,
    R_TUPLE_USED,
    R_UNITTEST,
    WAIT,
    MigrateError,
    _r_handler,
    _r_kwarg,
    _r_log_rebound,
    _r_mark,
    _r_needs_points,
    _r_node_rebound,
    _r_not_framework,
    _r_receiver,
    _r_suffix,
    _r_unconfirmed,
)
from .migrate_records import Pos, _Ctx, _LogBinding, _MarkBinding, _Site, _Store, _Use
from .migrate_syntax import (
    _dotted,
    _fixture_scope,
    _has_comment,
    _is_literal,
    _is_pure,
    _libcst,
    _method_call,
    _names_in,
    _param_names,
    _py_str,
    _quote,
    _string_value,
    _walk_nodes,
)
from .protocol import parse_framework_message

__all__ = [
    "FileResult",
    "MigrateError",
    "Points",
    "Skipped",
    "load_points",
    "migrate_paths",
    "migrate_source",
    "run_migrate",
]


@dataclass(frozen=True)
class Skipped:
    """A log wait left as it is, with the reason, for the user to convert by hand."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class FileResult:
    """What the codemod did to one file: the text before and after, and what it left."""

    path: str
    original: str
    migrated: str
    converted: int
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.migrated != self.original

    def diff(self) -> str:
        """Unified diff from original to migrated ('' when unchanged)."""
        if not self.changed:
            return ""
        lines = difflib.unified_diff(
            _LINE.findall(self.original),
            _LINE.findall(self.migrated),
            fromfile=self.path,
            tofile=self.path,
        )
        out = []
        for line in lines:
            if not line.endswith(("\n", "\r")):
                line += "\n\\ No newline at end of file\n"
            out.append(line)
        return "".join(out)


class _Analysis:
    """One walk over a module collecting sites, bindings and name uses; then the decisions."""

    def __init__(self, wrapper: Any, points: Points | None) -> None:
        c = _libcst()
        self.c = c
        self.points = points
        self.module = wrapper.module
        self.pos = wrapper.resolve(c.metadata.PositionProvider)
        self.exprctx = wrapper.resolve(c.metadata.ExpressionContextProvider)
        self.sites: list[_Site] = []
        self.logs: list[_LogBinding] = []
        self.marks: list[_MarkBinding] = []
        self.uses: list[_Use] = []
        self.stores: list[_Store] = []
        self.stream_waits: list[tuple[tuple[str, str], _Ctx]] = []
        self.add_nodes: list[tuple[str, _Ctx]] = []
        self.fixture_refs: list[_Ctx] = []
        self.keyword_ids: set[int] = set()
        self.def_loops: dict[int, tuple[Any, ...]] = {}
        self.imports_pytest = False
        # decisions
        self.converted: list[_Site] = []
        self.marker_sites: list[_Site] = []
        self.new_calls: dict[int, Any] = {}
        self.to_expr: set[int] = set()
        self.insert_after: dict[int, list[str]] = {}
        self.remove: set[int] = set()
        self.add_param: set[int] = set()
        self.decorators: dict[int, list[str]] = {}

    # ----------------------------------------------------------------- walk

    def start(self, node: Any) -> Pos:
        p = self.pos[node].start
        return (p.line, p.column)

    def end(self, node: Any) -> Pos:
        p = self.pos[node].end
        return (p.line, p.column)

    def code(self, node: Any) -> str:
        return self.module.code_for_node(node)

    def walk(self) -> None:
        self._walk(self.module, [], _Ctx((), ()))

    def _walk(self, node: Any, parents: list[Any], ctx: _Ctx) -> None:
        c = self.c
        self._visit(node, parents, ctx)
        inner = ctx
        if isinstance(node, (c.FunctionDef, c.ClassDef, c.Lambda)):
            inner = _Ctx((*ctx.chain, node), ctx.loops)
            self.def_loops[id(node)] = ctx.loops
        elif isinstance(node, (c.For, c.While)):
            inner = _Ctx(ctx.chain, (*ctx.loops, node))
        parents.append(node)
        for child in node.children:
            self._walk(child, parents, inner)
        parents.pop()

    def _visit(self, node: Any, parents: list[Any], ctx: _Ctx) -> None:
        c = self.c
        if isinstance(node, c.Arg) and node.keyword is not None:
            self.keyword_ids.add(id(node.keyword))
        elif isinstance(node, c.Import) and not ctx.chain:
            for alias in node.names:
                if _dotted(alias.name) == "pytest" and alias.asname is None:
                    self.imports_pytest = True
        elif isinstance(node, c.Name):
            self._visit_name(node, parents, ctx)
        elif isinstance(node, c.Call) and isinstance(node.func, c.Attribute):
            attr = node.func.attr.value
            owner = _dotted(node.func.value)
            if attr == "wait_for":
                self._visit_wait_for(node, parents, ctx)
            elif owner == FIXTURE and attr in (WAIT, WAIT + "_sync"):
                self._visit_stream_wait(node, ctx)
            elif owner == FIXTURE and attr in ("add_node", "add_node_sync") and node.args:
                self.add_nodes.append((self.code(node), ctx))
        elif isinstance(node, (c.Assign, c.AnnAssign)):
            self._visit_assign(node, parents, ctx)

    def _visit_name(self, node: Any, parents: list[Any], ctx: _Ctx) -> None:
        c = self.c
        if id(node) in self.keyword_ids:
            return
        kind = self.exprctx.get(node)
        if node.value == FIXTURE and kind is not None:
            parent = parents[-1] if parents else None
            if not isinstance(parent, c.Param):
                self.fixture_refs.append(ctx)
        if kind is None:
            return
        if kind == c.metadata.ExpressionContext.STORE:
            eff = self.start(node)
            for anc in reversed(parents):
                if isinstance(anc, c.NamedExpr):
                    break
                if isinstance(anc, (c.Assign, c.AnnAssign, c.AugAssign)):
                    eff = self.end(anc)
                    break
                if isinstance(anc, (c.BaseSmallStatement, c.BaseCompoundStatement)):
                    break
            self.stores.append(_Store(node.value, node, eff, ctx))
        else:  # LOAD and DEL both read the current binding
            self.uses.append(_Use(node.value, node, self.start(node), ctx))

    def _visit_stream_wait(self, call: Any, ctx: _Ctx) -> None:
        """An already converted wait: it consumes events, so it counts for `consume=`."""
        c = self.c
        if not call.args or not isinstance(call.args[0].value, c.SimpleString):
            return
        name = call.args[0].value.evaluated_value
        phase: Any = "enter"
        for arg in call.args[1:]:
            if arg.keyword is not None and arg.keyword.value == "phase":
                phase = arg.value.evaluated_value if isinstance(arg.value, c.SimpleString) else None
        if isinstance(name, str) and isinstance(phase, str):
            self.stream_waits.append(((name, phase), ctx))

    def _statement(self, parents: list[Any]) -> tuple[Any, Any]:
        """The SimpleStatementLine holding the current small statement and its block, if
        the statement is alone on its line in an indented block."""
        c = self.c
        line = parents[-1] if parents else None
        block = parents[-2] if len(parents) > 1 else None
        if (
            isinstance(line, c.SimpleStatementLine)
            and isinstance(block, c.IndentedBlock)
            and len(line.body) == 1
        ):
            return line, block
        return None, None

    def _visit_assign(self, node: Any, parents: list[Any], ctx: _Ctx) -> None:
        c = self.c
        if isinstance(node, c.Assign):
            if len(node.targets) != 1:
                return
            target = node.targets[0].target
        else:
            if node.value is None:
                return
            target = node.target
        if not isinstance(target, c.Name):
            return
        line, block = self._statement(parents)
        value = node.value
        if (found := _method_call(value, "mark")) is not None and not found[0].args:
            call, awaited = found
            self.marks.append(
                _MarkBinding(
                    target.value,
                    call.func.value,
                    call,
                    line,
                    self.end(node),
                    self.start(node),
                    ctx,
                    awaited,
                )
            )
            return
        opened = self._log_opening(value)
        if opened is not None:
            server, per_server, awaited = opened
            binding = _LogBinding(
                target.value, server, per_server, line, block, self.end(node), ctx, awaited
            )
            binding.keyed = isinstance(value, c.DictComp)
            self.logs.append(binding)

    def _log_opening(self, value: Any) -> tuple[Any, bool, bool] | None:
        """(server expression or None, per server?, awaited?) if `value` opens server logs."""
        c = self.c
        found = _method_call(value, "server_open_log")
        if found is not None:
            call, awaited = found
            return self._server_of(call), False, awaited
        if isinstance(value, c.Call) and (_dotted(value.func) or "").endswith("LogFile"):
            for arg in value.args:  # ScyllaLogFile(..., node.log_path)
                if isinstance(arg.value, c.Attribute) and arg.value.attr.value == "log_path":
                    return arg.value.value, False, False
            return None, False, False
        # [await manager.server_open_log(s.server_id) for s in servers], or asyncio.gather of them
        comp, awaited = value, False
        if isinstance(value, c.Await) and isinstance(value.expression, c.Call):
            call = value.expression
            if (_dotted(call.func) or "").split(".")[-1] == "gather" and len(call.args) == 1:
                arg = call.args[0]
                if arg.star == "*" and isinstance(arg.value, c.GeneratorExp):
                    comp, awaited = arg.value, True
        if comp is value and not isinstance(comp, (c.ListComp, c.DictComp)):
            return None
        if not isinstance(comp, (c.ListComp, c.GeneratorExp, c.DictComp)):
            return None
        if isinstance(comp, c.DictComp):
            key = comp.key
            loop = comp.for_in
            if not (isinstance(key, c.Name) and isinstance(loop.target, c.Name)):
                return None
            if key.value != loop.target.value:
                return None
            elt = _method_call(comp.value, "server_open_log")
        else:
            elt = _method_call(comp.elt, "server_open_log")
        if elt is None:
            return None
        loop = comp.for_in
        server = self._server_of(elt[0])
        if (
            loop.inner_for_in is None
            and not loop.ifs
            and isinstance(loop.target, c.Name)
            and _is_pure(loop.iter)
            and isinstance(server, c.Name)
            and server.value == loop.target.value
        ):
            return loop.iter, True, awaited or elt[1]
        return None, True, True

    def _server_of(self, call: Any) -> Any:
        c = self.c
        if len(call.args) == 1 and call.args[0].keyword is None:
            arg = call.args[0].value
            if isinstance(arg, c.Attribute) and arg.attr.value == "server_id":
                if _is_pure(arg.value):
                    return arg.value
        return None

    def _visit_wait_for(self, call: Any, parents: list[Any], ctx: _Ctx) -> None:
        c = self.c
        receiver = call.func.value
        owner = _dotted(receiver) or ""
        if owner == "asyncio" or owner.endswith(".asyncio"):
            return
        first = call.args[0].value if call.args else None
        stringy = isinstance(first, (c.SimpleString, c.FormattedString, c.ConcatenatedString))
        last = self._last_name(receiver)
        if not (stringy or "log" in last.lower() or self._bound_as_log(receiver)):
            return  # Condition.wait_for(predicate) and the like: not a log wait
        site = _Site(call, self.start(call)[0], self.start(call), ctx)
        self.sites.append(site)
        if ctx.chain and isinstance(ctx.chain[-1], c.Lambda):
            site.reason = R_LAMBDA
            return
        parent = parents[-1] if parents else None
        if isinstance(parent, c.Await):
            holder = parents[-2] if len(parents) > 1 else None
            if isinstance(holder, c.Expr) and holder.value is parent:
                site.stmt_line, site.block = self._statement(parents[:-2])
            elif isinstance(holder, c.Assign) and holder.value is parent:
                site.assign, site.assign_end = holder, self.end(holder)
                site.stmt_line, site.block = self._statement(parents[:-2])
                for t in holder.targets:
                    names = self._target_names(t.target)
                    if names is None:
                        site.reason = R_TARGETS
                        return
                    site.targets.extend(names)
            else:
                site.reason = R_RESULT_USED
                return
        elif self._in_awaited_gather(parents):
            site.usage = "gather"
        elif isinstance(parent, c.Expr) or (isinstance(parent, c.Assign) and parent.value is call):
            site.usage = "sync"
            if isinstance(parent, c.Assign):
                site.assign, site.assign_end = parent, self.end(parent)
                for t in parent.targets:
                    names = self._target_names(t.target)
                    if names is None:
                        site.reason = R_TARGETS
                        return
                    site.targets.extend(names)
            site.stmt_line, site.block = self._statement(parents[:-1])
        else:
            site.reason = R_NOT_AWAITED
            return
        self._check_args(site)

    def _in_awaited_gather(self, parents: list[Any]) -> bool:
        """`await asyncio.gather(log.wait_for(...), ...)` as a statement of its own."""
        c = self.c
        if len(parents) < 4:
            return False
        arg, gather, awaited, stmt = parents[-1], parents[-2], parents[-3], parents[-4]
        return (
            isinstance(arg, c.Arg)
            and not arg.star
            and arg.keyword is None
            and isinstance(gather, c.Call)
            and (_dotted(gather.func) or "").split(".")[-1] == "gather"
            and isinstance(awaited, c.Await)
            and isinstance(stmt, c.Expr)
        )

    def _last_name(self, node: Any) -> str:
        c = self.c
        while isinstance(node, (c.Subscript, c.Call)):
            node = node.value if isinstance(node, c.Subscript) else node.func
        if isinstance(node, c.Attribute):
            return node.attr.value
        return node.value if isinstance(node, c.Name) else ""

    def _bound_as_log(self, receiver: Any) -> bool:
        c = self.c
        base = receiver.value if isinstance(receiver, c.Subscript) else receiver
        return isinstance(base, c.Name) and any(b.name == base.value for b in self.logs)

    def _target_names(self, target: Any) -> list[str] | None:
        c = self.c
        if isinstance(target, c.Name):
            return [target.value]
        if isinstance(target, (c.Tuple, c.List)):
            names: list[str] = []
            for el in target.elements:
                if not isinstance(el, c.Element):
                    return None
                sub = self._target_names(el.value)
                if sub is None:
                    return None
                names.extend(sub)
            return names
        return None

    def _check_args(self, site: _Site) -> None:
        """The pattern, from_mark and timeout of the call (both of ScyllaDB's signatures)."""
        c = self.c
        args = list(site.call.args)
        if any(a.star for a in args):
            site.reason = R_STARRED
            return
        positional = [a for a in args if a.keyword is None]
        if not positional:
            site.reason = R_NO_PATTERN
            return
        extra = positional[1:]
        if any(_string_value(a.value) is not None for a in extra):
            site.reason = R_SEVERAL
            return
        if len(extra) > 2:
            site.reason = R_POSITIONAL
            return
        from_mark = extra[0] if extra else None
        timeout = extra[1] if len(extra) > 1 else None
        for a in args[len(positional) :]:
            kw = a.keyword.value
            if kw == "from_mark" and from_mark is None:
                from_mark = a
            elif kw == "timeout" and timeout is None:
                timeout = a
            else:
                site.reason = _r_kwarg(kw)
                return
        if from_mark is not None:
            value = from_mark.value
            if _dotted(value) == "None":
                from_mark = None
            elif isinstance(value, c.Name):
                site.mark_name = value.value
            else:
                site.reason = R_MARK_EXPR
                return
        site.from_mark, site.timeout = from_mark, timeout
        if _has_comment(site.call):
            site.reason = R_COMMENT
            return
        value = _string_value(args[0].value)
        if value is None:
            site.reason = R_NOT_STRING
            return
        if value is False:
            site.reason = R_PLACEHOLDER
            return
        site.reason = self._pattern(site, str(value))

    def _pattern(self, site: _Site, text: str) -> str | None:
        """Whether the pattern waits for a framework line (the reason if not)."""
        if regex_literal(text) is None:
            return R_REGEX
        found = framework_pattern(text)
        if found is None:
            line = parse_framework_message(regex_literal(text)[0])  # type: ignore[index]
            if line is not None and line.injection is None:
                return R_ALL
            if line is not None and line.kind == "parameter":
                return R_PARAMETER
            return _r_not_framework(text)
        site.pattern = found
        points = self.points
        if points is not None:
            others = sorted(n for n in points.kinds if n != found.name and n.endswith(found.name))
            if others:
                return _r_suffix(found.name, others)
        if found.full:
            return None
        if points is None:
            return _r_needs_points(found.name, text)
        kind = points.kind(found.name)
        if kind in _BREAKPOINT_KINDS:
            return None
        if kind == "handler":
            return _r_handler(found.name, "--points")
        return _r_unconfirmed(found.name, "--points", kind)

    # ----------------------------------------------------------------- decisions

    def _host(self, ctx: _Ctx) -> tuple[Any, str | None]:
        """The test or fixture function that gets the fixture parameter for code at `ctx`."""
        c = self.c
        chain = ctx.chain
        for i in range(len(chain) - 1, -1, -1):
            node = chain[i]
            if isinstance(node, c.Lambda):
                return None, R_LAMBDA
            if not isinstance(node, c.FunctionDef):
                break
            if FIXTURE in _param_names(node):
                return node, None
            scope = _fixture_scope(node)
            if scope not in (None, "function"):
                return None, R_SCOPE
            if node.name.value.startswith("test") or scope is not None:
                parent = chain[i - 1] if i > 0 else None
                if isinstance(parent, c.ClassDef) and any(
                    (_dotted(b.value) or "").endswith("TestCase") for b in parent.bases
                ):
                    return None, R_UNITTEST
                return node, None
        return None, R_HOST

    @staticmethod
    def _inside(ctx: _Ctx, host: Any) -> bool:
        return any(f is host for f in ctx.chain)

    def _nested_below(self, ctx: _Ctx, host: Any) -> tuple[Any, ...]:
        for i, f in enumerate(ctx.chain):
            if f is host:
                return ctx.chain[i + 1 :]
        return ctx.chain

    def _later(self, start: Pos, uctx: _Ctx, eff: Pos, ctx: _Ctx, host: Any) -> bool:
        """Whether code at (start, uctx) may run after the binding at (eff, ctx)."""
        if set(map(id, self._nested_below(uctx, host))) != set(
            map(id, self._nested_below(ctx, host))
        ):
            return True  # a nested function may run at any time
        if start >= eff:
            return True
        return bool(set(map(id, uctx.loops)) & set(map(id, ctx.loops)))

    def _uses_after(self, name: str, eff: Pos, ctx: _Ctx, host: Any) -> list[_Use]:
        return [
            u
            for u in self.uses
            if u.name == name
            and self._inside(u.ctx, host)
            and self._later(u.start, u.ctx, eff, ctx, host)
        ]

    def _stores(self, name: str, host: Any) -> list[_Store]:
        return [s for s in self.stores if s.name == name and self._inside(s.ctx, host)]

    def decide(self) -> None:
        by_host: dict[int, tuple[Any, list[_Site]]] = {}
        for site in self.sites:
            host, why = self._host(site.ctx)
            if host is None:
                site.reason = site.reason or why
                continue
            site.host = host
            by_host.setdefault(id(host), (host, []))[1].append(site)
        for host, sites in by_host.values():
            self._decide_host(host, sites)

    def _in_sync(self, ctx: _Ctx) -> bool:
        """Whether code at `ctx` runs in a plain `def` (no await there: the _sync twins)."""
        inner = self._inner_function(ctx)
        return inner is not None and inner.asynchronous is None

    def _inner_function(self, ctx: _Ctx) -> Any:
        return next((f for f in reversed(ctx.chain) if isinstance(f, self.c.FunctionDef)), None)

    def _decide_host(self, host: Any, sites: list[_Site]) -> None:
        has_param = FIXTURE in _param_names(host)
        taken = not has_param and any(self._inside(ctx, host) for ctx in self.fixture_refs)
        is_async = host.asynchronous is not None
        for s in sites:
            if s.reason is not None:
                continue
            if taken:
                s.reason = R_NAME_TAKEN
                continue
            inner_async = self._inner_function(s.ctx).asynchronous is not None
            if s.usage == "sync" and inner_async:
                s.reason = R_NOT_AWAITED  # a coroutine nobody awaits, or a task used later
                continue
            if s.usage == "sync" and is_async:
                s.reason = R_SYNC_IN_ASYNC
                continue
            if s.usage != "gather" and s.stmt_line is None:
                s.reason = R_LAYOUT
                continue
            s.reason = self._resolve_log(s, host)
        self._settle_marks(host, sites)
        converted = [s for s in sites if s.reason is None]
        if not converted:
            return
        self._decide_consume(host, converted)
        if self._try_marker(host, sites, converted):
            return
        self.converted.extend(converted)
        if not has_param:
            self.add_param.add(id(host))
        for s in converted:
            self._plan_site(s)
        self._plan_marks_and_logs(host, converted)

    def _resolve_log(self, site: _Site, host: Any) -> str | None:
        """Find the server the site's log was opened for (the wait's `node=`)."""
        c = self.c
        receiver = site.call.func.value
        index = None
        if isinstance(receiver, c.Subscript):
            if len(receiver.slice) != 1 or not isinstance(receiver.slice[0].slice, c.Index):
                return _r_receiver(self.code(receiver))
            index = receiver.slice[0].slice.value
            if not _is_pure(index):
                return _r_receiver(self.code(receiver))
            base = receiver.value
        else:
            base = receiver
        if not isinstance(base, c.Name):
            return _r_receiver(self.code(receiver))
        name = base.value
        bindings = [b for b in self.logs if b.name == name and self._inside(b.ctx, host)]
        stores = self._stores(name, host)
        if not bindings:
            return _r_receiver(self.code(receiver))
        if len(stores) != len(bindings):
            return _r_log_rebound(name)
        if any(b.node is None for b in bindings):
            return _r_receiver(self.code(receiver))
        codes = {self.code(b.node) for b in bindings}
        kinds = {b.per_server for b in bindings}
        if len({b.keyed for b in bindings}) != 1:
            return _r_log_rebound(name)
        if len(codes) != 1 or kinds != {index is not None}:
            return _r_log_rebound(name)
        binding = bindings[0]
        if binding.per_server and site.usage == "sync":
            return _r_receiver(self.code(receiver))
        node_code = codes.pop()
        names = [n.value for n in _names_in(binding.node)]
        if index is not None and binding.keyed:
            node_code, names = self.code(index), []  # logs[s] is the log of s
        elif index is not None:
            node_code = f"{node_code}[{self.code(index)}]"
        site.node_code = node_code
        site.log_bindings = bindings  # an index is read at the wait, as it was: not checked
        for b in bindings:
            if b.line is None:
                return R_LAYOUT
            for n in names:
                if self._rebound_between(n, b, site.start, site.ctx, host):
                    return _r_node_rebound(n)
        return None

    def _rebound_between(
        self, name: str, binding: _LogBinding, start: Pos, ctx: _Ctx, host: Any
    ) -> bool:
        loops = {id(x) for x in ctx.loops} - {id(x) for x in binding.ctx.loops}
        for store in self._stores(name, host):
            if binding.eff < store.eff <= start:
                return True
            if {id(x) for x in store.ctx.loops} & loops:
                return True
        return False

    def _settle_marks(self, host: Any, sites: list[_Site]) -> None:
        """Refuse sites whose mark cannot become a stream mark, until nothing changes."""
        changed = True
        while changed:
            changed = False
            live = [s for s in sites if s.reason is None]
            for s in live:
                reason = self._mark_reason(s, host, live) or self._result_reason(s, host, live)
                if reason is not None:
                    s.reason = reason
                    changed = True

    def _mark_group(
        self, name: str, seeds: list[_Store], node_code: str | None, host: Any, live: list[_Site]
    ) -> list[_MarkBinding] | None:
        """The `log.mark()` bindings of the mark `name` that reach, through the reads they
        reach and the stores reaching those, from `seeds`; None unless each such store is
        a log.mark() on that server's log or a converted wait's new mark and each such read
        the from_mark of a converted wait on that server (it must stay a log mark then)."""
        readers = {id(s.from_mark.value): s for s in live if s.mark_name == name}
        stores = self._stores(name, host)
        uses = [u for u in self.uses if u.name == name and self._inside(u.ctx, host)]
        todo, seen, read, marks = list(seeds), set(), set(), []
        if not todo:
            return None  # a parameter, a global: no mark of this function
        while todo:
            store = todo.pop()
            if id(store) in seen:
                continue
            seen.add(id(store))
            mark = next((m for m in self.marks if m.name == name and m.eff == store.eff), None)
            if mark is not None:
                if self._mark_node(mark, host) != node_code:
                    return None
                marks.append(mark)
            elif not any(
                w.assign is not None
                and w.targets[:1] == [name]
                and w.assign_end == store.eff
                and w.node_code == node_code
                for w in live
            ):
                return None
            for use in uses:
                if id(use) in read or not self._later(
                    use.start, use.ctx, store.eff, store.ctx, host
                ):
                    continue
                read.add(id(use))
                reader = readers.get(id(use.node))
                if reader is None or reader.node_code != node_code:
                    return None
                todo += [s for s in stores if self._reaches(s, use, host)]
        return marks

    def _reaches(self, store: _Store, use: _Use, host: Any) -> bool:
        return self._later(use.start, use.ctx, store.eff, store.ctx, host)

    def _marks_of_site(
        self, name: str, node_code: str | None, host: Any, live: list[_Site], site: _Site | None
    ) -> list[_MarkBinding] | None:
        """The mark bindings a converted site's from_mark (or, with `site` None, every read
        of the name) depends on; None if the mark must stay a log mark."""
        uses = [u for u in self.uses if u.name == name and self._inside(u.ctx, host)]
        if site is not None:
            uses = [u for u in uses if u.node is site.from_mark.value]
        seeds = [
            s for s in self._stores(name, host) if any(self._reaches(s, u, host) for u in uses)
        ]
        return self._mark_group(name, seeds, node_code, host, live)

    def _mark_node(self, mark: _MarkBinding, host: Any) -> str | None:
        """The server of `M = await L.mark()`, resolved as a wait on L would be."""
        fake = _Site(mark.call, mark.start[0], mark.start, mark.ctx)
        fake.usage = "await" if mark.awaited else "sync"
        fake.stmt_line = mark.line
        if mark.line is None or self._resolve_log(fake, host) is not None:
            return None
        mark.node_code = fake.node_code
        return fake.node_code

    def _mark_reason(self, site: _Site, host: Any, live: list[_Site]) -> str | None:
        if site.mark_name is None:
            return None
        found = self._marks_of_site(site.mark_name, site.node_code, host, live, site)
        if found is None:
            return _r_mark(site.mark_name)
        site.marks = found
        return None

    def _result_reason(self, site: _Site, host: Any, live: list[_Site]) -> str | None:
        """`mark, matches = await log.wait_for(...)`: matches must not be read later; a mark
        read later becomes a stream mark taken right after the wait."""
        site.remark = False
        if site.assign is None:
            return None
        assert site.assign_end is not None
        for i, name in enumerate(site.targets):
            later = self._uses_after(name, site.assign_end, site.ctx, host)
            if not later:
                continue
            if i > 0 or len(site.targets) == 1:
                return R_TUPLE_USED if len(site.targets) > 1 else R_RESULT_USED
            own = [st for st in self._stores(name, host) if st.eff == site.assign_end]
            if site.usage == "gather" or (
                self._mark_group(name, own, site.node_code, host, live) is None
            ):
                return _r_mark(name)
            site.remark = True
        return None

    def _decide_consume(self, host: Any, converted: list[_Site]) -> None:
        """A log wait consumes nothing: where another stream wait in the function could
        take the same event (same injection, phase and server), or in a loop, the
        converted wait says consume=False."""
        keys: dict[tuple[str, str, str | None], int] = {}
        for s in converted:
            assert s.pattern is not None
            key = (s.pattern.name, s.pattern.phase, s.node_code)
            keys[key] = keys.get(key, 0) + 1
        existing = {key for key, ctx in self.stream_waits if self._inside(ctx, host)}
        outer = set(map(id, self.def_loops.get(id(host), ())))
        for s in converted:
            assert s.pattern is not None
            in_loop = bool(set(map(id, s.ctx.loops)) - outer)
            s.consume = (
                keys[(s.pattern.name, s.pattern.phase, s.node_code)] == 1
                and (s.pattern.name, s.pattern.phase) not in existing
                and not in_loop
            )

    # ----------------------------------------------------------------- the marker

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

    # ----------------------------------------------------------------- planning the edits

    def _plan_site(self, site: _Site) -> None:
        assert site.pattern is not None and site.node_code is not None
        sync = site.usage == "sync"
        args: list[tuple[str | None, str]] = [(None, _py_str(site.pattern.name, _quote(site)))]
        if site.pattern.phase != "enter":
            args.append(("phase", _py_str(site.pattern.phase, _quote(site))))
        args.append(("node", site.node_code))
        if site.from_mark is not None:
            args.append(("after", self.code(site.from_mark.value)))
        timeout = self.code(site.timeout.value) if site.timeout is not None else LOG_TIMEOUT
        args.append(("timeout", timeout))
        if not site.consume:
            args.append(("consume", "False"))
        self.new_calls[id(site.call)] = _build_call(
            site.call, f"{FIXTURE}.{WAIT}{'_sync' if sync else ''}", args
        )
        if site.assign is not None:
            self.to_expr.add(id(site.assign))
        if site.remark:
            stmt = f"{site.targets[0]} = {_mark_call(site.node_code, sync)}"
            self.insert_after.setdefault(id(site.stmt_line), []).append(stmt)

    def _plan_marks_and_logs(self, host: Any, converted: list[_Site]) -> None:
        c = self.c
        marks = {id(m): m for s in converted for m in s.marks}
        for mark in marks.values():
            if mark.node_code:
                call = c.parse_expression(
                    _mark_call(mark.node_code, self._in_sync(mark.ctx)).removeprefix("await ")
                )
                self.new_calls[id(mark.call)] = call
        done: set[int] = set()
        for s in converted:
            for b in s.log_bindings:
                if id(b) in done:
                    continue
                done.add(id(b))
                stmt = _add_node_stmt(b, self.code(b.node), self._in_sync(b.ctx), self._fresh)
                attached = f"{b.name}.items()" if b.keyed else f"zip({self.code(b.node)}, {b.name})"
                if b.per_server and attached in self.code(host):
                    continue
                if any(
                    code.replace(" ", "") in stmt.replace(" ", "")
                    for code, ctx in self.add_nodes
                    if self._inside(ctx, host)
                ):
                    continue  # already attached (a second run, or by hand)
                self.insert_after.setdefault(id(b.line), []).append(stmt)

    def _fresh(self, base: str) -> str:
        used = {u.name for u in self.uses} | {s.name for s in self.stores}
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}{n}"
        return name


#: Calls that leave work running on the test's loop after the body: the marker's check
#: runs once the body returned, so such work would not run before it.
_BACKGROUND = frozenset(
    {"create_task", "ensure_future", "TaskGroup", "call_soon", "call_later", "call_at"}
)


def _mark_call(node_code: str, sync: bool) -> str:
    if sync:
        return f"{FIXTURE}.mark_sync({node_code})"
    return f"await {FIXTURE}.mark({node_code})"


def _add_node_stmt(binding: _LogBinding, node_code: str, sync: bool, fresh: Any) -> str:
    if not binding.per_server:
        method = "add_node_sync" if sync else "add_node"
        prefix = "" if sync else "await "
        return f"{prefix}{FIXTURE}.{method}({node_code}, log={binding.name})"
    server, log = fresh("server_"), fresh("log_")
    pairs = f"{binding.name}.items()" if binding.keyed else f"zip({node_code}, {binding.name})"
    return f"for {server}, {log} in {pairs}:\n    await {FIXTURE}.add_node({server}, log={log})"


def _build_call(call: Any, func: str, args: list[tuple[str | None, str]]) -> Any:
    """The stream call, laid out as the original (one line, or one argument per line)."""
    c = _libcst()
    new = c.parse_expression(f"{func}()")
    first_ws = call.whitespace_before_args
    seps = [a.comma.whitespace_after for a in call.args if isinstance(a.comma, c.Comma)]
    # one argument per line if the call had them so, else all on one line
    sep: Any = next(
        (ws for ws in seps if isinstance(ws, c.ParenthesizedWhitespace)), c.SimpleWhitespace(" ")
    )
    last = call.args[-1]
    built = []
    for i, (key, value) in enumerate(args):
        arg = c.Arg(value=c.parse_expression(value))
        if key is not None:
            arg = arg.with_changes(
                keyword=c.Name(key),
                equal=c.AssignEqual(
                    whitespace_before=c.SimpleWhitespace(""),
                    whitespace_after=c.SimpleWhitespace(""),
                ),
            )
        if i < len(args) - 1:
            arg = arg.with_changes(comma=c.Comma(whitespace_after=sep))
        else:
            arg = arg.with_changes(comma=last.comma, whitespace_after_arg=last.whitespace_after_arg)
        built.append(arg)
    return call.with_changes(
        func=new.func.with_changes(lpar=call.func.lpar, rpar=call.func.rpar),
        args=built,
        whitespace_before_args=first_ws,
    )


# --------------------------------------------------------------------------- applying


def _param_sep(func: Any) -> Any:
    """Whitespace that puts a new parameter where this signature puts its parameters."""
    c = _libcst()
    lead = func.whitespace_before_params
    if not isinstance(lead, c.ParenthesizedWhitespace):
        p = func.params
        for param in (*p.posonly_params, *p.params, p.star_arg, *p.kwonly_params):
            comma = getattr(param, "comma", None)
            if isinstance(comma, c.Comma) and isinstance(
                comma.whitespace_after, c.ParenthesizedWhitespace
            ):
                lead = comma.whitespace_after
                break
        else:
            return c.SimpleWhitespace(" ")
    return c.ParenthesizedWhitespace(
        first_line=c.TrailingWhitespace(),
        empty_lines=[],
        indent=lead.indent,
        last_line=lead.last_line,
    )


def _add_param(func: Any) -> Any:
    """`func`'s parameters plus the fixture, without a default, where pytest fills it in:
    after the last plain parameter without a default, or keyword-only after `*`."""
    c = _libcst()
    params = func.params
    sep = _param_sep(func)
    new = c.Param(name=c.Name(FIXTURE))
    changes: dict[str, Any] = {}
    if isinstance(params.star_arg, (c.Param, c.ParamStar)):
        seq_field, seq = "kwonly_params", list(params.kwonly_params)
        index = len(seq)
        prev_field: str | None = "kwonly_params" if index else "star_arg"
    else:
        seq_field, seq = "params", list(params.params)
        index = next((i for i, p in enumerate(seq) if p.default is not None), len(seq))
        prev_field = "params" if index else None
    if prev_field is None:
        slash = params.posonly_ind
        if isinstance(slash, c.ParamSlash) and not isinstance(slash.comma, c.Comma):
            changes["posonly_ind"] = slash.with_changes(
                comma=c.Comma(whitespace_after=c.SimpleWhitespace(" "))
            )
        follows = bool(seq) or params.star_kwarg is not None
        new = new.with_changes(
            comma=c.Comma(whitespace_after=sep) if follows else c.MaybeSentinel.DEFAULT
        )
    else:
        prev = seq[index - 1] if prev_field == seq_field else params.star_arg
        new = new.with_changes(comma=prev.comma)
        if isinstance(prev, c.Param):
            new = new.with_changes(whitespace_after_param=prev.whitespace_after_param)
            prev = prev.with_changes(whitespace_after_param=c.SimpleWhitespace(""))
        prev = prev.with_changes(comma=c.Comma(whitespace_after=sep))
        if prev_field == seq_field:
            seq[index - 1] = prev
        else:
            changes[prev_field] = prev
    seq.insert(index, new)
    changes[seq_field] = seq
    return params.with_changes(**changes)


def _apply(analysis: _Analysis) -> Any:
    """Rewrite the module according to the analysis' decisions."""
    c = _libcst()
    a = analysis

    class Apply(c.CSTTransformer):  # type: ignore[name-defined]  # libcst: imported lazily
        def leave_Call(self, original: Any, updated: Any) -> Any:
            return a.new_calls.get(id(original), updated)

        def leave_Assign(self, original: Any, updated: Any) -> Any:
            if id(original) in a.to_expr:
                return c.Expr(value=updated.value, semicolon=updated.semicolon)
            return updated

        def leave_FunctionDef(self, original: Any, updated: Any) -> Any:
            if id(original) in a.add_param:
                updated = updated.with_changes(params=_add_param(updated))
            for text in a.decorators.get(id(original), ()):
                decorator = c.Decorator(decorator=c.parse_expression(text))
                updated = updated.with_changes(decorators=[*updated.decorators, decorator])
            return updated

        def leave_IndentedBlock(self, original: Any, updated: Any) -> Any:
            touched = any(id(o) in a.remove or id(o) in a.insert_after for o in original.body)
            if not touched:
                return updated
            body: list[Any] = []
            carried: list[Any] = []
            for o, u in zip(original.body, updated.body, strict=True):
                if id(o) in a.remove:
                    carried.extend(u.leading_lines)
                    comment = u.trailing_whitespace.comment
                    if comment is not None:
                        carried.append(c.EmptyLine(comment=comment))
                    continue
                if carried:
                    u = u.with_changes(leading_lines=_merge_lines(carried, u.leading_lines))
                    carried = []
                body.append(u)
                for text in a.insert_after.get(id(o), ()):
                    body.append(c.parse_statement(text + "\n"))
            footer = updated.footer
            if carried:
                footer = [*carried, *footer]
            return updated.with_changes(body=body, footer=footer)

    return a.module.visit(Apply())


def _merge_lines(first: list[Any], second: Sequence[Any]) -> list[Any]:
    """Concatenate leading lines without doubling a blank line at the junction."""
    if first and second and first[-1].comment is None and second[0].comment is None:
        return [*first, *second[1:]]
    return [*first, *second]


# --------------------------------------------------------------------------- public API


def migrate_source(source: str, path: str = "<string>", points: Points | None = None) -> FileResult:
    """Convert the log waits of one module's source; raise MigrateError if it does not parse.

    Only libcst parses the file, so what it accepts does not depend on the running
    Python (3.12 syntax converts on 3.10).
    """
    c = _libcst()
    if not _MENTIONS_WAIT_FOR.search(source):
        return FileResult(path, source, source, 0, [])
    try:
        module = c.parse_module(source)
    except c.ParserSyntaxError as exc:
        msg = str(exc.message).removeprefix("parser error: ")
        raise MigrateError(f"{path}: cannot parse: {msg} (line {exc.raw_line})") from None
    except Exception as exc:  # libcst raises other errors on odd input (a null byte)
        raise MigrateError(f"{path}: cannot parse: {exc}") from None
    analysis = _Analysis(c.metadata.MetadataWrapper(module, unsafe_skip_copy=True), points)
    analysis.walk()
    analysis.decide()
    skipped = sorted(
        (Skipped(path, s.line, s.reason) for s in analysis.sites if s.reason is not None),
        key=lambda s: (s.line, s.reason),
    )
    done = len(analysis.converted) + len(analysis.marker_sites)
    if not done:
        return FileResult(path, source, source, 0, skipped)
    migrated = _apply(analysis).code
    try:
        c.parse_module(migrated)
    except Exception:  # pragma: no cover - a bug of ours
        bug = "internal error: the conversion did not parse; please report it"
        return FileResult(path, source, source, 0, [*skipped, Skipped(path, 1, bug)])
    return FileResult(path, source, migrated, done, skipped)


_MENTIONS_WAIT_FOR = re.compile(r"\bwait_for\b")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def _python_files(path: Path) -> Iterator[Path]:
    """*.py under a directory, sorted; skips hidden directories and virtualenvs."""
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and d not in _SKIP_DIRS
            and not (Path(root, d) / "pyvenv.cfg").exists()
        )
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(root, name)


def _expand(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path | MigrateError]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from _python_files(path)
        elif path.is_file():
            yield path
        elif path.exists():
            yield MigrateError(f"{path}: not a regular file or directory")
        else:
            yield MigrateError(f"{path}: no such file or directory")


def _read(path: Path) -> tuple[str, str]:
    """Source text and its encoding (PEP 263), keeping line endings as they are."""
    try:
        data = path.read_bytes()
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        return data.decode(encoding), encoding
    except OSError as exc:
        raise MigrateError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (SyntaxError, UnicodeDecodeError, LookupError) as exc:
        raise MigrateError(f"{path}: cannot decode: {exc}") from None


def migrate_paths(
    paths: Sequence[str | os.PathLike[str]], points: Points | None = None
) -> list[FileResult]:
    """Convert files and directories (recursing into *.py, sorted); nothing is written.

    Raises MigrateError, naming the path, for a path that does not exist (before
    doing any work) or a file that cannot be read or parsed.
    """
    _libcst()
    files: list[Path] = []
    for item in _expand(paths):
        if isinstance(item, MigrateError):
            raise item
        files.append(item)
    return [migrate_source(_read(f)[0], str(f), points) for f in files]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def run_migrate(
    paths: Sequence[str],
    *,
    write: bool = False,
    points: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """The `injection-events migrate` command: diff (default) or write, then the report.

    Prints a unified diff of every file that would change (or writes them), then
    every log wait left as it is as `path:line: reason` and a one-line summary.
    Returns 0, also when some waits were left, or 2 when any input was bad.
    """
    out = sys.stdout if out is None else out
    err = out if err is None else err
    try:
        _libcst()
        known = load_points(points) if points is not None else None
    except MigrateError as exc:
        print(f"error: {exc}", file=err)
        return 2
    status = 0
    results: list[FileResult] = []
    for item in _expand(paths):
        if isinstance(item, MigrateError):
            print(f"error: {item}", file=err)
            status = 2
            continue
        try:
            text, encoding = _read(item)
            result = migrate_source(text, str(item), known)
        except MigrateError as exc:
            print(f"error: {exc}", file=err)
            status = 2
            continue
        if result.changed and write:
            try:
                item.write_bytes(result.migrated.encode(encoding))
            except OSError as exc:
                print(f"error: {item}: cannot write: {exc.strerror or exc}", file=err)
                status = 2
                result = FileResult(result.path, result.original, result.original, 0, [])
            else:
                print(f"wrote {item} ({_plural(result.converted, 'wait')} converted)", file=err)
        elif result.changed:
            out.write(result.diff())
        results.append(result)
    skipped = [s for r in results for s in r.skipped]
    for s in skipped:
        print(s, file=err)
    converted = sum(r.converted for r in results)
    files = sum(1 for r in results if r.changed)
    summary = f"{_plural(converted, 'wait')} converted in {_plural(files, 'file')}"
    if skipped:
        summary += f", {_plural(len(skipped), 'wait')} left as is (listed above)"
    if not write and files:
        summary += "; dry run, nothing written (use --write to apply)"
    print(summary, file=err)
    return status
