"""Codemod: turn log waits on injection lines into event-stream waits (SPEC §9).

Tests written against a ScyllaDB-style log browser learn that an injection point
was hit by tailing the server log::

    log = await manager.server_open_log(server.server_id)
    mark = await log.mark()
    ...
    mark, _ = await log.wait_for("my_injection: waiting for message", from_mark=mark)

This module rewrites such a wait into a wait on the ``injection_event_stream``
fixture (SPEC §8), which is pushed the event the instant the point is hit::

    await injection_event_stream.wait_for_injection("my_injection")

It only converts a site when the result means the same thing, and leaves every
other site exactly as it was, with a line in the report that says why. The
rules:

What a *site* is
    A call ``R.wait_for(...)`` whose receiver ``R`` is a server log (below), or
    any ``X.wait_for("...")`` whose first argument is a string literal (an
    unknown receiver is reported, not converted). Other ``wait_for`` calls
    (``asyncio.wait_for(coro, 5)``, ``condition.wait_for(predicate)``) are not
    sites and are not reported.

Which receivers are server logs
    ``R`` must be a plain name that is either bound, in the same function (or an
    enclosing one), by ``R = await <anything>.server_open_log(...)``, or is
    called ``log``, ``logfile``, ``log_file`` or ``server_log`` (a fixture or
    parameter holding one). Attributes (``self.log``) and subscripts
    (``logs[0]``) are refused: nothing ties them to a log.

Which patterns convert
    One pattern, a string literal or an f-string (implicit concatenation
    included), whose *literal* text starts with
    ``NAME: waiting`` (phase ``enter``, the default, so no argument) or
    ``NAME: message received`` (``phase="resume"``), NAME being
    ``[A-Za-z0-9_]+``. Anything after that text is dropped: the stream
    matches the injection by name and phase. An f-string converts when its
    literal part before the first ``{...}`` already holds name and phase
    (``f"my_injection: message received{x}"`` converts, the placeholder is
    dropped with the rest of the tail); ``f"{name}: waiting"`` is refused, as
    are a bare name (no phase), other text after ``NAME: ``, bytes, and any
    regex syntax in the name part or an alternation (``|``) or a quantifier
    right after the phase text.

Arguments
    Both signatures of ScyllaDB's log browser are understood:
    ``wait_for(pattern, from_mark=None, timeout=600)``, where from_mark and
    timeout may be positional, and ``wait_for(*patterns, from_mark=...,
    timeout=...)``. A second positional argument is taken for from_mark when
    it is ``None`` or a name that holds a mark (its name contains ``mark``, or
    it is bound by ``await log.mark()``); a second string is another pattern.
    ``timeout`` is kept as ``timeout=`` (note: without it the stream's default
    of 30 s applies, not the log browser's 600 s). ``from_mark=`` is dropped:
    the fixture's stream only sees events after it opened, and each wait
    consumes the event it returns, which is what threading a mark meant. A
    ``from_mark`` expression that might have side effects, any other keyword,
    ``*args``/``**kwargs`` or several patterns: refused.

The result
    A bare ``await log.wait_for(...)`` converts. ``mark, _ = await
    log.wait_for(...)`` (plain names only) becomes the bare await when none of
    the names is read later in the function: a read further down, anywhere in
    a loop around the call, or in a nested function counts; a read in the
    ``from_mark`` of another *converted* site does not, as that argument goes
    away too. Any other use of the result is refused: ``wait_for_injection``
    returns an event, not the ``(mark, matches)`` tuple.

The function
    The site must be inside a test function (``test*``) or a fixture
    (decorated ``@...fixture``), possibly through nested functions, or inside a
    function that already takes ``injection_event_stream``. That function gets
    the ``injection_event_stream`` parameter when at least one site in it was
    converted. Refused: unittest-style ``TestCase`` methods (they cannot take
    fixtures), fixtures with a scope wider than ``function`` (the stream
    fixture is function-scoped), and functions that already use the name
    ``injection_event_stream`` for something else (say, the client factory).

Soundness checks across a function
    - A function that uses several server logs (two log names, or one opened
      more than once or in a loop) is refused as a whole: the stream would not
      tell the servers apart. Convert it by hand with ``node=...``.
    - A second wait for the same injection and phase (or one in a loop) must
      pass a ``from_mark`` rebound since the previous wait; otherwise the log
      wait could match the same line again while the stream would wait for a
      new hit, so the site is refused.
    - A wait is refused when an earlier wait for the same injection and phase
      stays a log wait: the stream still holds the hit that log wait saw and
      would return it, where the log wait (after a newer mark) waited for the
      next one.

Clean-up
    ``mark = await log.mark()`` is removed when the conversion dropped its
    last use (a mark that was already unused stays). ``log = await
    X.server_open_log(...)`` is removed likewise when every use of ``log`` went
    away with the conversion and its arguments are plain names, attributes,
    subscripts or constants (no call that could matter); otherwise it stays.
    Comments on removed lines move to the next statement. A statement that is
    the only one in its block stays.

Everything else in the file is untouched (libcst keeps formatting and
comments); a file with nothing to convert comes back byte for byte, and a
second run changes nothing. Comments inside a converted call are kept (one on
a dropped ``from_mark`` line moves up a line); a site whose conversion would
lose one is refused instead. Directories are searched for ``*.py``, sorted,
skipping hidden directories, ``__pycache__``, ``site-packages``,
``node_modules`` and virtualenvs.
"""

from __future__ import annotations

import ast
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

__all__ = [
    "FileResult",
    "MigrateError",
    "Skipped",
    "migrate_paths",
    "migrate_source",
    "run_migrate",
]

