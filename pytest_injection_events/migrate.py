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

This module is what callers use: `migrate_source`, `migrate_paths`,
`run_migrate` (the command) and their results. The work is done in stages, a
module each, `migrate_walk` -> `migrate_decide` -> `migrate_marker` ->
`migrate_build`, on the helpers of `migrate_records`, `migrate_syntax`,
`migrate_points` and `migrate_reasons` (docs/design.md, "The codemod").
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
from typing import TextIO

from .migrate_build import _Analysis, _apply
from .migrate_points import _SKIP_DIRS, Points, load_points
from .migrate_reasons import MigrateError
from .migrate_syntax import _libcst

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
