"""``cellwatch arl``: one JSON object on the last line per chart, and one-line usage errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellwatch", "arl", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def _last_json(res: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert res.returncode == 0, res.stderr
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def test_shewhart_with_all_western_electric_rules() -> None:
    out = _last_json(_run("--chart", "shewhart", "--rules", "we1,we2,we3,we4", "--json"))
    assert round(out["arl"], 2) == 91.75
    assert out["se"] == 0.0 and out["method"] == "markov"
    assert out["rules"] == ["we1", "we2", "we3", "we4"] and out["L"] == 3.0
    assert out["shift"] == 0.0


def test_ewma_fixed_limits_and_solving_l_for_a_target() -> None:
    out = _last_json(
        _run("--chart", "ewma", "--lam", "0.2", "--L", "2.962", "--shift", "1", "--json")
    )
    assert round(out["arl"], 2) == 10.54 and out["method"] == "markov"
    assert out["convention"] == "zero-state, fixed asymptotic limits"
    assert (out["lam"], out["L"], out["limits"]) == (0.2, 2.962, "asymptotic")
    solved = _last_json(_run("--chart", "ewma", "--lam", "1", "--target-arl0", "370.4", "--json"))
    assert solved["solved"] == "L" and solved["target_arl0"] == 370.4
    assert solved["L"] == pytest.approx(3.0, abs=1e-4)
    assert solved["arl"] == pytest.approx(370.4, rel=1e-9)


def test_ewma_exact_limits_are_simulated_with_a_standard_error() -> None:
    out = _last_json(
        _run(
            "--chart",
            "ewma",
            "--limits",
            "exact",
            "--shift",
            "2",
            "--runs",
            "4000",
            "--seed",
            "5",
            "--json",
        )
    )
    assert out["method"] == "simulation" and out["limits"] == "exact"
    assert out["convention"] == "zero-state, exact time-varying limits"
    assert out["runs"] == 4000 and out["seed"] == 5 and out["censored"] == 0
    # Fixed-limit Markov ARL at 2 sigma for lam 0.2, L 3 is 3.75; start-up limits are narrower.
    assert 0.0 < out["se"] < 0.05 and out["arl"] < 3.75 + 4 * out["se"]


def test_cusum_defaults_and_readable_output() -> None:
    out = _last_json(_run("--chart", "cusum", "--k", "0.5", "--h", "4", "--shift", "1", "--json"))
    assert round(out["arl"], 2) == 8.38 and (out["k"], out["h"]) == (0.5, 4.0)
    assert out["convention"] == "zero-state, no head start, 1/ARL = 1/ARL+ + 1/ARL-"
    res = _run("--chart", "cusum")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("CUSUM k=0.5 h=5, shift 0 sigma: ARL 465.44 (Markov chain")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--chart", "ewma", "--k", "0.5"), "cellwatch arl: --k does not apply to the ewma chart"),
        (
            ("--chart", "ewma", "--lam", "1.5"),
            "cellwatch arl: The 'lam' parameter of EwmaDesign must be a float in (0, 1]. "
            "Got 1.5 instead.",
        ),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    res = _run(*args, "--json")
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.strip() == message


def test_nelson_rule_names_are_accepted_as_in_the_documented_interface() -> None:
    res = _run("--chart", "shewhart", "--rules", "we1,we2,we3,we4,nelson5", "--json")
    assert res.returncode == 0, res.stderr
    out = _last_json(res)
    assert out["method"] == "markov" and round(out["arl"], 2) == 91.75
    res = _run("--chart", "shewhart", "--rules", "we1,nelson3", "--runs", "500", "--json")
    assert res.returncode == 0, res.stderr
    assert _last_json(res)["method"] == "simulation"
