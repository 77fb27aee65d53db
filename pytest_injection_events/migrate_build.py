"""The codemod's last stage: the edits its decisions call for, built and applied to the tree.

Per function: the stream calls that replace the log waits (laid out as the
originals were), the statements that attach a server's log and take stream
marks, the fixture parameter and the marker's decorator; `_apply` rewrites the
module with them and keeps comments and blank lines. docs/design.md, "The
codemod", has the stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .migrate_marker import _Marker
from .migrate_points import Points
from .migrate_reasons import FIXTURE, LOG_TIMEOUT, WAIT
from .migrate_records import _LogBinding, _Site
from .migrate_syntax import _libcst, _param_names, _py_str, _quote


class _Analysis(_Marker):
    """A module's whole analysis (walk, decisions, marker) and the edits it plans."""

    def __init__(self, wrapper: Any, points: Points | None) -> None:
        super().__init__(wrapper, points)
        self.converted: list[_Site] = []
        self.new_calls: dict[int, Any] = {}
        self.to_expr: set[int] = set()
        self.insert_after: dict[int, list[str]] = {}
        self.add_param: set[int] = set()

    def decide(self) -> None:
        """Decide every wait, then plan the edits of each function whose waits convert."""
        for host, sites in self._by_host():
            converted = self._convertible(host, sites)
            if not converted or self._try_marker(host, sites, converted):
                continue
            self.converted.extend(converted)
            if FIXTURE not in _param_names(host):
                self.add_param.add(id(host))
            for s in converted:
                self._plan_site(s)
            self._plan_marks_and_logs(host, converted)

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
