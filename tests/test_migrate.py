"""Tests of the log-wait codemod (SPEC §9): conversions, refusals, and the migrate command.

The samples in tests/migrate_samples/ are realistic ScyllaDB-style test modules
(``NAME.input.txt``) with the reviewed result of the codemod (``NAME.expected.txt``).
They are .txt so that neither pytest nor ruff treats them as project code.
"""

from __future__ import annotations

import ast
import functools
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("libcst")

from pytest_injection_events.migrate import (
    FileResult,
    MigrateError,
    Skipped,
    migrate_paths,
    migrate_source,
    run_migrate,
)

SAMPLES = Path(__file__).parent / "migrate_samples"
SAMPLE_NAMES = sorted(p.name.removesuffix(".input.txt") for p in SAMPLES.glob("*.input.txt"))
CONVERTED = {"basic": 4, "comments": 7, "fstrings": 5, "partial": 1, "refusals": 1, "threaded": 2}


def sample(name: str, kind: str = "input") -> str:
    return (SAMPLES / f"{name}.{kind}.txt").read_text(encoding="utf-8")


@functools.cache
def migrated(name: str) -> FileResult:
    """The codemod's result for a sample (cached: several tests look at the same one)."""
    return migrate_source(sample(name), f"{name}.py")


def test_every_sample_has_an_expected_count() -> None:
    assert sorted(CONVERTED) == SAMPLE_NAMES


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_sample_converts_to_expected(name: str) -> None:
    result = migrated(name)
    assert result.migrated == sample(name, "expected")
    assert result.converted == CONVERTED[name]
    ast.parse(result.migrated)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_second_run_changes_nothing(name: str) -> None:
    once = migrated(name)
    twice = migrate_source(once.migrated, f"{name}.py")
    assert twice.migrated == once.migrated
    assert twice.converted == 0
    assert not twice.changed
    # what was refused the first time is refused again, for the same reason
    assert [s.reason for s in twice.skipped] == [s.reason for s in once.skipped]


def test_refusals_are_listed_with_line_and_reason() -> None:
    result = migrated("refusals")
    regex = "pattern is a regex, not a literal injection name"
    not_string = "pattern is not a string literal"
    several_logs = (
        "the function uses several server logs; the event stream cannot tell which server "
        "an event came from"
    )
    comment = "a comment inside the call would be lost"
    expected = {
        10: regex,
        11: regex,
        12: regex,
        17: "pattern does not start with a literal injection name",
        18: not_string,
        19: not_string,
        23: "pattern is only a name: no 'waiting' or 'message received' to tell the phase",
        24: "text after 'NAME: ' is neither 'waiting...' nor 'message received'",
        25: "text after 'NAME: ' is neither 'waiting...' nor 'message received'",
        26: not_string,
        30: "waits for several patterns at once",
        31: "arguments are passed with * or **",
        32: "from_mark is an expression that may have side effects",
        33: "unexpected argument 'poll'",
        37: "result tuple is used after the call",
        39: "result is used directly; wait_for_injection returns an event, "
        "not a (mark, matches) tuple",
        43: "call is not awaited directly",
        48: "cannot tell that 'browser' is a server log (bind it from "
        "'await ....server_open_log(...)' or name it log, logfile, log_file or server_log)",
        49: "cannot tell that 'self.log' is a server log (bind it from "
        "'await ....server_open_log(...)' or name it log, logfile, log_file or server_log)",
        54: "not inside a test or fixture function, so it cannot request the "
        "injection_event_stream fixture",
        60: "unittest-style test method: it cannot request pytest fixtures",
        66: several_logs,
        67: several_logs,
        73: "waits again for 'a' without a newer from_mark: the log wait may match the same "
        "line again, the stream would wait for a new hit",
        78: "waits again for 'a' without a newer from_mark: the log wait may match the same "
        "line again, the stream would wait for a new hit",
        83: "the function already uses the name 'injection_event_stream' for something else",
        89: comment,
        93: comment,
    }
    assert {s.line: s.reason for s in result.skipped} == expected
    assert all(s.path == "refusals.py" for s in result.skipped)
    assert [s.line for s in result.skipped] == sorted(expected)


