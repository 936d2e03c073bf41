"""``cellwatch check-config``: every problem on its own line, exit code 2; a good file exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellwatch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_broken_file_lists_each_problem_with_its_line_and_exits_2() -> None:
    res = _run("check-config", "tests/models/data/broken.yaml")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 9
    assert lines[1] == (
        "tests/models/data/broken.yaml:12 lines[0].stations[0].params[0].lsl: "
        "must be a number below usl (3.2), got 'abc'"
    )
    assert "Traceback" not in res.stderr


def test_example_file_is_ok() -> None:
    res = _run("check-config", "config/plant.example.yaml")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("config/plant.example.yaml: ok (1 lines, 7 params, 2 sources)")


def test_missing_file_is_one_line() -> None:
    res = _run("check-config", "no/such.yaml")
    assert res.returncode == 1
    assert (
        res.stderr.strip()
        == "cellwatch: cannot read config no/such.yaml: No such file or directory"
    )
