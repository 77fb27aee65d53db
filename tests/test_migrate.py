"""Tests of the log-wait codemod: what converts, what is refused, and the command.

The samples in tests/migrate_samples/ are test modules written the way ScyllaDB's
cluster tests are (`NAME.input.txt`), with the reviewed result of the codemod
(`NAME.expected.txt`) and the waits it lists as left alone (`NAME.report.txt`).
They are .txt so that neither pytest nor ruff treats them as project code.
"""

from __future__ import annotations

import functools
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

libcst = pytest.importorskip("libcst")

from pytest_injection_events.migrate import (  # noqa: E402
    FileResult,
    MigrateError,
    Points,
    Skipped,
    load_points,
    migrate_paths,
    migrate_source,
    run_migrate,
)
from pytest_injection_events.node import FakeNode  # noqa: E402

SAMPLES = Path(__file__).parent / "migrate_samples"
SAMPLE_NAMES = sorted(p.name.removesuffix(".input.txt") for p in SAMPLES.glob("*.input.txt"))
CONVERTED = {"cluster": 11, "marker": 5, "points": 3, "refusals": 0, "sync": 2, "syntax312": 2}
CATALOG = SAMPLES / "points.json"
SOURCE_TREE = SAMPLES / "points_src"


def sample(name: str, kind: str = "input") -> str:
    return (SAMPLES / f"{name}.{kind}.txt").read_text(encoding="utf-8")


def points_for(name: str) -> Points | None:
    return load_points(str(CATALOG)) if name == "points" else None


@functools.cache
def migrated(name: str) -> FileResult:
    """The codemod's result for a sample (cached: several tests look at the same one)."""
    return migrate_source(sample(name), f"{name}.py", points_for(name))


def convert(body: str, params: str = "manager", points: Points | None = None) -> FileResult:
    source = f"async def test_x({params}):\n" + "".join(
        f"    {line}\n" for line in body.splitlines()
    )
    return migrate_source(source, "t.py", points)


OPEN = "s = (await manager.servers_add(1))[0]\nlog = await manager.server_open_log(s.server_id)\n"

# ----------------------------------------------------------------------------- samples


def test_every_sample_has_an_expected_count() -> None:
    assert sorted(CONVERTED) == SAMPLE_NAMES


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_sample_converts_to_expected(name: str) -> None:
    result = migrated(name)
    assert result.migrated == sample(name, "expected")
    assert "".join(f"{s}\n" for s in result.skipped) == sample(name, "report")
    assert result.converted == CONVERTED[name]
    libcst.parse_module(result.migrated)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_second_run_changes_nothing(name: str) -> None:
    once = migrated(name)
    twice = migrate_source(once.migrated, f"{name}.py", points_for(name))
    assert twice.migrated == once.migrated
    assert twice.converted == 0
    assert [s.reason for s in twice.skipped] == [s.reason for s in once.skipped]


_LOG_WAIT = re.compile(r"(?<!asyncio)(?<!condition)\.wait_for\(")


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_every_log_wait_is_converted_or_listed(name: str) -> None:
    """None is skipped silently: each `X.wait_for(` on a log is converted or reported."""
    result = migrated(name)
    before = len(_LOG_WAIT.findall(result.original))
    after = len(_LOG_WAIT.findall(result.migrated))
    assert before == result.converted + len(result.skipped)
    assert after == len(result.skipped)
    lines = result.original.splitlines()
    for skipped in result.skipped:
        assert ".wait_for(" in lines[skipped.line - 1]


def test_3_12_syntax_does_not_parse_with_every_python_but_converts() -> None:
    """The samples use `type X = ...`, PEP 695 generics and 3.12 f-string nesting; the
    codemod reads them with libcst's parser, whatever Python runs it."""
    import ast

    text = sample("syntax312")
    if sys.version_info < (3, 12):
        with pytest.raises(SyntaxError):
            ast.parse(text)
    assert migrated("syntax312").converted == 2
    assert "type ServerList = list[Any]" in migrated("syntax312").migrated


# ----------------------------------------------------------------------------- framework lines


