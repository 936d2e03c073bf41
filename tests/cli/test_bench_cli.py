"""``cellwatch bench core``: runs the benchmark and ends with one JSON object (tiny sizes here).

Rates are measured, not asserted: this only checks that the command runs and reports every
figure the documentation quotes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_core_prints_one_json_object_last() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "cellwatch", "bench", "core", "--tags", "10,100",
         "--tag-samples", "20000", "--baseline-samples", "2000", "--json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(data) >= {"rate", "vs_river", "vs_loop", "peak_rss_mb"}
    assert set(data["rate"]) == set(data["vs_loop"]) == set(data["vs_river"]) == {"10", "100"}
    assert all(r > 0 for r in data["rate"].values())
    assert all(v is not None and v > 0 for v in data["vs_river"].values())


def test_unknown_benchmark_is_a_usage_error() -> None:
    res = subprocess.run([sys.executable, "-m", "cellwatch", "bench", "nothing"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 2
    assert "invalid choice: 'nothing'" in res.stderr
