"""The codemod's first stage: one walk over a module, finding the log waits and what they read.

It records every `log.wait_for(...)` call (a `_Site`, its pattern, mark and
timeout read and checked), where server logs are opened and marks taken on
them, and every use and store of a name; the later stages decide from these
records alone. The stages are in docs/design.md, "The codemod"; the rules in
docs/migration.md.
"""

from __future__ import annotations

from typing import Any

from .logfile import framework_pattern, regex_literal
from .migrate_points import _BREAKPOINT_KINDS, Points
from .migrate_reasons import (
    FIXTURE,
    R_ALL,
    R_COMMENT,
    R_LAMBDA,
    R_MARK_EXPR,
    R_NO_PATTERN,
    R_NOT_AWAITED,
    R_NOT_STRING,
    R_PARAMETER,
    R_PLACEHOLDER,
    R_POSITIONAL,
    R_REGEX,
    R_RESULT_USED,
    R_SEVERAL,
    R_STARRED,
    R_TARGETS,
    WAIT,
    _r_handler,
    _r_kwarg,
    _r_needs_points,
    _r_not_framework,
    _r_suffix,
    _r_unconfirmed,
)
from .migrate_records import Pos, _Ctx, _LogBinding, _MarkBinding, _Site, _Store, _Use
from .migrate_syntax import _dotted, _has_comment, _is_pure, _libcst, _method_call, _string_value
from .protocol import parse_framework_message


class _Walk:
    """One walk over a module collecting sites, bindings and name uses."""

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
                site.stmt_line, site.block = self._statement(parents[:-2])
                if not self._assigned(site, holder):
                    return
            else:
                site.reason = R_RESULT_USED
                return
        elif self._in_awaited_gather(parents):
            site.usage = "gather"
        elif isinstance(parent, c.Expr) or (isinstance(parent, c.Assign) and parent.value is call):
            site.usage = "sync"
            if isinstance(parent, c.Assign) and not self._assigned(site, parent):
                return
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

    def _assigned(self, site: _Site, assign: Any) -> bool:
        """Note the assignment a wait's result goes to; False (with the reason) when its
        targets are not plain names."""
        site.assign, site.assign_end = assign, self.end(assign)
        for target in assign.targets:
            names = self._target_names(target.target)
            if names is None:
                site.reason = R_TARGETS
                return False
            site.targets.extend(names)
        return True

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