@pytest.mark.parametrize(
    ("pattern", "call"),
    [
        ("p: waiting for message", '"p", node=s, timeout=600'),
        ("p: message received", '"p", phase="resume", node=s, timeout=600'),
        ("p: message received$", '"p", phase="resume", node=s, timeout=600'),
        ("raft/apply-entry: waiting for message", '"raft/apply-entry", node=s, timeout=600'),
        ("a\\\\.b: waiting for message", '"a.b", node=s, timeout=600'),
        ('Triggering injection \\"p\\"', '"p", node=s, timeout=600'),
        ('Triggering exception injection \\"p\\"', '"p", node=s, timeout=600'),
        ('Enabling injection one-shot  \\"p\\"', '"p", phase="enable", node=s, timeout=600'),
        ('Disabling injection \\"p\\"', '"p", phase="disable", node=s, timeout=600'),
    ],
)
def test_framework_lines_convert(pattern: str, call: str) -> None:
    result = convert(OPEN + f'await log.wait_for("{pattern}")')
    assert f"await injection_event_stream.wait_for_injection({call})" in result.migrated
    assert result.skipped == []


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("some_task: waiting for peers", "is not an injection framework line"),
        ("X: waiting for something else", "is not an injection framework line"),
        ("p: waiting", "pass --points to confirm p is a breakpoint"),
        ("raft/apply-entry: waiting", "pass --points to confirm raft/apply-entry is a breakpoint"),
        ("p: message", "pass --points to confirm p is a breakpoint"),
        ("p", "is not an injection framework line"),
        ("p: waiting$", "is not an injection framework line"),
        ("kv_.*: waiting for message", "pattern is a regex"),
        ("(a|b): waiting for message", "pattern is a regex"),
        ("Disabling all injections", "names no injection"),
        ("Injected value \\\\[1\\\\] for parameter \\\\[k\\\\], injection \\\\[p\\\\]", "a value"),
    ],
)
def test_other_lines_are_refused_with_the_reason(pattern: str, reason: str) -> None:
    result = convert(OPEN + f'await log.wait_for("{pattern}")')
    assert not result.changed
    [skipped] = result.skipped
    assert reason in skipped.reason, skipped.reason
    assert skipped.line == 4


def test_with_points_a_prefix_converts_only_for_a_breakpoint() -> None:
    points = load_points(str(CATALOG))
    result = convert(
        OPEN + 'await log.wait_for("stream_tablet_before_send: waiting")\n'
        'await log.wait_for("block_tablet_streaming: waiting")\n'
        'await log.wait_for("storage_service_drop_ack: waiting")\n'
        'await log.wait_for("unknown_point: waiting")',
        points=points,
    )
    assert result.converted == 1
    assert 'wait_for_injection("stream_tablet_before_send", node=s' in result.migrated
    reasons = [s.reason for s in result.skipped]
    assert "is not an injection framework line" in reasons[0]
    assert "as a handler" in reasons[0] and "handler's own log line" in reasons[0]
    assert "storage_service_drop_ack is a lambda point" in reasons[1]
    assert "unknown_point is not listed" in reasons[2]


def test_with_points_a_name_that_is_the_end_of_another_is_refused() -> None:
    """`write: waiting for message` also matches `kv_write: waiting for message`."""
    points = Points("catalog", {"write": {"wait_for_message"}, "kv_write": {"wait_for_message"}})
    result = convert(OPEN + 'await log.wait_for("write: waiting for message")', points=points)
    assert not result.changed
    assert "also matches the lines of kv_write" in result.skipped[0].reason


# ----------------------------------------------------------------------------- node, mark, timeout


def test_the_node_is_the_server_the_log_was_opened_for() -> None:
    result = convert(
        "servers = await manager.servers_add(3)\n"
        "log = await manager.server_open_log(servers[2].server_id)\n"
        'await log.wait_for("p: waiting for message")'
    )
    assert "await injection_event_stream.add_node(servers[2], log=log)\n" in result.migrated
    assert 'wait_for_injection("p", node=servers[2], timeout=600)' in result.migrated


def test_the_mark_is_kept_as_a_stream_mark() -> None:
    result = convert(
        OPEN + "mark = await log.mark()\n"
        'await log.wait_for("p: waiting for message", from_mark=mark, timeout=30)'
    )
    assert "    mark = await injection_event_stream.mark(s)\n" in result.migrated
    assert 'wait_for_injection("p", node=s, after=mark, timeout=30)' in result.migrated


def test_positional_mark_and_timeout_are_kept() -> None:
    result = convert(
        OPEN + 'mark = await log.mark()\nawait log.wait_for("p: message received", mark, 5)'
    )
    assert 'wait_for_injection("p", phase="resume", node=s, after=mark, timeout=5)' in (
        result.migrated
    )