FIXTURE = "injection_event_stream"
WAIT_METHOD = "wait_for_injection"
LOG_NAMES = frozenset({"log", "logfile", "log_file", "server_log"})
INSTALL_HINT = (
    "injection-events migrate needs libcst, which is an optional extra: "
    "pip install 'pytest-injection-events[migrate]'"
)

# Reasons a site is left as it is. Stable texts: users grep for them.
R_NOT_STRING = "pattern is not a string literal"
R_NO_PATTERN = "no pattern given"
R_SEVERAL = "waits for several patterns at once"
R_POSITIONAL = (
    "second positional argument is neither a pattern nor a mark; cannot tell whether it is "
    "from_mark or another pattern"
)
R_STARRED = "arguments are passed with * or **"
R_REGEX = "pattern is a regex, not a literal injection name"
R_NO_NAME = "pattern does not start with a literal injection name"
R_BARE_NAME = "pattern is only a name: no 'waiting' or 'message received' to tell the phase"
R_OTHER_TEXT = "text after 'NAME: ' is neither 'waiting...' nor 'message received'"
R_FROM_MARK = "from_mark is an expression that may have side effects"
R_NOT_AWAITED = "call is not awaited directly"
R_RESULT_USED = (
    "result is used directly; wait_for_injection returns an event, not a (mark, matches) tuple"
)
R_TUPLE_USED = "result tuple is used after the call"
R_TARGETS = "result is assigned to something other than plain names"
R_HOST = f"not inside a test or fixture function, so it cannot request the {FIXTURE} fixture"
R_SCOPE = f"a fixture with a scope wider than 'function' cannot request the {FIXTURE} fixture"
R_UNITTEST = "unittest-style test method: it cannot request pytest fixtures"
R_NAME_TAKEN = f"the function already uses the name '{FIXTURE}' for something else"
R_MULTI_LOG = (
    "the function uses several server logs; the event stream cannot tell which server "
    "an event came from"
)
R_COMMENT = "a comment inside the call would be lost"


def _r_kwarg(keyword: str) -> str:
    return f"unexpected argument '{keyword}'"


def _r_receiver(text: str) -> str:
    return (
        f"cannot tell that '{text}' is a server log (bind it from "
        "'await ....server_open_log(...)' or name it log, logfile, log_file or server_log)"
    )


def _r_repeat(name: str, phase: str) -> str:
    what = name if phase == "enter" else f"{name}' phase '{phase}"
    return (
        f"waits again for '{what}' without a newer from_mark: the log wait may match the "
        "same line again, the stream would wait for a new hit"
    )


def _r_overtake(name: str, phase: str) -> str:
    what = name if phase == "enter" else f"{name}' phase '{phase}"
    return (
        f"an earlier wait for '{what}' stays a log wait; the stream would return the hit "
        "that wait already saw"
    )


class MigrateError(ValueError):
    """Bad input for the codemod: a path that does not exist, a file that does not parse.

    A ValueError so callers can catch it without importing this module's names; its
    message is meant to be shown to the user as is.
    """


@dataclass(frozen=True)
class Skipped:
    """A site left unconverted, with the reason, for the user to convert by hand."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class FileResult:
    """What the codemod did to one file: the text before and after, and what it skipped."""

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


# --------------------------------------------------------------------------- libcst access


def _libcst() -> Any:
    """Import libcst on first use, so the rest of the package works without the extra."""
    try:
        import libcst
        import libcst.metadata  # the submodule must be loaded for c.metadata
    except ImportError as exc:
        raise MigrateError(INSTALL_HINT) from exc
    return libcst


# --------------------------------------------------------------------------- pattern analysis

_REGEX_META = set(".^$*+?{}[]\\|()")
_NAME_RE = re.compile(r"[A-Za-z0-9_]+")
_PHASES = (("waiting", "enter"), ("message received", "resume"))


def _literal_prefix(source: str) -> tuple[str, bool] | None:
    """Literal text of a string expression up to its first placeholder, and whether that is all.

    Uses Python's own parser so escapes, raw strings, ``{{`` and implicit
    concatenation mean exactly what they mean at run time. None for bytes.
    """
    try:
        node = ast.parse(f"({source})", mode="eval").body
    except SyntaxError:  # pragma: no cover - libcst parsed it already
        return None
    if isinstance(node, ast.Constant):
        return (node.value, True) if isinstance(node.value, str) else None
    if isinstance(node, ast.JoinedStr):
        text = []
        for part in node.values:
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                text.append(part.value)
            else:
                return "".join(text), False
        return "".join(text), True
    return None


def _parse_pattern(prefix: str, complete: bool) -> tuple[str, str] | str:
    """(injection name, phase) for a log pattern's literal text, or the reason it is refused."""
    if "|" in prefix:
        return R_REGEX
    m = _NAME_RE.match(prefix)
    if m is None:
        if not prefix and not complete:
            return R_NO_NAME
        if prefix and prefix[0] in _REGEX_META:
            return R_REGEX
        return R_NO_NAME
    name, rest = m.group(), prefix[m.end() :]
    if not rest:
        return R_BARE_NAME if complete else R_NO_NAME
    if rest[0] in _REGEX_META:
        return R_REGEX
    if not rest.startswith(": "):
        return R_OTHER_TEXT
    after = rest[2:]
    for text, phase in _PHASES:
        if after.startswith(text):
            tail = after[len(text) :]
            if tail and tail[0] in "?*+{":
                return R_REGEX
            if tail and (tail[0].isalnum() or tail[0] == "_"):
                return R_OTHER_TEXT
            return name, phase
    if not after and not complete:
        return R_OTHER_TEXT
    if after and after[0] in _REGEX_META:
        return R_REGEX
    return R_OTHER_TEXT


