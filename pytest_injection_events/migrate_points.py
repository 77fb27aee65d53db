"""`--points`: which injection points are breakpoints, from a catalog, a node or the sources.

A pattern that is only the start of the framework's line ("NAME: wait") may
also be the start of a handler's own log line; the codemod converts it only
when the points say NAME is a breakpoint. docs/migration.md, rule 1, shows how.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .migrate_reasons import MigrateError
from .protocol import TOKEN_ENV

#: Directories no scan goes into (nor does the codemod when it looks for *.py).
_SKIP_DIRS = {"__pycache__", "site-packages", "node_modules"}


@dataclass
class Points:
    """Which injection points are breakpoints: from a catalog, a node, or a source tree."""

    source: str
    kinds: dict[str, set[str]] = field(default_factory=dict)

    def add(self, name: str, kind: str) -> None:
        self.kinds.setdefault(name, set()).add(kind)

    def kind(self, name: str) -> str | None:
        """'wait_for_message', 'handler', another kind, 'ambiguous', or None if unknown."""
        kinds = self.kinds.get(name)
        if not kinds:
            return None
        return next(iter(kinds)) if len(kinds) == 1 else "ambiguous"


_BREAKPOINT_KINDS = {"wait_for_message", "breakpoint"}
_SOURCE_SUFFIXES = (".cc", ".hh", ".cpp", ".hpp", ".cxx", ".h", ".py")
_SCAN = (
    # ScyllaDB: inject("NAME", utils::wait_for_message(...)) or wait_for_message{...}
    (re.compile(r'\binject\(\s*"([^"]+)"\s*,\s*(?:utils::)?wait_for_message\s*[({]'), "breakpoint"),
    # ScyllaDB: inject("NAME", [...] (auto& handler) ...) or (utils::injection_handler& handler)
    (
        re.compile(r'\binject\(\s*"([^"]+)"\s*,\s*\[[^\]]*\]\s*\(\s*[\w:]+\s*&\s*handler\s*\)'),
        "handler",
    ),
    # this package's injector
    (re.compile(r"""\binject_wait_for_message\(\s*["']([^"']+)["']"""), "breakpoint"),
    (re.compile(r"""\binject_handler\(\s*["']([^"']+)["']"""), "handler"),
    (re.compile(r"""\.declare\(\s*["']([^"']+)["']\s*,\s*["'](\w+)["']"""), None),
)

_ANY_INJECT = re.compile(r'\binject\(\s*"([^"]+)"')


def load_points(source: str, *, token: str | None = None) -> Points:
    """`--points SOURCE`: a catalog JSON file (as `/points` answers), a node's URL, or a
    directory of sources to scan for injection points (ScyllaDB's C++ or Python)."""
    if re.match(r"https?://", source):
        return _points_from_catalog(_fetch_points(source, token), source)
    path = Path(source)
    if path.is_dir():
        return _scan_points(path, source)
    if not path.is_file():
        raise MigrateError(f"--points {source}: no such file, directory or URL")
    try:
        catalog = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MigrateError(f"--points {source}: not a JSON catalog: {exc}") from None
    return _points_from_catalog(catalog, source)


def _fetch_points(url: str, token: str | None) -> Any:
    from .client import InjectionApi

    token = token or os.environ.get(TOKEN_ENV) or None

    async def fetch() -> Any:
        async with InjectionApi(url, token=token) as api:
            return await api.points()

    try:
        return asyncio.run(fetch())
    except Exception as exc:  # any failure to ask: say which and why
        raise MigrateError(f"--points {url}: cannot read the node's catalog: {exc}") from None


def _points_from_catalog(catalog: Any, source: str) -> Points:
    if not isinstance(catalog, list):
        raise MigrateError(f"--points {source}: expected a JSON array of points")
    points = Points(source)
    for item in catalog:
        if not (
            isinstance(item, dict)
            and isinstance(item.get("name"), str)
            and isinstance(item.get("type"), str)
        ):
            raise MigrateError(
                f'--points {source}: each point needs a string "name" and "type", got {item!r}'
            )
        points.add(item["name"], item["type"])
    return points


def _scan_points(root: Path, source: str) -> Points:
    points = Points(source)
    others: set[str] = set()
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
        for name in sorted(files):
            if not name.endswith(_SOURCE_SUFFIXES):
                continue
            try:
                text = Path(directory, name).read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            for regex, kind in _SCAN:
                for match in regex.finditer(text):
                    found = kind or match.group(2)
                    points.add(
                        match.group(1), "wait_for_message" if found == "breakpoint" else found
                    )
            others.update(m.group(1) for m in _ANY_INJECT.finditer(text))
    for name in others - set(points.kinds):
        points.add(name, "other")  # a lambda, sleep, exception or parameter point
    return points