def test_refused_sites_are_left_byte_for_byte() -> None:
    source = sample("refusals")
    result = migrated("refusals")
    original_lines = source.splitlines()
    migrated_lines = result.migrated.splitlines()
    assert len(original_lines) == len(migrated_lines)  # only test_repeat's lines change
    for s in result.skipped:
        assert migrated_lines[s.line - 1] == original_lines[s.line - 1]


def test_issue_example_keeps_log_for_the_unconverted_wait() -> None:
    result = migrated("partial")
    first_test = result.migrated.split("async def test_mark_still")[0]
    assert 'await injection_event_stream.wait_for_injection("my_injection")' in first_test
    assert "mark = await log.mark()" not in first_test
    assert "log = await manager.server_open_log(server.server_id)" in first_test
    assert Skipped("partial.py", 12, "pattern does not start with a literal injection name") in (
        result.skipped
    )


def test_skipped_prints_as_path_line_reason() -> None:
    assert str(Skipped("tests/a.py", 7, "why")) == "tests/a.py:7: why"


# ----------------------------------------------------------------------------- patterns

TEMPLATE = """\
async def test_x(manager, log):
    await log.wait_for({pattern})
"""


@pytest.mark.parametrize(
    ("pattern", "call"),
    [
        ('"my_injection: waiting for message"', '("my_injection")'),
        ('"my_injection: waiting"', '("my_injection")'),
        ("'my_injection: waiting for message'", "('my_injection')"),
        ('"my_injection: message received"', '("my_injection", phase="resume")'),
        ('f"my_injection: waiting"', '("my_injection")'),
        ('f"my_injection: message received{x}"', '("my_injection", phase="resume")'),
        ('f"my_injection: waiting for message {shard}"', '("my_injection")'),
        ('r"my_injection: waiting"', '("my_injection")'),
        ('"my_injection: waiting for message.*"', '("my_injection")'),
        ('"my_injection: " "waiting"', '("my_injection")'),
        ('"Inject_2: waiting"', '("Inject_2")'),
    ],
)
def test_pattern_converts(pattern: str, call: str) -> None:
    result = migrate_source(TEMPLATE.format(pattern=pattern))
    assert result.skipped == []
    assert result.converted == 1
    assert f"await injection_event_stream.wait_for_injection{call}\n" in result.migrated


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ('"my_.*: waiting"', "pattern is a regex, not a literal injection name"),
        ('"my_injection\\\\: waiting"', "pattern is a regex, not a literal injection name"),
        ('"(?i)my_injection: waiting"', "pattern is a regex, not a literal injection name"),
        ('"my_injection: waiting?"', "pattern is a regex, not a literal injection name"),
        ('"a: waiting|b: waiting"', "pattern is a regex, not a literal injection name"),
        ('f"{name}: waiting"', "pattern does not start with a literal injection name"),
        ('f"my_{kind}: waiting"', "pattern does not start with a literal injection name"),
        (
            'f"my_injection: {phase}"',
            "text after 'NAME: ' is neither 'waiting...' nor 'message received'",
        ),
        (
            '"my_injection:waiting"',
            "text after 'NAME: ' is neither 'waiting...' nor 'message received'",
        ),
        (
            '"my_injection: waitingroom"',
            "text after 'NAME: ' is neither 'waiting...' nor 'message received'",
        ),
        (
            '"my_injection: message"',
            "text after 'NAME: ' is neither 'waiting...' nor 'message received'",
        ),
        (
            '"my_injection"',
            "pattern is only a name: no 'waiting' or 'message received' to tell the phase",
        ),
        ('" my_injection: waiting"', "pattern does not start with a literal injection name"),
        ('b"my_injection: waiting"', "pattern is not a string literal"),
        ("PATTERN", "pattern is not a string literal"),
        ('"a: waiting" + suffix', "pattern is not a string literal"),
        ("", "no pattern given"),
    ],
)
def test_pattern_refused(pattern: str, reason: str) -> None:
    source = TEMPLATE.format(pattern=pattern)
    result = migrate_source(source)
    assert result.migrated == source
    assert result.converted == 0
    assert [(s.line, s.reason) for s in result.skipped] == [(2, reason)]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ('"a: waiting", mark', '("a")'),
        ('"a: waiting", mark, 30', '("a", timeout=30)'),
        ('"a: message received", mark, 30', '("a", phase="resume", timeout=30)'),
        ('"a: waiting", None, timeout=5', '("a", timeout=5)'),
        ('"a: waiting", start_mark', '("a")'),
        ('"a: waiting", from_mark=mark, timeout=1.5', '("a", timeout=1.5)'),
        ('"a: waiting", timeout=T, from_mark=mark', '("a", timeout=T)'),
    ],
)
def test_classic_signature_with_positional_mark_and_timeout(args: str, expected: str) -> None:
    """ScyllaDB's wait_for(pattern, from_mark=None, timeout=600), as many tests call it."""
    result = migrate_source(TEMPLATE.format(pattern=args))
    assert result.skipped == []
    assert f"await injection_event_stream.wait_for_injection{expected}\n" in result.migrated


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ('"a: waiting", "b: waiting"', "waits for several patterns at once"),
        ('"a: waiting", mark, 30, 1', "waits for several patterns at once"),
        (
            '"a: waiting", other',
            "second positional argument is neither a pattern nor a mark; cannot tell whether "
            "it is from_mark or another pattern",
        ),
        ('"a: waiting", mark, from_mark=mark', "unexpected argument 'from_mark'"),
    ],
)
def test_ambiguous_positional_arguments_are_refused(args: str, reason: str) -> None:
    result = migrate_source(TEMPLATE.format(pattern=args))
    assert [s.reason for s in result.skipped] == [reason]
    assert not result.changed