# --------------------------------------------------------------------------- tree helpers


def _has_comment(node: Any) -> bool:
    c = _libcst()
    if node is None or not isinstance(node, c.CSTNode):
        return False
    if isinstance(node, c.Comment):
        return True
    return any(_has_comment(child) for child in node.children)


def _dotted(node: Any) -> str | None:
    c = _libcst()
    if isinstance(node, c.Name):
        return node.value
    if isinstance(node, c.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr.value}"
    return None


def _is_pure(node: Any) -> bool:
    """True for expressions whose evaluation can be dropped: names, attributes, constants."""
    c = _libcst()
    if isinstance(node, (c.Name, c.Integer, c.Float, c.Imaginary, c.SimpleString)):
        return True
    if isinstance(node, c.Attribute):
        return _is_pure(node.value)
    if isinstance(node, c.Subscript):
        return _is_pure(node.value) and all(
            isinstance(el.slice, c.Index) and _is_pure(el.slice.value) for el in node.slice
        )
    if isinstance(node, c.UnaryOperation):
        return _is_pure(node.expression)
    return False


def _fixture_scope(func: Any) -> str | None:
    """None if ``func`` is not a fixture, else its scope ('?' when not a literal)."""
    c = _libcst()
    for dec in func.decorators:
        expr = dec.decorator.func if isinstance(dec.decorator, c.Call) else dec.decorator
        dotted = _dotted(expr)
        if dotted is None or dotted.split(".")[-1] != "fixture":
            continue
        if not isinstance(dec.decorator, c.Call):
            return "function"
        for arg in dec.decorator.args:
            if arg.keyword is not None and arg.keyword.value == "scope":
                value = arg.value
                if isinstance(value, c.SimpleString) and isinstance(value.evaluated_value, str):
                    return value.evaluated_value
                return "?"
        return "function"
    return None


def _param_names(func: Any) -> list[str]:
    c = _libcst()
    p = func.params
    names = [x.name.value for x in (*p.posonly_params, *p.params, *p.kwonly_params)]
    for extra in (p.star_arg, p.star_kwarg):
        if isinstance(extra, c.Param):
            names.append(extra.name.value)
    return names


def _awaited_method_call(node: Any, method: str) -> Any:
    """The Call in ``await X.method(...)``, else None."""
    c = _libcst()
    if not isinstance(node, c.Await):
        return None
    call = node.expression
    if (
        isinstance(call, c.Call)
        and isinstance(call.func, c.Attribute)
        and call.func.attr.value == method
    ):
        return call
    return None


# --------------------------------------------------------------------------- analysis records

Pos = tuple[int, int]


@dataclass(eq=False)
class _Ctx:
    """Where a node sits: functions and classes around it (outer first) and loops."""

    chain: tuple[Any, ...]
    loops: tuple[Any, ...]


@dataclass(eq=False)
class _Use:
    name: str
    node: Any
    start: Pos
    ctx: _Ctx


@dataclass(eq=False)
class _Store:
    name: str
    eff: Pos  # where the binding takes effect: after the whole assignment
    ctx: _Ctx


@dataclass(eq=False)
class _Site:
    call: Any
    line: int
    start: Pos
    ctx: _Ctx
    receiver: str | None = None
    receiver_node: Any = None
    is_log: bool = False
    string_arg: bool = False
    assign: Any = None  # the Assign statement whose value is this await
    assign_end: Pos | None = None
    targets: list[str] = field(default_factory=list)
    key: tuple[str, str] | None = None  # set when the site itself may convert
    keys: set[tuple[str, str]] = field(default_factory=set)  # what its patterns wait for
    from_mark_name: str | None = None
    dropped: set[int] = field(default_factory=set)  # ids of Name nodes the rewrite drops
    reason: str | None = None
    new_call: Any = None


@dataclass(eq=False)
class _Binding:
    """``N = await R.mark()`` or ``N = await X.server_open_log(...)``."""

    kind: str  # "mark" or "log"
    name: str
    stmt: Any  # the small statement
    line: Any  # its SimpleStatementLine, if removable
    block: Any  # the IndentedBlock holding that line
    eff: Pos
    ctx: _Ctx
    receiver: str | None = None
    receiver_node: Any = None
    pure: bool = False


@dataclass(eq=False)
class _Occurrence:
    key: tuple[str, str]
    start: Pos
    ctx: _Ctx