def test_a_mark_from_the_result_is_taken_again_after_the_wait() -> None:
    result = convert(
        OPEN + "mark = await log.mark()\n"
        'mark, _ = await log.wait_for("p: waiting for message", from_mark=mark)\n'
        'await log.wait_for("p: message received", from_mark=mark)'
    )
    assert result.migrated.endswith(
        '    await injection_event_stream.wait_for_injection("p", node=s, after=mark, '
        "timeout=600)\n"
        "    mark = await injection_event_stream.mark(s)\n"
        '    await injection_event_stream.wait_for_injection("p", phase="resume", node=s, '
        "after=mark, timeout=600)\n"
    )


def test_matches_read_later_are_refused_and_an_unused_result_dropped() -> None:
    result = convert(
        OPEN + 'mark, matches = await log.wait_for("p: waiting for message")\n'
        "assert matches\n"
        'mark, _ = await log.wait_for("q: waiting for message")'
    )
    assert [s.reason for s in result.skipped] == ["the matched lines of the result are read later"]
    assert result.migrated.endswith(
        '    await injection_event_stream.wait_for_injection("q", node=s, timeout=600)\n'
    )


def test_a_mark_that_another_log_wait_still_reads_stays_a_log_mark() -> None:
    result = convert(
        OPEN + "mark = await log.mark()\n"
        'await log.wait_for("p: waiting for message", from_mark=mark)\n'
        'await log.wait_for("some_task: waiting for peers", from_mark=mark)'
    )
    assert not result.changed
    assert "mark 'mark' is not only taken with log.mark()" in result.skipped[0].reason


def test_a_mark_of_another_server_is_refused() -> None:
    result = convert(
        "a, b = await manager.servers_add(2)\n"
        "log_a = await manager.server_open_log(a.server_id)\n"
        "log_b = await manager.server_open_log(b.server_id)\n"
        "mark = await log_a.mark()\n"
        'await log_b.wait_for("p: waiting for message", from_mark=mark)'
    )
    assert not result.changed
    assert "mark 'mark'" in result.skipped[0].reason


def test_several_logs_in_one_function_each_keep_their_server() -> None:
    result = migrated("cluster")
    assert 'wait_for_injection("kv_write_before_apply", node=hit, timeout=30)' in result.migrated
    assert "node=idle,\n            after=idle_mark," in result.migrated


def test_waits_on_the_same_point_and_server_do_not_consume() -> None:
    """A log wait never consumes a line; two stream waits for one point would."""
    result = convert(
        OPEN + 'await log.wait_for("p: waiting for message")\n'
        'await log.wait_for("p: waiting for message")\n'
        'await log.wait_for("q: waiting for message")'
    )
    assert result.migrated.count('"p", node=s, timeout=600, consume=False') == 2
    assert '"q", node=s, timeout=600)' in result.migrated


def test_a_server_rebound_before_the_wait_is_refused() -> None:
    result = convert(OPEN + "s = other\nawait log.wait_for('p: waiting for message')")
    assert "'s' is rebound" in result.skipped[0].reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("await log.wait_for('p: waiting for message')", "cannot tell which server"),
        (OPEN + "task = log.wait_for('p: waiting for message')", "not awaited"),
        (OPEN + "f = lambda: log.wait_for('p: waiting for message')", "inside a lambda"),
        (OPEN + "await self.log.wait_for('p: waiting for message')", "cannot tell which server"),
        (OPEN + "await log.wait_for('p: waiting for message', 'q: waiting')", "several patterns"),
        (OPEN + "await log.wait_for('p: waiting for message', from_mark=m())", "neither None"),
        (OPEN + "await log.wait_for(*patterns)", "* or **"),
        (OPEN + "await log.wait_for(pattern)", "not a string literal"),
        (OPEN + "await log.wait_for(f'{name}: waiting for message')", "placeholder"),
        (OPEN + "await log.wait_for('p: waiting for message', flags=1)", "unexpected argument"),
    ],
)
def test_every_other_shape_is_listed(body: str, reason: str) -> None:
    result = convert(body, params="manager, log" if "OPEN" not in body else "manager")
    assert not result.changed
    assert reason in result.skipped[0].reason, result.skipped