def test_positional_mark_bound_by_log_mark_is_dropped_with_its_statement() -> None:
    source = (
        "async def test_x(log):\n"
        "    m = await log.mark()\n"
        "    await restart()\n"
        '    await log.wait_for("a: waiting", m, 60)\n'
    )
    assert migrate_source(source).migrated == (
        "async def test_x(log, injection_event_stream):\n"
        "    await restart()\n"
        '    await injection_event_stream.wait_for_injection("a", timeout=60)\n'
    )


# ----------------------------------------------------------------------------- results and marks


def convert(body: str, params: str = "manager, log") -> FileResult:
    return migrate_source(f"async def test_x({params}):\n{body}")


def test_unused_tuple_result_becomes_a_bare_await() -> None:
    result = convert('    mark, _ = await log.wait_for("a: waiting")\n    await done()\n')
    assert result.migrated == (
        "async def test_x(manager, log, injection_event_stream):\n"
        '    await injection_event_stream.wait_for_injection("a")\n'
        "    await done()\n"
    )


def test_tuple_result_used_later_is_refused() -> None:
    body = (
        '    mark, _ = await log.wait_for("a: waiting")\n    await log.grep("b", from_mark=mark)\n'
    )
    result = convert(body)
    assert not result.changed
    assert [s.reason for s in result.skipped] == ["result tuple is used after the call"]


def test_underscore_read_later_counts_as_use() -> None:
    result = convert('    _, matches = await log.wait_for("a: waiting")\n    print(_)\n')
    assert [s.reason for s in result.skipped] == ["result tuple is used after the call"]


def test_single_name_result_unused_is_dropped() -> None:
    result = convert('    res = await log.wait_for("a: waiting", timeout=5)\n')
    assert 'await injection_event_stream.wait_for_injection("a", timeout=5)\n' in result.migrated
    assert "res" not in result.migrated


def test_result_read_in_nested_function_counts_as_use() -> None:
    body = (
        "    def later():\n"
        "        return mark\n"
        '    mark, _ = await log.wait_for("a: waiting")\n'
        "    later()\n"
    )
    assert [s.reason for s in convert(body).skipped] == ["result tuple is used after the call"]