class _Analysis:
    """One pass over a module collecting sites, bindings and name uses, then the decisions."""

    def __init__(self, wrapper: Any) -> None:
        c = _libcst()
        self.c = c
        self.module = wrapper.module
        self.pos = wrapper.resolve(c.metadata.PositionProvider)
        self.exprctx = wrapper.resolve(c.metadata.ExpressionContextProvider)
        self.sites: list[_Site] = []
        self.bindings: list[_Binding] = []
        self.uses: list[_Use] = []
        self.stores: list[_Store] = []
        self.occurrences: list[_Occurrence] = []
        self.declared: list[tuple[str, _Ctx]] = []  # global / nonlocal names
        self.fixture_refs: list[_Ctx] = []  # uses of the name injection_event_stream
        self.keyword_ids: set[int] = set()
        # decisions
        self.converted: list[_Site] = []
        self.remove_stmts: set[int] = set()
        self.add_param: set[int] = set()

    # ----------------------------------------------------------------- walk

    def start(self, node: Any) -> Pos:
        p = self.pos[node].start
        return (p.line, p.column)

    def end(self, node: Any) -> Pos:
        p = self.pos[node].end
        return (p.line, p.column)

    def walk(self) -> None:
        self._walk(self.module, [], _Ctx((), ()))

    def _walk(self, node: Any, parents: list[Any], ctx: _Ctx) -> None:
        c = self.c
        self._visit(node, parents, ctx)
        inner = ctx
        if isinstance(node, (c.FunctionDef, c.ClassDef, c.Lambda)):
            inner = _Ctx((*ctx.chain, node), ctx.loops)
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
        elif isinstance(node, (c.Global, c.Nonlocal)):
            for item in node.names:
                self.declared.append((item.name.value, ctx))
        elif isinstance(node, c.Name):
            self._visit_name(node, parents, ctx)
        elif isinstance(node, c.Call) and isinstance(node.func, c.Attribute):
            attr = node.func.attr.value
            if attr == "wait_for":
                self._visit_wait_for(node, parents, ctx)
            elif attr == WAIT_METHOD and _dotted(node.func.value) == FIXTURE:
                self._visit_stream_wait(node, ctx)
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
            self.stores.append(_Store(node.value, eff, ctx))
        else:  # LOAD and DEL both read the current binding
            self.uses.append(_Use(node.value, node, self.start(node), ctx))

    def _visit_stream_wait(self, call: Any, ctx: _Ctx) -> None:
        """An already converted wait: it consumes events, so it counts for the repeat rule."""
        c = self.c
        if not call.args or not isinstance(call.args[0].value, c.SimpleString):
            return
        name = call.args[0].value.evaluated_value
        phase: Any = "enter"
        for arg in call.args[1:]:
            if arg.keyword is not None and arg.keyword.value == "phase":
                phase = arg.value.evaluated_value if isinstance(arg.value, c.SimpleString) else None
        if isinstance(name, str) and isinstance(phase, str):
            self.occurrences.append(_Occurrence((name, phase), self.start(call), ctx))

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
        mark_call = _awaited_method_call(node.value, "mark")
        log_call = _awaited_method_call(node.value, "server_open_log")
        if mark_call is not None and not mark_call.args:
            kind, call = "mark", mark_call
        elif log_call is not None:
            kind, call = "log", log_call
        else:
            return
        line = parents[-1] if parents else None
        block = parents[-2] if len(parents) > 1 else None
        if not isinstance(line, c.SimpleStatementLine) or not isinstance(block, c.IndentedBlock):
            line = block = None
        binding = _Binding(kind, target.value, node, line, block, self.end(node), ctx)
        receiver = call.func.value
        if isinstance(receiver, c.Name):
            binding.receiver, binding.receiver_node = receiver.value, receiver
        if kind == "log":
            binding.pure = _is_pure(receiver) and all(
                not arg.star and _is_pure(arg.value) for arg in call.args
            )
        self.bindings.append(binding)

    def _visit_wait_for(self, call: Any, parents: list[Any], ctx: _Ctx) -> None:
        c = self.c
        receiver = call.func.value
        site = _Site(call, self.start(call)[0], self.start(call), ctx)
        if isinstance(receiver, c.Name):
            site.receiver, site.receiver_node = receiver.value, receiver
        first = call.args[0].value if call.args else None
        site.string_arg = isinstance(
            first, (c.SimpleString, c.FormattedString, c.ConcatenatedString)
        )
        if site.receiver is None:
            if site.string_arg:  # looks like a log wait on something we cannot identify
                site.reason = _r_receiver(self._short(receiver))
                self.sites.append(site)
            return
        self.sites.append(site)  # whether the name is a log is settled in decide()
        site.keys = self._keys(call)
        # how the result is used
        parent = parents[-1] if parents else None
        if not isinstance(parent, c.Await):
            site.reason = R_NOT_AWAITED
            return
        holder = parents[-2] if len(parents) > 1 else None
        if isinstance(holder, c.Assign) and holder.value is parent:
            site.assign = holder
            site.assign_end = self.end(holder)
            for t in holder.targets:
                names = self._target_names(t.target)
                if names is None:
                    site.reason = R_TARGETS
                    return
                site.targets.extend(names)
        elif not (isinstance(holder, c.Expr) and holder.value is parent):
            site.reason = R_RESULT_USED
            return
        self._check_args(site)

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

    def _looks_like_mark(self, node: Any) -> bool:
        """A positional second argument that is a mark: None, or a name that holds one."""
        c = self.c
        if not isinstance(node, c.Name):
            return False
        if node.value == "None" or "mark" in node.value.lower():
            return True
        return any(b.kind == "mark" and b.name == node.value for b in self.bindings)

    def _keys(self, call: Any) -> set[tuple[str, str]]:
        """(injection, phase) of each literal pattern of a log wait, whatever else it does."""
        c = self.c
        keys = set()
        for arg in call.args:
            if arg.keyword is None and not arg.star and isinstance(arg.value, c.BaseString):
                lit = _literal_prefix(self.module.code_for_node(arg.value))
                parsed = None if lit is None else _parse_pattern(*lit)
                if isinstance(parsed, tuple):
                    keys.add(parsed)
        return keys

    def _short(self, node: Any) -> str:
        text = " ".join(self.module.code_for_node(node).split())
        return text if len(text) <= 40 else text[:37] + "..."

    def _check_args(self, site: _Site) -> None:
        """Validate the call's arguments and pattern; on success prepare the new call."""
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
        if len(extra) > 2 or any(isinstance(a.value, c.BaseString) for a in extra):
            site.reason = R_SEVERAL
            return
        # ScyllaDB's classic signature: wait_for(pattern, from_mark=None, timeout=600)
        from_mark = extra[0] if extra else None
        timeout = extra[1] if len(extra) > 1 else None
        if from_mark is not None and not self._looks_like_mark(from_mark.value):
            site.reason = R_POSITIONAL
            return
        for a in args[len(positional) :]:
            kw = a.keyword.value
            if kw == "from_mark" and from_mark is None:
                from_mark = a
            elif kw == "timeout" and timeout is None:
                timeout = a
            else:
                site.reason = _r_kwarg(kw)
                return
        value = args[0].value
        if not isinstance(value, (c.SimpleString, c.FormattedString, c.ConcatenatedString)):
            site.reason = R_NOT_STRING
            return
        lit = _literal_prefix(self.module.code_for_node(value))
        if lit is None:
            site.reason = R_NOT_STRING
            return
        parsed = _parse_pattern(*lit)
        if isinstance(parsed, str):
            site.reason = parsed
            return
        site.key = parsed
        if from_mark is not None:
            if not (_is_pure(from_mark.value) or _dotted(from_mark.value) == "None"):
                site.reason = R_FROM_MARK
                return
            if isinstance(from_mark.value, c.Name):
                site.from_mark_name = from_mark.value.value
            site.dropped = {id(n) for n in _names_in(from_mark.value)}
        new_call = _rewrite_call(site.call, parsed[0], parsed[1], value, from_mark, timeout)
        if new_call is None:
            site.reason = R_COMMENT
            return
        if site.assign is not None and any(_has_comment(t) for t in site.assign.targets):
            site.reason = R_COMMENT
            return
        site.new_call = new_call

    # ----------------------------------------------------------------- decisions

    def _host(self, ctx: _Ctx) -> tuple[Any, str | None]:
        """The function that gets (or has) the fixture parameter for code at ``ctx``."""
        c = self.c
        chain = ctx.chain
        for i in range(len(chain) - 1, -1, -1):
            node = chain[i]
            if not isinstance(node, c.FunctionDef):
                break  # a class body or a lambda: no closure we can rely on
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
        """Functions and lambdas between ``host`` and the code at ``ctx``."""
        for i, f in enumerate(ctx.chain):
            if f is host:
                return ctx.chain[i + 1 :]
        return ctx.chain

    def _later_use(self, use: _Use, eff: Pos, ctx: _Ctx, host: Any) -> bool:
        """Whether ``use`` may read the binding made at ``eff`` (conservative: True if unsure)."""
        use_scopes = set(map(id, self._nested_below(use.ctx, host)))
        bind_scopes = set(map(id, self._nested_below(ctx, host)))
        if use_scopes != bind_scopes:
            return True  # a nested function or lambda: it may run at any time
        if use.start >= eff:
            return True
        return bool(set(map(id, use.ctx.loops)) & set(map(id, ctx.loops)))

    def _uses_after(self, name: str, eff: Pos, ctx: _Ctx, host: Any) -> list[_Use]:
        return [
            u
            for u in self.uses
            if u.name == name and self._inside(u.ctx, host) and self._later_use(u, eff, ctx, host)
        ]

    def _declared(self, name: str, host: Any) -> bool:
        return any(n == name and self._inside(ctx, host) for n, ctx in self.declared)

    def decide(self) -> None:
        hosts: dict[int, Any] = {}
        by_host: dict[int, list[_Site]] = {}
        sites = []
        for site in self.sites:
            if site.receiver is not None:
                site.is_log = self._log_names(site)
                if not site.is_log:
                    if not site.string_arg:
                        continue  # asyncio.wait_for(...), Condition.wait_for(...): not a site
                    site.reason = _r_receiver(site.receiver)
            sites.append(site)
            host, why = self._host(site.ctx)
            if site.reason is None and host is None:
                site.reason = why
            if host is not None and site.is_log:
                hosts[id(host)] = host
                by_host.setdefault(id(host), []).append(site)
        self.sites = sites
        for key, log_sites in by_host.items():
            self._decide_host(hosts[key], log_sites)

    def _log_names(self, site: _Site) -> bool:
        """Whether the site's receiver is tied to a server log (see the module docstring)."""
        return self._is_log_name(site.receiver, site.ctx)

    def _is_log_name(self, name: str | None, ctx: _Ctx) -> bool:
        if name is None:
            return False
        if name in LOG_NAMES:
            return True
        region = next((f for f in ctx.chain if isinstance(f, self.c.FunctionDef)), None)
        return region is not None and any(
            b.kind == "log" and b.name == name and self._inside(b.ctx, region)
            for b in self.bindings
        )

    def _decide_host(self, host: Any, log_sites: list[_Site]) -> None:
        bindings = [
            b
            for b in self.bindings
            if self._inside(b.ctx, host)
            and (b.kind == "log" or self._is_log_name(b.receiver, b.ctx))
        ]
        open_logs = [b for b in bindings if b.kind == "log"]
        log_names = {s.receiver for s in log_sites}
        log_names |= {b.name for b in open_logs}
        log_names |= {b.receiver for b in bindings if b.kind == "mark"}
        several = len(log_names) > 1 or len(open_logs) > 1 or any(b.ctx.loops for b in open_logs)
        has_param = FIXTURE in _param_names(host)
        taken = not has_param and any(self._inside(ctx, host) for ctx in self.fixture_refs)
        for s in log_sites:
            if s.reason is None and several:
                s.reason = R_MULTI_LOG
            elif s.reason is None and taken:
                s.reason = R_NAME_TAKEN
        occurrences = [_Occurrence(k, s.start, s.ctx) for s in log_sites for k in s.keys]
        occurrences += [o for o in self.occurrences if self._inside(o.ctx, host)]
        for s in log_sites:
            if s.reason is None:
                s.reason = self._repeat_reason(s, occurrences, host)
        candidates = [s for s in log_sites if s.reason is None]
        # Refusing a site can make another unsafe, so iterate until nothing changes:
        # a refused site keeps its from_mark (which may read another site's result), and
        # it stays a log wait, which a later stream wait for the same point would overtake.
        changed = True
        while changed:
            changed = False
            for s in candidates:
                s.reason = self._result_reason(s, candidates, host) or self._overtake_reason(
                    s, candidates, log_sites
                )
                if s.reason is not None:
                    candidates.remove(s)
                    changed = True
                    break
        if not candidates:
            return
        self.converted.extend(candidates)
        if not has_param:
            self.add_param.add(id(host))
        self._clean_up(host, candidates, bindings)

    def _result_reason(self, site: _Site, candidates: list[_Site], host: Any) -> str | None:
        """Refuse a site whose (mark, matches) result is read later."""
        if site.assign is None:
            return None
        dropped = set().union(*(s.dropped for s in candidates))
        for name in site.targets:
            if self._declared(name, host) or any(
                id(u.node) not in dropped
                for u in self._uses_after(name, site.assign_end, site.ctx, host)
            ):
                return R_TUPLE_USED
        return None

    def _overtake_reason(
        self, site: _Site, candidates: list[_Site], log_sites: list[_Site]
    ) -> str | None:
        """Refuse a site that would consume the event an earlier, unconverted log wait saw."""
        assert site.key is not None
        loops = {id(loop) for loop in site.ctx.loops}
        for other in log_sites:
            if other is site or other in candidates or site.key not in other.keys:
                continue
            if other.start < site.start or {id(x) for x in other.ctx.loops} & loops:
                return _r_overtake(*site.key)
        return None

    def _repeat_reason(self, site: _Site, occurrences: list[_Occurrence], host: Any) -> str | None:
        """Refuse a wait that the log could satisfy with the line an earlier wait matched."""
        same = [o for o in occurrences if o.key == site.key and o.start != site.start]
        earlier = [o for o in same if o.start < site.start]
        loops = {id(loop) for loop in site.ctx.loops}
        in_loop = [o for o in same if {id(x) for x in o.ctx.loops} & loops]
        if not earlier and not loops:
            return None
        assert site.key is not None
        refuse = _r_repeat(*site.key)
        name = site.from_mark_name
        if name is None or in_loop:
            return refuse
        stores = [s for s in self.stores if s.name == name and self._inside(s.ctx, host)]
        if earlier:
            last = max(o.start for o in earlier)
            if not any(last < s.eff <= site.start for s in stores):
                return refuse
        if loops:
            innermost = site.ctx.loops[-1]
            if not any(any(x is innermost for x in s.ctx.loops) for s in stores):
                return refuse
        return None

    def _clean_up(self, host: Any, converted: list[_Site], bindings: list[_Binding]) -> None:
        """Drop marks and log openings whose last use went away with the conversion."""
        dropped = set().union(*(s.dropped for s in converted))
        gone_receivers = {id(s.receiver_node) for s in converted}
        remaining_in_block: dict[int, int] = {}
        for b in bindings:
            if b.block is not None:
                remaining_in_block.setdefault(id(b.block), len(b.block.body))

        def removable(b: _Binding, gone: set[int]) -> bool:
            if b.line is None or len(b.line.body) != 1 or self._declared(b.name, host):
                return False
            uses = self._uses_after(b.name, b.eff, b.ctx, host)
            lost = [u for u in uses if id(u.node) in gone]
            kept = [u for u in uses if id(u.node) not in gone]
            if not lost or kept:
                return False
            if remaining_in_block[id(b.block)] <= 1:
                return False  # never empty a block
            remaining_in_block[id(b.block)] -= 1
            return True

        for b in bindings:
            if b.kind == "mark" and removable(b, dropped):
                self.remove_stmts.add(id(b.line))
                if b.receiver_node is not None:
                    gone_receivers.add(id(b.receiver_node))
        for b in bindings:
            if b.kind == "log" and b.pure and removable(b, gone_receivers):
                self.remove_stmts.add(id(b.line))


