"""The code stays ruff clean: lint and format are part of the suite, not a separate step."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
CODE = [
    p
    for p in ("pytest_injection_events", "tests", "example_tests", "benchmarks")
    if (ROOT / p).is_dir()
]


@pytest.mark.skipif(RUFF is None, reason="ruff is in the dev extra")
@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff(command: list[str]) -> None:
    result = subprocess.run(
        [RUFF, *command, *CODE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