def test_mark_used_elsewhere_is_kept() -> None:
    body = (
        "    mark = await log.mark()\n"
        '    await log.wait_for("a: waiting", from_mark=mark)\n'
        '    assert not await log.grep("error", from_mark=mark)\n'
    )
    result = convert(body)
    assert result.converted == 1
    assert "    mark = await log.mark()\n" in result.migrated


def test_mark_unused_before_conversion_is_not_touched() -> None:
    body = '    mark = await log.mark()\n    await log.wait_for("a: waiting")\n'
    result = convert(body)
    assert result.converted == 1
    assert "    mark = await log.mark()\n" in result.migrated


def test_from_mark_dropped_and_mark_removed() -> None:
    body = (
        "    mark = await log.mark()  # where we are\n"
        "    await enable()\n"
        '    await log.wait_for("a: waiting", from_mark=mark, timeout=10)\n'
    )
    assert convert(body).migrated == (
        "async def test_x(manager, log, injection_event_stream):\n"
        "    # where we are\n"
        "    await enable()\n"
        '    await injection_event_stream.wait_for_injection("a", timeout=10)\n'
    )


def test_log_opening_removed_only_when_unused_and_plain() -> None:
    body = (
        "    log = await manager.server_open_log(server.server_id)\n"
        '    await log.wait_for("a: waiting")\n'
    )
    result = convert(body, "manager, server")
    assert "server_open_log" not in result.migrated
    body = (
        "    log = await manager.server_open_log((await manager.running_servers())[0].server_id)\n"
        '    await log.wait_for("a: waiting")\n'
    )
    result = convert(body, "manager")
    assert result.converted == 1
    assert "server_open_log" in result.migrated  # its argument awaits: kept


def test_statement_alone_in_its_block_is_kept() -> None:
    body = (
        "    if True:\n"
        "        mark = await log.mark()\n"
        '    await log.wait_for("a: waiting", from_mark=mark)\n'
    )
    result = convert(body)
    assert result.converted == 1
    assert "        mark = await log.mark()\n" in result.migrated
    ast.parse(result.migrated)


def test_several_waits_on_one_log() -> None:
    body = (
        "    mark = await log.mark()\n"
        '    await log.wait_for("a: waiting", from_mark=mark)\n'
        '    await log.wait_for("b: waiting", from_mark=mark)\n'
        '    await log.wait_for("a: message received", from_mark=mark)\n'
        '    mark, _ = await log.wait_for("b: message received", from_mark=mark)\n'
        '    await log.wait_for("b: message received", from_mark=mark)\n'
    )
    result = convert(body)
    assert result.converted == 5
    assert result.skipped == []
    assert "mark" not in result.migrated


def test_existing_stream_waits_count_for_repeats() -> None:
    body = (
        '    await injection_event_stream.wait_for_injection("a")\n'
        '    await log.wait_for("a: waiting")\n'
    )
    result = convert(body, "log, injection_event_stream")
    assert not result.changed
    assert "waits again for 'a'" in result.skipped[0].reason


def test_wait_after_an_unconverted_wait_for_the_same_point_is_refused() -> None:
    body = (
        "    mark = await log.mark()\n"
        '    await asyncio.wait_for(log.wait_for("a: waiting", from_mark=mark), 5)\n'
        "    mark = await log.mark()\n"
        '    await log.wait_for("a: waiting", from_mark=mark)\n'
        '    await log.wait_for("b: waiting", from_mark=mark)\n'
    )
    result = convert(body)
    assert [(s.line, s.reason) for s in result.skipped] == [
        (3, "call is not awaited directly"),
        (
            5,
            "an earlier wait for 'a' stays a log wait; the stream would return the hit "
            "that wait already saw",
        ),
    ]
    assert result.converted == 1  # the wait for 'b'
    assert migrate_source(result.migrated).migrated == result.migrated


