"""The README and docs run as written: every code block is executed, as a reader would.

A `python` block that defines `test_*` functions is a test file: it runs under
pytest with this plugin (the fixtures it names are the plugin's) and must pass.
Any other `python` block is a program: it runs in a fresh interpreter and must
exit 0 with nothing on stderr. A block that is a shell command, its output or a
synopsis says so with `notest` after its language (```` ```sh notest ````); no
`python` block may. A small extractor rather than pytest-markdown-docs (see
docs/design.md, "Checks"): that plugin runs a block as a module body, so a block
defining tests would only define them, never run them with their fixtures.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Every code block of these is run. (docs/migration.md and docs/http-api.md are
#: owned by other work in progress: add them here once their blocks run.)
DOCS = ["README.md", "docs/library.md", "docs/design.md", "docs/cluster.md", "docs/migration.md"]
NOT_RUN = "notest"
FENCE = re.compile(r"^(`{3,})([^`]*)$")


@dataclass(frozen=True)
class Block:
    path: str
    line: int  # of the opening fence, 1-based
    language: str
    words: tuple[str, ...]
    source: str

    @property
    def tests(self) -> int:
        """How many tests the block defines at its top level."""
        return sum(
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name.startswith("test_")
            for node in ast.parse(self.source, f"{self.path}:{self.line}").body
        )


def blocks(path: str) -> list[Block]:
    """The fenced code blocks of a Markdown file, in order."""
    found, opening, language, words, lines = [], None, "", (), []
    for number, text in enumerate((ROOT / path).read_text().splitlines(), 1):
        match = FENCE.match(text)
        if opening is None and match:
            opening, info = (number, match.group(1)), match.group(2).split()
            language, words, lines = (info[0] if info else ""), tuple(info[1:]), []
        elif opening is not None and match and match.group(1) == opening[1] and not match[2]:
            found.append(Block(path, opening[0], language, words, "\n".join(lines) + "\n"))
            opening = None
        elif opening is not None:
            lines.append(text)
    assert opening is None, f"{path}:{opening[0]}: unclosed code block"
    return found


ALL = [block for path in DOCS for block in blocks(path)]
PYTHON = [block for block in ALL if block.language == "python"]


def block_id(block: Block) -> str:
    return f"{block.path}:{block.line}"


def test_every_block_is_run_or_says_why_not() -> None:
    """A new block cannot slip by unrun: it is python, or marked `notest`."""
    assert len(PYTHON) >= 8
    wrong = [
        f"{block_id(b)} ```{b.language} {' '.join(b.words)}".rstrip()
        for b in ALL
        if (b.language == "python") == (NOT_RUN in b.words) or not b.language
    ]
    assert wrong == [], "python blocks run; others need a language and `notest`"


@pytest.mark.parametrize("block", [b for b in PYTHON if b.tests], ids=block_id)
def test_test_blocks_pass_under_pytest(pytester: pytest.Pytester, block: Block) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "addopts = -p no:hypothesispytest\n"
    )
    pytester.makepyfile(test_readme=block.source)
    result = pytester.runpytest("-W", "error::ResourceWarning")
    result.assert_outcomes(passed=block.tests)


@pytest.mark.parametrize("block", [b for b in PYTHON if not b.tests], ids=block_id)
def test_program_blocks_run(tmp_path: Path, block: Block) -> None:
    script = tmp_path / "example.py"
    script.write_text(block.source)
    result = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, ""), result.stdout + result.stderr
