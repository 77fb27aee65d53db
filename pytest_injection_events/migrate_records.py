"""What the codemod's walk records about a module, for its later stages to read and annotate.

A `_Site` is one `log.wait_for(...)` call; the bindings are where a server's
log is opened and where a mark is taken on it; the uses and stores of every
name let the decisions tell which binding a later read sees. The stages are in
docs/design.md, "The codemod".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .logfile import FrameworkPattern

Pos = tuple[int, int]


@dataclass(eq=False)
class _Ctx:
    """Where a node sits: the functions, lambdas and classes around it (outer first), loops."""

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
    node: Any
    eff: Pos  # where the binding takes effect: after the whole assignment
    ctx: _Ctx


@dataclass(eq=False)
class _LogBinding:
    """`L = await M.server_open_log(S.server_id)` (node S), or `L = [... for s in SERVERS]`."""

    name: str
    node: Any | None  # the server expression; for a list: the iterable of servers
    per_server: bool
    line: Any
    block: Any
    eff: Pos
    ctx: _Ctx
    awaited: bool
    keyed: bool = False  # {s: log of s for s in SERVERS}: L[s] is the log of s


@dataclass(eq=False)
class _MarkBinding:
    name: str
    receiver: Any
    call: Any
    line: Any
    eff: Pos
    start: Pos
    ctx: _Ctx
    awaited: bool
    node_code: str | None = None


@dataclass(eq=False)
class _Site:
    call: Any
    line: int
    start: Pos
    ctx: _Ctx
    host: Any = None
    usage: str = "await"  # "await", "gather" or "sync"
    stmt_line: Any = None  # the SimpleStatementLine holding the site, when a statement
    block: Any = None
    assign: Any = None
    assign_end: Pos | None = None
    targets: list[str] = field(default_factory=list)
    pattern: FrameworkPattern | None = None
    node_code: str | None = None
    log_bindings: list[_LogBinding] = field(default_factory=list)
    from_mark: Any = None  # the Arg
    mark_name: str | None = None
    timeout: Any = None  # the Arg
    reason: str | None = None
    remark: bool = False  # `mark, _ = await log.wait_for(...)` with mark read later
    marks: list[_MarkBinding] = field(default_factory=list)  # log.mark() its after= reads
    consume: bool = True