def test_refusal_cascades_through_a_threaded_mark() -> None:
    body = (
        "    mark = await log.mark()\n"
        '    mark, _ = await log.wait_for("a: waiting", from_mark=mark)\n'
        '    mark, _ = await log.wait_for("b: waiting", from_mark=mark)\n'
        '    await log.wait_for("c: waiting", "d: waiting", from_mark=mark)\n'
    )
    result = convert(body)
    # the last site cannot convert, so it needs the mark of the one before, and so on
    assert [(s.line, s.reason) for s in result.skipped] == [
        (3, "result tuple is used after the call"),
        (4, "result tuple is used after the call"),
        (5, "waits for several patterns at once"),
    ]
    assert not result.changed


def test_unknown_wait_for_calls_are_not_sites() -> None:
    source = (
        "async def test_x(cond):\n"
        "    await asyncio.wait_for(work(), timeout=5)\n"
        "    await cond.wait_for(lambda: ready)\n"
    )
    result = migrate_source(source)
    assert result.skipped == []
    assert result.migrated == source


def test_file_without_sites_is_returned_unchanged() -> None:
    source = "# just a module\r\nx = 1  \n\n\ndef f():\n    return   x\n"
    result = migrate_source(source)
    assert result.migrated == source
    assert result.converted == 0
    assert not result.changed
    assert result.diff() == ""


def test_statements_are_rewritten_in_place_with_absolute_line_numbers() -> None:
    """Only top-level statements that mention wait_for go through libcst; the rest is text."""
    source = (
        '"""Module doc."""\r\n'
        "x = (1,\r\n     2); y = 3\r\n"
        "\r\n"
        "@pytest.mark.slow\r\n"
        "async def test_a(log):\r\n"
        "    await log.wait_for('a: waiting')\r\n"
        "# between\r\n"
        "def helper():  # untouched\r\n"
        "    return  1\r\n"
        "async def test_b(log):\r\n"
        "    await log.wait_for(pattern)"
    )
    result = migrate_source(source, "m.py")
    assert result.migrated == source.replace(
        "test_a(log)", "test_a(log, injection_event_stream)"
    ).replace("log.wait_for('a: waiting')", "injection_event_stream.wait_for_injection('a')")
    assert result.skipped == [Skipped("m.py", 12, "pattern is not a string literal")]


def test_crlf_line_endings_are_kept() -> None:
    source = 'async def test_x(log):\r\n    await log.wait_for("a: waiting")\r\n'
    assert migrate_source(source).migrated == (
        "async def test_x(log, injection_event_stream):\r\n"
        '    await injection_event_stream.wait_for_injection("a")\r\n'
    )


@pytest.mark.parametrize(
    ("signature", "expected"),
    [
        ("()", "(injection_event_stream)"),
        ("(log)", "(log, injection_event_stream)"),
        ("(log, n=1)", "(log, injection_event_stream, n=1)"),
        ("(n=1)", "(injection_event_stream, n=1)"),
        ("(log, *args)", "(log, *args, injection_event_stream)"),
        ("(log, *, n=1)", "(log, *, n=1, injection_event_stream)"),
        ("(**kw)", "(injection_event_stream, **kw)"),
        ("(log, /)", "(log, /, injection_event_stream)"),
        ("(\n    log,\n)", "(\n    log,\n    injection_event_stream,\n)"),
        ("(\n    log\n)", "(\n    log,\n    injection_event_stream\n)"),
        ("(self,\n           log)", "(self,\n           log,\n           injection_event_stream)"),
    ],
)
def test_parameter_added_in_the_signature_style(signature: str, expected: str) -> None:
    source = f'async def test_x{signature}:\n    await log.wait_for("a: waiting")\n'
    result = migrate_source(source)
    assert result.migrated.startswith(f"async def test_x{expected}:\n"), result.migrated
    ast.parse(result.migrated)


@pytest.mark.parametrize(
    ("decorator", "converts"),
    [
        ("@pytest.fixture", True),
        ("@pytest.fixture(autouse=True)", True),
        ('@pytest_asyncio.fixture(scope="function")', True),
        ('@pytest.fixture(scope="module")', False),
        ("@pytest.fixture(scope=SCOPE)", False),
        ("@pytest.mark.slow", False),
    ],
)
def test_fixtures_take_the_stream_only_when_function_scoped(decorator: str, converts: bool) -> None:
    source = f'{decorator}\nasync def paused(log):\n    await log.wait_for("a: waiting")\n'
    result = migrate_source(source)
    assert result.changed is converts
    if not converts:
        assert "fixture" in result.skipped[0].reason


