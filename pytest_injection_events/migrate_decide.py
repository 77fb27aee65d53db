"""The codemod's second stage: which log waits convert, and to what.

Per test or fixture function, from the walk's records: whether a wait can
request the fixture, which server its log belongs to (`node=`), whether its
mark can become a stream mark (`after=`), whether a result read later can be
kept, and whether it must leave its event to another wait (`consume=False`).
A wait that cannot convert gets its reason. docs/migration.md has the rules;
docs/design.md, "The codemod", the stages.
"""

from __future__ import annotations

from typing import Any

from .migrate_reasons import (
    FIXTURE,
    R_HOST,
    R_LAMBDA,
    R_LAYOUT,
    R_NAME_TAKEN,
    R_NOT_AWAITED,
    R_RESULT_USED,
    R_SCOPE,
    R_SYNC_IN_ASYNC,
    R_TUPLE_USED,
    R_UNITTEST,
    _r_log_rebound,
    _r_mark,
    _r_node_rebound,
    _r_receiver,
)
from .migrate_records import Pos, _Ctx, _LogBinding, _MarkBinding, _Site, _Store, _Use
from .migrate_syntax import _dotted, _fixture_scope, _is_pure, _names_in, _param_names
from .migrate_walk import _Walk


class _Decide(_Walk):
    """The decisions on the walk's records: each wait converts or gets its reason."""

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

    def _by_host(self) -> list[tuple[Any, list[_Site]]]:
        """The sites grouped by the function that gets the fixture for them; a site
        outside any such function gets its reason."""
        by_host: dict[int, tuple[Any, list[_Site]]] = {}
        for site in self.sites:
            host, why = self._host(site.ctx)
            if host is None:
                site.reason = site.reason or why
                continue
            site.host = host
            by_host.setdefault(id(host), (host, []))[1].append(site)
        return list(by_host.values())

    def _in_sync(self, ctx: _Ctx) -> bool:
        """Whether code at `ctx` runs in a plain `def` (no await there: the _sync twins)."""
        inner = self._inner_function(ctx)
        return inner is not None and inner.asynchronous is None

    def _inner_function(self, ctx: _Ctx) -> Any:
        return next((f for f in reversed(ctx.chain) if isinstance(f, self.c.FunctionDef)), None)

    def _convertible(self, host: Any, sites: list[_Site]) -> list[_Site]:
        """The sites of `host` that convert, their node=, after= and consume= settled;
        every other site gets its reason."""
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
        if converted:
            self._decide_consume(host, converted)
        return converted

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