def test_nested_async_function_and_gather_convert() -> None:
    result = convert(
        OPEN + "async def parked():\n"
        "    await log.wait_for('p: waiting for message')\n"
        "await asyncio.gather(parked(), log.wait_for('q: message received', timeout=9))"
    )
    assert result.converted == 2
    assert "await injection_event_stream.wait_for_injection('p', node=s, timeout=600)" in (
        result.migrated
    )
    assert (
        "await asyncio.gather(parked(), injection_event_stream.wait_for_injection("
        "'q', phase='resume', node=s, timeout=9))"
    ) in result.migrated


def test_not_log_waits_are_not_sites() -> None:
    source = (
        "async def test_x(cond):\n"
        "    await asyncio.wait_for(work(), timeout=5)\n"
        "    await cond.wait_for(lambda: ready)\n"
    )
    result = migrate_source(source)
    assert result.skipped == [] and result.migrated == source


def test_the_fixture_parameter_is_added_once_and_kept_if_present() -> None:
    result = convert(OPEN + "await log.wait_for('p: waiting for message')", params="manager")
    assert result.migrated.startswith("async def test_x(manager, injection_event_stream):\n")
    again = convert(
        OPEN + "await log.wait_for('p: waiting for message')",
        params="manager, injection_event_stream",
    )
    assert again.migrated.startswith("async def test_x(manager, injection_event_stream):\n")


@pytest.mark.parametrize(
    ("decorator", "converts"),
    [
        ("@pytest.fixture", True),
        ('@pytest_asyncio.fixture(scope="function")', True),
        ('@pytest.fixture(scope="module")', False),
        ("@pytest.mark.slow", False),
    ],
)
def test_fixtures_take_the_stream_only_when_function_scoped(decorator: str, converts: bool) -> None:
    source = f"{decorator}\nasync def parked(manager):\n" + "".join(
        f"    {line}\n"
        for line in (OPEN + "await log.wait_for('p: waiting for message')").split("\n")
    )
    result = migrate_source(source)
    assert result.changed is converts


def test_unparseable_source_raises_a_clear_error() -> None:
    with pytest.raises(MigrateError, match=r"^bad\.py: cannot parse: "):
        migrate_source("x = 1\ndef f(:\n    log.wait_for('a')\n", "bad.py")


# ----------------------------------------------------------------------------- the marker


def test_the_marker_replaces_enable_and_final_check_on_the_fixture_node() -> None:
    result = migrated("marker")
    assert (
        "@pytest.mark.wait_for_injection('kv_write_error', one_shot=True, timeout=30)\n"
        "async def test_write_fails(injection_node, injection_api):\n"
        '    assert await put(injection_node, "k") == 500\n\n\n'
    ) in result.migrated
    # where the marker would not mean the same, the wait converts as usual: a task
    # triggers it, something runs before the enable, a server added in the body, the
    # injection named again in the body
    assert result.migrated.count("\n@pytest.mark.wait_for_injection") == 1
    assert result.migrated.count("injection_event_stream.wait_for_injection(") == 4


# ----------------------------------------------------------------------------- --points


def test_points_from_a_catalog_a_node_and_a_source_tree() -> None:
    catalog = load_points(str(CATALOG))
    assert catalog.kind("raft/apply-entry") == "wait_for_message"
    assert catalog.kind("block_tablet_streaming") == "handler"
    tree = load_points(str(SOURCE_TREE))
    assert tree.kind("stream_tablet_before_send") == "wait_for_message"
    assert tree.kind("raft/apply-entry") == "wait_for_message"  # wait_for_message{...}
    assert tree.kind("block_tablet_streaming") == "handler"
    assert tree.kind("py_apply_pause") == "wait_for_message"
    assert tree.kind("py_apply_handler") == "handler"
    assert tree.kind("storage_service_drop_ack") == "other"
    with FakeNode() as node:
        live = load_points(node.url)
    assert live.kind("kv_write_before_apply") == "wait_for_message"
    assert live.kind("kv_write_error") == "exception"