def test_unparseable_source_raises_a_clear_error() -> None:
    with pytest.raises(MigrateError, match=r"^bad\.py: cannot parse: .*\(line 2\)$"):
        migrate_source("x = 1\ndef f(:\n", "bad.py")
    assert issubclass(MigrateError, ValueError)


# ----------------------------------------------------------------------------- files and command


TREE_SAMPLES = ("basic", "refusals", "threaded")  # enough for the file-level tests


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A directory with copies of a few samples as .py files, plus things to ignore."""
    root = tmp_path / "tests"
    (root / "sub").mkdir(parents=True)
    for name in TREE_SAMPLES:
        target = root / ("sub" if name == "threaded" else ".") / f"test_{name}.py"
        shutil.copyfile(SAMPLES / f"{name}.input.txt", target)
    (root / ".hidden").mkdir()
    (root / ".hidden" / "test_skip.py").write_text(sample("basic"))
    (root / "notes.txt").write_text(sample("basic"))
    return root


def test_migrate_paths_recurses_sorted_and_writes_nothing(tree: Path) -> None:
    before = {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()}
    results = migrate_paths([tree])
    names = [Path(r.path).relative_to(tree).as_posix() for r in results]
    top = sorted(f"test_{n}.py" for n in TREE_SAMPLES if n != "threaded")
    assert names == [*top, "sub/test_threaded.py"]
    assert {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()} == before
    by_name = {Path(r.path).stem.removeprefix("test_"): r for r in results}
    for name in TREE_SAMPLES:
        assert by_name[name].migrated == sample(name, "expected")


def test_migrate_paths_bad_path_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    with pytest.raises(MigrateError, match=r"nope\.py: no such file or directory"):
        migrate_paths([missing])


def test_run_migrate_write(tree: Path) -> None:
    out = io.StringIO()
    assert run_migrate([str(tree)], write=True, out=out) == 0
    for name in TREE_SAMPLES:
        path = tree / ("sub" if name == "threaded" else ".") / f"test_{name}.py"
        assert path.read_text() == sample(name, "expected")
    assert (tree / ".hidden" / "test_skip.py").read_text() == sample("basic")
    text = out.getvalue()
    total = sum(CONVERTED[n] for n in TREE_SAMPLES)
    assert f"{total} sites converted in {len(TREE_SAMPLES)} files" in text
    assert "---" not in text  # no diff when writing
    refused = tree / "test_refusals.py"
    assert f"{refused}:10: pattern is a regex, not a literal injection name\n" in text
    # a second run finds nothing left to do, and still lists what it cannot do
    out = io.StringIO()
    assert run_migrate([str(tree)], write=True, out=out) == 0
    assert "0 sites converted in 0 files" in out.getvalue()
    assert f"{refused}:10: pattern is a regex" in out.getvalue()


def test_run_migrate_dry_run_prints_a_diff(tmp_path: Path) -> None:
    path = tmp_path / "test_basic.py"
    shutil.copyfile(SAMPLES / "basic.input.txt", path)
    out = io.StringIO()
    assert run_migrate([str(path)], out=out) == 0
    assert path.read_text() == sample("basic")  # nothing written
    text = out.getvalue()
    assert text.startswith(f"--- {path}\n+++ {path}\n@@ ")
    assert (
        '-    mark, _ = await log.wait_for("kv_write_before_apply: waiting for message", '
        "from_mark=mark)\n"
        '+    await injection_event_stream.wait_for_injection("kv_write_before_apply")\n'
    ) in text
    assert "-    mark = await log.mark()\n" in text
    assert text.endswith(
        "4 sites converted in 1 file; dry run, nothing written (use --write to apply)\n"
    )


def test_run_migrate_diff_applies_as_a_patch(tmp_path: Path) -> None:
    """The dry-run diff, minus the summary, turns the input into the expected output."""
    path = tmp_path / "test_comments.py"
    shutil.copyfile(SAMPLES / "comments.input.txt", path)
    out = io.StringIO()
    run_migrate([str(path)], out=out, err=io.StringIO())
    patched = _apply_unified_diff(sample("comments"), out.getvalue())
    assert patched == sample("comments", "expected")


def _apply_unified_diff(text: str, diff: str) -> str:
    """A minimal patch(1) for one-file diffs, enough to check ours round-trip."""
    old = text.splitlines(keepends=True)
    new: list[str] = []
    pos = 0
    lines = diff.splitlines(keepends=True)[2:]
    for line in lines:
        if line.startswith("@@"):
            start = int(line.split()[1].split(",")[0][1:]) - 1
            new.extend(old[pos:start])
            pos = start
        elif line.startswith(" "):
            new.append(old[pos])
            pos += 1
        elif line.startswith("-"):
            pos += 1
        elif line.startswith("+"):
            new.append(line[1:])
    new.extend(old[pos:])
    return "".join(new)


def test_run_migrate_bad_inputs_exit_2_and_go_on(tmp_path: Path) -> None:
    good = tmp_path / "test_good.py"
    good.write_text(sample("threaded"))
    broken = tmp_path / "test_broken.py"
    broken.write_text("async def test_x(log):\n    await log.wait_for('a: waiting'\n")
    missing = tmp_path / "test_missing.py"
    out = io.StringIO()
    err = io.StringIO()
    status = run_migrate([str(missing), str(broken), str(good)], write=True, out=out, err=err)
    assert status == 2
    messages = err.getvalue()
    assert f"error: {missing}: no such file or directory\n" in messages
    assert f"error: {broken}: cannot parse: " in messages
    assert "Traceback" not in messages
    assert good.read_text() == sample("threaded", "expected")  # the good file was still done
    assert "2 sites converted in 1 file" in messages


def test_run_migrate_keeps_encoding_and_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "test_latin.py"
    source = (
        "# -*- coding: latin-1 -*-\r\n"
        "async def test_x(log):\r\n"
        '    """Caf\xe9."""\r\n'
        '    await log.wait_for("a: waiting")\r\n'
    )
    path.write_bytes(source.encode("latin-1"))
    assert run_migrate([str(path)], write=True, out=io.StringIO()) == 0
    assert path.read_bytes() == (
        "# -*- coding: latin-1 -*-\r\n"
        "async def test_x(log, injection_event_stream):\r\n"
        '    """Caf\xe9."""\r\n'
        '    await injection_event_stream.wait_for_injection("a")\r\n'
    ).encode("latin-1")


def test_run_migrate_without_libcst_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "libcst", None)  # makes `import libcst` fail
    out = io.StringIO()
    assert run_migrate([str(tmp_path)], out=out) == 2
    assert "pip install 'pytest-injection-events[migrate]'" in out.getvalue()


def test_command_line_prints_the_diff_on_stdout_and_the_report_on_stderr(tmp_path: Path) -> None:
    """`injection-events migrate tests/ > fix.patch` gives a clean patch."""
    target = tmp_path / "test_sample.py"
    shutil.copy(SAMPLES / "partial.input.txt", target)
    before = target.read_text()
    command = [sys.executable, "-m", "pytest_injection_events.cli", "migrate", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("---") and "+++" in result.stdout
    assert "converted" in result.stderr and "converted" not in result.stdout
    assert target.read_text() == before  # a dry run by default

    written = subprocess.run([*command, "--write"], capture_output=True, text=True, check=False)
    assert written.returncode == 0, written.stderr
    assert target.read_text() == (SAMPLES / "partial.expected.txt").read_text()
    missing = subprocess.run(
        [*command[:-1], str(tmp_path / "nope")], capture_output=True, text=True, check=False
    )
    assert missing.returncode == 2 and "nope" in missing.stderr