def _names_in(node: Any) -> Iterator[Any]:
    c = _libcst()
    if isinstance(node, c.Name):
        yield node
    for child in node.children:
        yield from _names_in(child)


# --------------------------------------------------------------------------- rewriting


def _quote_of(value: Any) -> str:
    c = _libcst()
    while isinstance(value, c.ConcatenatedString):
        value = value.left
    if isinstance(value, c.SimpleString):
        return value.quote[0]
    return value.quote[0] if isinstance(value, c.FormattedString) else '"'


def _rewrite_call(
    call: Any, name: str, phase: str, pattern: Any, from_mark: Any, timeout: Any
) -> Any:
    """``log.wait_for(PATTERN, from_mark=m, timeout=t)`` -> the stream call, or None.

    ``from_mark`` (an Arg or None) is dropped; ``timeout`` (an Arg or None) is
    passed as ``timeout=`` even when it was positional. None means a comment
    inside the call would be lost (the site is refused then).
    """
    c = _libcst()
    if _has_comment(pattern) or _has_comment(call.func):
        return None
    q = _quote_of(pattern)
    args = list(call.args)
    args[0] = args[0].with_changes(value=c.SimpleString(f"{q}{name}{q}"))
    if timeout is not None and timeout.keyword is None:
        args[args.index(timeout)] = timeout.with_changes(
            keyword=c.Name("timeout"),
            equal=c.AssignEqual(
                whitespace_before=c.SimpleWhitespace(""), whitespace_after=c.SimpleWhitespace("")
            ),
        )
    k = 1
    while k < len(args):
        arg = args[k]
        if arg is not from_mark:
            k += 1
            continue
        prev = args[k - 1]
        body_has_comment = any(_has_comment(x) for x in (arg.keyword, arg.equal, arg.value))
        if body_has_comment:
            return None
        if k == len(args) - 1:  # last: prev takes over the closing comma and whitespace
            if _has_comment(prev.comma) or _has_comment(prev.whitespace_after_arg):
                return None
            args[k - 1] = prev.with_changes(
                comma=arg.comma, whitespace_after_arg=arg.whitespace_after_arg
            )
        elif not _has_comment(arg.comma) and not _has_comment(arg.whitespace_after_arg):
            pass  # drop it with its comma; prev keeps its own
        elif not _has_comment(prev.comma):
            args[k - 1] = prev.with_changes(comma=arg.comma)
        else:
            return None
        del args[k]
    if phase != "enter":
        args.insert(1, _phase_arg(call, args[0], phase, q))
        args[0] = _before_phase(call, args[0])
    func = c.Attribute(
        value=c.Name(FIXTURE),
        attr=c.Name(WAIT_METHOD),
        dot=call.func.dot,
        lpar=call.func.lpar,
        rpar=call.func.rpar,
    )
    return call.with_changes(func=func, args=args)