def test_bad_points_sources_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(MigrateError, match="no such file, directory or URL"):
        load_points(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(MigrateError, match="not a JSON catalog"):
        load_points(str(bad))
    bad.write_text(json.dumps([{"name": 1}]))
    with pytest.raises(MigrateError, match='needs a string "name" and "type"'):
        load_points(str(bad))
    with pytest.raises(MigrateError, match="cannot read the node's catalog"):
        load_points("http://127.0.0.1:1")


# ----------------------------------------------------------------------------- files and command


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A directory with copies of samples as .py files, plus things to ignore."""
    root = tmp_path / "tests"
    (root / "sub").mkdir(parents=True)
    shutil.copyfile(SAMPLES / "cluster.input.txt", root / "test_cluster.py")
    shutil.copyfile(SAMPLES / "refusals.input.txt", root / "test_refusals.py")
    shutil.copyfile(SAMPLES / "sync.input.txt", root / "sub" / "test_sync.py")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "test_skip.py").write_text(sample("cluster"))
    (root / "notes.txt").write_text(sample("cluster"))
    return root


def test_migrate_paths_recurses_sorted_and_writes_nothing(tree: Path) -> None:
    before = {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()}
    results = migrate_paths([tree])
    names = [Path(r.path).relative_to(tree).as_posix() for r in results]
    assert names == ["test_cluster.py", "test_refusals.py", "sub/test_sync.py"]
    assert {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()} == before
    assert results[0].migrated == sample("cluster", "expected")


def test_run_migrate_write_then_nothing_left(tree: Path) -> None:
    out = io.StringIO()
    assert run_migrate([str(tree)], write=True, out=out) == 0
    assert (tree / "test_cluster.py").read_text() == sample("cluster", "expected")
    assert (tree / "sub" / "test_sync.py").read_text() == sample("sync", "expected")
    text = out.getvalue()
    assert "13 waits converted in 2 files, 18 waits left as is (listed above)" in text
    refused = tree / "test_refusals.py"
    assert f"{refused}:22: pattern is a regex" in text
    out = io.StringIO()
    written = {p: p.read_bytes() for p in tree.rglob("*.py")}
    assert run_migrate([str(tree)], write=True, out=out) == 0
    assert "0 waits converted in 0 files" in out.getvalue()
    assert {p: p.read_bytes() for p in tree.rglob("*.py")} == written


def test_run_migrate_dry_run_prints_a_diff_that_applies(tmp_path: Path) -> None:
    path = tmp_path / "test_cluster.py"
    shutil.copyfile(SAMPLES / "cluster.input.txt", path)
    out, err = io.StringIO(), io.StringIO()
    assert run_migrate([str(path)], out=out, err=err) == 0
    assert path.read_text() == sample("cluster")  # nothing written
    assert out.getvalue().startswith(f"--- {path}\n+++ {path}\n@@ ")
    assert _apply_unified_diff(sample("cluster"), out.getvalue()) == sample("cluster", "expected")
    assert err.getvalue().endswith("dry run, nothing written (use --write to apply)\n")


def _apply_unified_diff(text: str, diff: str) -> str:
    """A minimal patch(1) for one-file diffs, enough to check ours round-trip."""
    old = text.splitlines(keepends=True)
    new: list[str] = []
    pos = 0
    for line in diff.splitlines(keepends=True)[2:]:
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
    good.write_text(sample("syntax312"))
    broken = tmp_path / "test_broken.py"
    broken.write_text("async def test_x(log):\n    await log.wait_for('a: waiting'\n")
    missing = tmp_path / "test_missing.py"
    err = io.StringIO()
    status = run_migrate([str(missing), str(broken), str(good)], write=True, err=err)
    assert status == 2
    messages = err.getvalue()
    assert f"error: {missing}: no such file or directory\n" in messages
    assert f"error: {broken}: cannot parse: " in messages
    assert "Traceback" not in messages
    assert good.read_text() == sample("syntax312", "expected")


def test_run_migrate_keeps_encoding_and_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "test_latin.py"
    source = (
        "# -*- coding: latin-1 -*-\r\n"
        "async def test_x(manager):\r\n"
        '    """Caf\xe9."""\r\n'
        "    log = await manager.server_open_log(s.server_id)\r\n"
        '    await log.wait_for("a: waiting for message")\r\n'
    )
    path.write_bytes(source.encode("latin-1"))
    assert run_migrate([str(path)], write=True, out=io.StringIO()) == 0
    assert path.read_bytes() == (
        "# -*- coding: latin-1 -*-\r\n"
        "async def test_x(manager, injection_event_stream):\r\n"
        '    """Caf\xe9."""\r\n'
        "    log = await manager.server_open_log(s.server_id)\r\n"
        "    await injection_event_stream.add_node(s, log=log)\r\n"
        '    await injection_event_stream.wait_for_injection("a", node=s, timeout=600)\r\n'
    ).encode("latin-1")


def test_run_migrate_without_libcst_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "libcst", None)  # makes `import libcst` fail
    out = io.StringIO()
    assert run_migrate([str(tmp_path)], out=out) == 2
    assert "pip install 'pytest-injection-events[migrate]'" in out.getvalue()


def test_command_line_diff_on_stdout_report_on_stderr_and_points(tmp_path: Path) -> None:
    """`injection-events migrate tests/ > fix.patch` gives a clean patch."""
    target = tmp_path / "test_points.py"
    shutil.copy(SAMPLES / "points.input.txt", target)
    before = target.read_text()
    command = [sys.executable, "-m", "pytest_injection_events.cli", "migrate", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # without --points no prefix converts
    assert "pass --points to confirm stream_tablet_before_send" in result.stderr
    dry = [*command, "--points", str(CATALOG)]
    result = subprocess.run(dry, capture_output=True, text=True, check=False)
    assert result.stdout.startswith("---") and "+++" in result.stdout
    assert "converted" not in result.stdout and "3 waits converted" in result.stderr
    assert target.read_text() == before  # a dry run by default

    write = [*command, "--write", "--points", str(CATALOG)]
    written = subprocess.run(write, capture_output=True, text=True, check=False)
    assert written.returncode == 0, written.stderr
    assert target.read_text() == sample("points", "expected").replace("points.py", str(target))
    again = subprocess.run(write, capture_output=True, text=True, check=False)
    assert "0 waits converted in 0 files" in again.stderr
    bad = subprocess.run(
        [*command, "--points", str(tmp_path / "nope")], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "--points" in bad.stderr and "Traceback" not in bad.stderr


def test_skipped_prints_as_path_line_reason() -> None:
    assert str(Skipped("t.py", 3, "why")) == "t.py:3: why"


# ----------------------------------------------------------------------------- converted tests run

RUN_CONFTEST = """
import sys

import pytest_asyncio

sys.path[:0] = [{tests!r}, {examples!r}]
from manager import Manager  # noqa: E402


@pytest_asyncio.fixture
async def manager():
    async with Manager(log_level="debug") as manager:
        add = manager.servers_add

        async def servers_add(n=1, **options):
            options.setdefault("events", {events!r})
            return await add(n, **options)

        manager.servers_add = servers_add
        yield manager
"""
EXPECTED_FAILURES = {
    "cluster": {
        "test_hit_on_one_server_does_not_satisfy_another",
        "test_hit_before_the_mark_does_not_count",
    },
    "marker": set(),
}


def _outcomes(pytester: pytest.Pytester, name: str, text: str) -> dict[str, str]:
    pytester.makepyfile(**{name: text})
    result = pytester.runpytest_subprocess(f"{name}.py", "-rA", "-p", "no:cacheprovider")
    outcomes = {}
    for line in result.outlines:
        match = re.match(rf"(PASSED|FAILED|ERROR) {name}\.py::(\w+)( - .*)?", line)
        if match:
            outcomes[match.group(2)] = match.group(1)
            # a failure must be a wait that timed out, not a conversion that broke
            assert match.group(1) == "PASSED" or "Timeout" in (match.group(3) or ""), line
    return outcomes


@pytest.mark.parametrize(
    ("name", "source"), [("cluster", "stream"), ("cluster", "log"), ("marker", "stream")]
)
def test_converted_samples_pass_exactly_where_the_originals_pass(
    name: str, source: str, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sample, before and after conversion, on fake nodes added in the body: with the
    event stream, and without it (ScyllaDB's API only: read through the log); the marker
    sample on the plugin's own node."""
    tests = Path(__file__).parent
    monkeypatch.setenv("COLUMNS", "400")  # the summary lines whole, with the error
    pytester.makeconftest(
        RUN_CONFTEST.format(
            tests=str(tests),
            examples=str(tests.parent / "example_tests"),
            events=source == "stream",
        )
    )
    before = _outcomes(pytester, "test_original", sample(name))
    after = _outcomes(pytester, "test_converted", sample(name, "expected"))
    assert len(before) == sample(name).count("\nasync def test_")
    assert after == before
    failed = {test for test, outcome in before.items() if outcome != "PASSED"}
    assert failed == EXPECTED_FAILURES[name]
