"""``benchmarks/bench_tep.py``: the selection protocols of the Tennessee Eastman benchmark.

The selection must never read a test file (``*_te.dat``): that is what keeps the test figures
free of selection bias. Here it runs on a synthetic data directory holding only the training
files, so a run that tried to open a test file would fail. The rule itself is checked on
hand-made candidates: under protocol 2 ("forward") a design with a high forward FAR, or whose
fit on the first 250 rows failed, must lose even with the best training score.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_tep", ROOT / "benchmarks" / "bench_tep.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_tep"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _bench()


def _training_files(path: Path) -> Path:
    """d00.dat (stored transposed, 52 x 500) and d01..d21.dat (480 x 52), no test files."""
    rng = np.random.default_rng(7)

    def plant(n: int) -> np.ndarray:
        latent = np.zeros((n, 5))
        for t in range(1, n):  # autocorrelated factors, like a process sampled fast
            latent[t] = 0.8 * latent[t - 1] + rng.normal(size=5)
        return latent @ mixing + 0.3 * rng.normal(size=(n, 52))

    mixing = rng.normal(size=(5, 52))
    np.savetxt(path / "d00.dat", plant(500).T)
    for i in range(1, 22):
        x = plant(480)
        x[:, i] += 0.5 * i  # fault i shifts variable i, by a growing amount
        np.savetxt(path / f"d{i:02d}.dat", x)
    return path


def test_forward_selection_reads_no_test_file(tmp_path: Path) -> None:
    data = _training_files(tmp_path)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "cellwatch",
            "bench",
            "tep",
            "--data",
            str(data),
            "--select",
            "--protocol",
            "forward",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    assert not list(data.glob("*_te.dat"))
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("selection, protocol forward")
    assert sum("d00 FAR forward" in line for line in lines) == 20
    out = json.loads(lines[-1])
    assert out["protocol"] == "forward"
    assert 0.0 <= out["forward_far"] <= 100.0
    sel = out["selected"]
    assert (sel["lags"], sel["t2_lam"], sel["spe_lam"]) in _bench().GRID
    assert "far" not in out  # no test figures without test files


def test_forward_is_the_default_protocol(bench: ModuleType, tmp_path: Path, capsys) -> None:
    data = _training_files(tmp_path)
    assert bench.main(["--data", str(data), "--select", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["protocol"] == "forward"


def _cand(bench: ModuleType, lags: int, score: float, heldout: float, fwd: float | None):
    fdr = [score] * 21
    forward = bench.Forward(fwd, 10, None if fwd is not None else "BaselineError: too few rows")
    return bench.Candidate(lags, 1.0, 0.1, 10, 1.2, heldout, fdr, forward)


def test_forward_rule_rejects_forward_false_alarms(bench: ModuleType) -> None:
    wander = _cand(bench, 0, 90.0, 1.0, 12.0)  # best score, but alarms on the later rows
    failed = _cand(bench, 0, 95.0, 1.0, None)  # its fit on rows 1-250 raised
    heldout = _cand(bench, 0, 92.0, 6.0, 1.0)  # forward fine, blocked held-out FAR too high
    steady = _cand(bench, 2, 85.0, 2.0, 3.0)
    simpler = _cand(bench, 1, 84.95, 2.0, 4.0)  # within the 0.1-point tie: simpler wins
    grid = [wander, failed, heldout, steady, simpler]
    assert bench.choose(grid, "forward") is simpler
    assert bench.choose(grid, "blocked") is failed  # protocol 1 ignores the forward FAR
    assert wander.over("forward") == ["forward FAR over 5 %"]
    assert failed.over("forward") == ["fit failed"]
    assert heldout.over("forward") == ["held-out FAR over 5 %"]


def test_forward_rule_without_feasible_design(bench: ModuleType) -> None:
    failed = _cand(bench, 0, 95.0, 9.0, None)
    low = _cand(bench, 2, 70.0, 9.0, 6.0)
    lower_simpler = _cand(bench, 1, 80.0, 9.0, 6.0)
    high = _cand(bench, 0, 90.0, 1.0, 8.0)
    grid = [failed, low, lower_simpler, high]
    # lowest forward FAR, ties to the simpler design; a failed fit ranks last
    assert bench.choose(grid, "forward") is lower_simpler
    assert bench.choose([failed], "forward") is failed
    with pytest.raises(ValueError, match="protocol"):
        bench.choose(grid, "random")