def _clean_break(ws: Any) -> Any:
    """A line break to the same indentation as ``ws``, without its comment or blank lines."""
    c = _libcst()
    return c.ParenthesizedWhitespace(
        first_line=c.TrailingWhitespace(),
        empty_lines=[],
        indent=ws.indent,
        last_line=ws.last_line,
    )


def _phase_arg(call: Any, first: Any, phase: str, quote: str) -> Any:
    """``phase="resume"``, placed where the argument after the pattern would go."""
    c = _libcst()
    comma = first.comma
    after = first.whitespace_after_arg
    if isinstance(comma, c.Comma) and isinstance(comma.whitespace_after, c.ParenthesizedWhitespace):
        # the pattern's comment stays on the pattern's line; this one leads where it led
        comma = comma.with_changes(whitespace_after=_clean_break(comma.whitespace_after))
        after = c.SimpleWhitespace("")
    return c.Arg(
        keyword=c.Name("phase"),
        equal=c.AssignEqual(
            whitespace_before=c.SimpleWhitespace(""), whitespace_after=c.SimpleWhitespace("")
        ),
        value=c.SimpleString(f"{quote}{phase}{quote}"),
        comma=comma,
        whitespace_after_arg=after,
    )


def _before_phase(call: Any, first: Any) -> Any:
    """The pattern argument, its comma now leading to the inserted ``phase=`` argument."""
    c = _libcst()
    lead = call.whitespace_before_args
    comma = first.comma
    if isinstance(comma, c.Comma) and isinstance(comma.whitespace_after, c.ParenthesizedWhitespace):
        ws = comma.whitespace_after
        indent = lead if isinstance(lead, c.ParenthesizedWhitespace) else ws
        ws = ws.with_changes(indent=indent.indent, last_line=indent.last_line)
        return first.with_changes(comma=comma.with_changes(whitespace_after=ws))
    if isinstance(lead, c.ParenthesizedWhitespace):
        sep: Any = _clean_break(lead)
    else:
        sep = c.SimpleWhitespace(" ")
    return first.with_changes(
        comma=c.Comma(whitespace_after=sep), whitespace_after_arg=c.SimpleWhitespace("")
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
    return _clean_break(lead)


def _add_param(func: Any) -> Any:
    """``func``'s parameters plus the fixture, without a default, where pytest fills it in.

    After the last plain parameter without a default (before any with one), or as
    keyword-only after ``*``/``*args``; the layout (one line or one per line) is kept.
    """
    c = _libcst()
    params = func.params
    sep = _param_sep(func)
    new = c.Param(name=c.Name(FIXTURE))
    changes: dict[str, Any] = {}
    if isinstance(params.star_arg, (c.Param, c.ParamStar)):
        seq_field, seq = "kwonly_params", list(params.kwonly_params)
        index = len(seq)
        prev_field = "kwonly_params" if index else "star_arg"
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
    new_calls = {id(s.call): s.new_call for s in analysis.converted}
    to_expr = {id(s.assign) for s in analysis.converted if s.assign is not None}
    remove = analysis.remove_stmts
    add_param = analysis.add_param

    class Apply(c.CSTTransformer):  # defined here: libcst is imported lazily
        def leave_Call(self, original: Any, updated: Any) -> Any:
            new = new_calls.get(id(original))
            if new is None:
                return updated
            # arguments of the rewritten call hold no further sites: use the prepared call
            return new

        def leave_Assign(self, original: Any, updated: Any) -> Any:
            if id(original) in to_expr:
                return c.Expr(value=updated.value, semicolon=updated.semicolon)
            return updated

        def leave_FunctionDef(self, original: Any, updated: Any) -> Any:
            if id(original) in add_param:
                return updated.with_changes(params=_add_param(updated))
            return updated

        def leave_IndentedBlock(self, original: Any, updated: Any) -> Any:
            if not any(id(o) in remove for o in original.body):
                return updated
            body: list[Any] = []
            carried: list[Any] = []
            for o, u in zip(original.body, updated.body, strict=True):
                if id(o) in remove:
                    carried.extend(u.leading_lines)
                    comment = u.trailing_whitespace.comment
                    if comment is not None:
                        carried.append(c.EmptyLine(comment=comment))
                    continue
                if carried:
                    u = u.with_changes(leading_lines=_merge_lines(carried, u.leading_lines))
                    carried = []
                body.append(u)
            footer = updated.footer
            if carried:
                footer = [*carried, *footer]
            return updated.with_changes(body=body, footer=footer)

    return analysis.module.visit(Apply())


def _merge_lines(first: list[Any], second: Sequence[Any]) -> list[Any]:
    """Concatenate leading lines without doubling a blank line at the junction."""
    if first and second and first[-1].comment is None and second[0].comment is None:
        return [*first, *second[1:]]
    return [*first, *second]


# --------------------------------------------------------------------------- public API


def migrate_source(source: str, path: str = "<string>") -> FileResult:
    """Convert the log waits of one module's source; raise MigrateError if it does not parse.

    Python's own parser checks the whole file (fast); libcst, which is slow on big
    files, only sees the top-level statements (functions, classes) that mention
    ``wait_for``. Everything else is passed through as text, byte for byte.
    """
    c = _libcst()
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        where = f" (line {err.lineno})" if err.lineno else ""
        raise MigrateError(f"{path}: cannot parse: {err.msg}{where}") from None
    except ValueError as err:  # a null byte
        raise MigrateError(f"{path}: cannot parse: {err}") from None
    if not _MENTIONS_WAIT_FOR.search(source):
        return FileResult(path, source, source, 0, [])
    parts: list[str] = []
    converted = 0
    skipped: list[Skipped] = []
    for first_line, text in _top_level_chunks(source, tree):
        if not _MENTIONS_WAIT_FOR.search(text):
            parts.append(text)
            continue
        try:
            module = c.parse_module(text)
        except c.ParserSyntaxError as exc:
            msg = str(exc.message).removeprefix("parser error: ")
            raise MigrateError(f"{path}: cannot parse: {msg}") from None
        analysis = _Analysis(c.metadata.MetadataWrapper(module, unsafe_skip_copy=True))
        analysis.walk()
        analysis.decide()
        offset = first_line - 1
        skipped += [
            Skipped(path, s.line + offset, s.reason) for s in analysis.sites if s.reason is not None
        ]
        if analysis.converted:
            parts.append(_apply(analysis).code)
            converted += len(analysis.converted)
        else:
            parts.append(text)
    skipped.sort(key=lambda s: (s.line, s.reason))
    migrated = "".join(parts)
    if converted and not _parses(migrated):  # pragma: no cover - a bug of ours
        bug = "internal error: the conversion did not parse; please report it"
        return FileResult(path, source, source, 0, [*skipped, Skipped(path, 1, bug)])
    return FileResult(path, source, migrated, converted, skipped)


_MENTIONS_WAIT_FOR = re.compile(r"\bwait_for\b")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def _top_level_chunks(source: str, tree: ast.Module) -> list[tuple[int, str]]:
    """The source cut, at line starts, into pieces each holding whole top-level statements.

    Returns (first line, text) pairs whose texts join back into ``source`` exactly,
    so a piece can be parsed, rewritten and put back on its own.
    """
    lines = _LINE.findall(source)
    starts = [1]
    end = 0
    for stmt in tree.body:
        first = min([stmt.lineno, *(d.lineno for d in getattr(stmt, "decorator_list", ()))])
        if first > end and first > starts[-1]:
            starts.append(first)
        end = max(end, stmt.end_lineno or stmt.lineno)
    chunks = []
    for i, first in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else len(lines) + 1
        chunks.append((first, "".join(lines[first - 1 : stop - 1])))
    if "".join(text for _, text in chunks) != source:  # pragma: no cover - defensive
        return [(1, source)]
    return chunks


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


_SKIP_DIRS = {"__pycache__", "site-packages", "node_modules"}


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


def _migrate_file(path: Path) -> tuple[FileResult, str]:
    text, encoding = _read(path)
    return migrate_source(text, str(path)), encoding


def migrate_paths(paths: Sequence[str | os.PathLike[str]]) -> list[FileResult]:
    """Convert files and directories (recursing into *.py, sorted); nothing is written.

    Raises MigrateError, with a message naming the path, for a path that does not
    exist (before doing any work) or a file that cannot be read or parsed.
    """
    _libcst()
    files: list[Path] = []
    for item in _expand(paths):
        if isinstance(item, MigrateError):
            raise item
        files.append(item)
    return [_migrate_file(f)[0] for f in files]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def run_migrate(
    paths: Sequence[str],
    *,
    write: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """The ``injection-events migrate`` command: diff (default) or write, then a summary.

    Prints a unified diff of every file that would change (or writes them when
    ``write``), then every site left unconverted as ``path:line: reason`` and a
    one-line summary. Errors (a missing path, a file that does not parse) are
    reported on ``err`` (default: ``out``) and the other files are still done.
    Returns 0, also when some sites were skipped, or 2 when any input was bad or
    libcst is not installed.
    """
    out = sys.stdout if out is None else out
    err = out if err is None else err
    try:
        _libcst()
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
            result, encoding = _migrate_file(item)
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
                print(f"wrote {item} ({_plural(result.converted, 'site')} converted)", file=err)
        elif result.changed:
            out.write(result.diff())
        results.append(result)
    skipped = [s for r in results for s in r.skipped]
    for s in skipped:
        print(s, file=err)
    converted = sum(r.converted for r in results)
    files = sum(1 for r in results if r.changed)
    summary = f"{_plural(converted, 'site')} converted in {_plural(files, 'file')}"
    if skipped:
        summary += f", {_plural(len(skipped), 'site')} left as is (listed above)"
    if not write and files:
        summary += "; dry run, nothing written (use --write to apply)"
    print(summary, file=err)
    return status
