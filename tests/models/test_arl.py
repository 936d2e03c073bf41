"""ARL computations against published tables, an independent integral equation and simulation.

Published values come from spc_reference.json (Champ & Woodall 1987; Lucas & Crosier 1982;
Montgomery's Table 9.11 after Lucas & Saccucci 1990) and are matched to the precision they are
printed with: half a unit in the last printed digit (two decimals for Champ & Woodall, whose
table the JSON quotes with trailing zeros dropped). Four of Montgomery's EWMA entries are off
by one unit in the last digit from the true ARL; that the chain itself is right there is shown
by an independent Gauss-Legendre solution of the ARL integral equation and by the SAS/QC and
Lucas & Saccucci values, so those four are checked to one unit and listed by name.
Simulations are seeded and must agree with the exact value within four standard errors.
"""

from __future__ import annotations

import json
import math
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.arl import (
    RULES,
    ArlResult,
    CusumDesign,
    EwmaDesign,
    ShewhartDesign,
    arl,
    markov_arl,
    simulate_arl,
    solve_design,
)
from models.params import ParameterError

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "spc_reference.json"
WE = ("we1", "we2", "we3", "we4")


@pytest.fixture(scope="module")
def ref() -> dict[str, Any]:
    if not REFERENCE.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"reference data missing: {REFERENCE}")
        pytest.skip(f"reference data missing: {REFERENCE}")
    # Decimals keep the printed precision of each published number.
    data: dict[str, Any] = json.loads(
        REFERENCE.read_text(encoding="utf-8"), parse_float=Decimal, parse_int=Decimal
    )
    return data


def _tolerance(published: Decimal, decimals: int = 0) -> float:
    """Half a unit in the last printed digit (or in the ``decimals``-th, if finer)."""
    exponent = min(int(published.as_tuple().exponent), -decimals)
    return 0.5 * 10.0**exponent + 1e-9


def _check_table(
    design: ShewhartDesign | EwmaDesign | CusumDesign,
    table: dict[str, Decimal],
    decimals: int = 0,
    known_off_by_one_unit: frozenset[str] = frozenset(),
) -> None:
    misses = []
    for shift, published in table.items():
        got = markov_arl(design, float(shift)).arl
        tol = _tolerance(published, decimals)
        if shift in known_off_by_one_unit:
            assert tol < abs(got - float(published)) <= 2 * tol, (design, shift, got)
        elif abs(got - float(published)) > tol:
            misses.append((shift, str(published), round(got, 4)))
    assert misses == [], (design, misses)


# -- Shewhart and run rules --------------------------------------------------------------------


def test_shewhart_individuals_reproduce_champ_woodall_and_the_closed_form(
    ref: dict[str, Any],
) -> None:
    entry = ref["arl_shewhart_individuals_3sigma"]["expected"]
    _check_table(ShewhartDesign(L=3.0), entry["ARL_by_shift_champ_woodall"], decimals=2)
    closed = next(v for k, v in entry.items() if k.startswith("ARL_closed_form"))
    _check_table(ShewhartDesign(L=3.0), closed, decimals=3)


def test_western_electric_c1_column(ref: dict[str, Any]) -> None:
    table = ref["arl_western_electric_rules"]["expected"]["C1"]
    _check_table(ShewhartDesign(L=3.0, rules=("we1",)), table, decimals=2)


def test_all_four_western_electric_rules_alarm_once_in_91_75(ref: dict[str, Any]) -> None:
    # The 91.75 is quoted in the entry's sources; the rule-4 variant is the 8-of-8 one.
    assert "91.75" in json.dumps(ref["arl_western_electric_rules"]["source"])
    assert round(markov_arl(ShewhartDesign(rules=WE)).arl, 2) == 91.75
    # The entry's notes: a nine-in-a-row rule 4 does not give 91.75.
    nine = markov_arl(ShewhartDesign(rules=("we1", "we2", "we3", "nelson2"))).arl
    assert abs(nine - 91.75) > 1.0


def test_combined_rules_out_of_control_match_the_entry_notes(ref: dict[str, Any]) -> None:
    notes = ref["arl_western_electric_rules"]["notes"]
    pairs = re.findall(r"(\d\.\d):(\d+\.\d+)", notes.split("C1234 out-of-control ARLs")[1])
    assert len(pairs) == 5
    for shift, value in pairs:
        got = markov_arl(ShewhartDesign(rules=WE), float(shift)).arl
        assert abs(got - float(value)) <= 0.005, (shift, value, got)


# Champ & Woodall (1987), Technometrics 29, Table 1, columns C12, C13, C14 (the source the JSON
# entry cites; the JSON itself carries column C1).
CHAMP_WOODALL = {
    ("we1", "we2"): {0.0: 225.44, 0.4: 104.46, 1.0: 20.01, 2.0: 3.65, 3.0: 1.68},
    ("we1", "we3"): {0.0: 166.05, 0.4: 63.88, 1.0: 12.66, 2.0: 3.68, 3.0: 1.89},
    ("we1", "we4"): {0.0: 152.73, 0.4: 59.76, 1.0: 14.58, 2.0: 4.89, 3.0: 1.99},
}


@pytest.mark.parametrize("rules", sorted(CHAMP_WOODALL))
def test_single_supplementary_rules_match_champ_woodall(rules: tuple[str, ...]) -> None:
    for shift, value in CHAMP_WOODALL[rules].items():
        got = markov_arl(ShewhartDesign(rules=rules), shift).arl
        assert abs(got - value) <= 0.005, (rules, shift, got)


def test_rule_order_and_repeats_do_not_change_the_chain() -> None:
    a = markov_arl(ShewhartDesign(rules=("we4", "we2", "we1")), 0.6)
    b = markov_arl(ShewhartDesign(rules=("we1", "we2", "we4", "we2")), 0.6)
    assert a.arl == b.arl and a.states == b.states


def test_more_rules_alarm_sooner_and_a_shift_is_symmetric() -> None:
    arls = [markov_arl(ShewhartDesign(rules=RULES[: i + 1]), 0.0).arl for i in range(4)]
    assert arls == sorted(arls, reverse=True) and len(set(arls)) == 4
    up = markov_arl(ShewhartDesign(rules=WE), 0.8).arl
    down = markov_arl(ShewhartDesign(rules=WE), -0.8).arl
    assert up == pytest.approx(down, rel=1e-12)


# -- CUSUM and EWMA ----------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["h4", "h5"])
def test_tabular_cusum_reproduces_lucas_crosier_and_montgomery(
    ref: dict[str, Any], column: str
) -> None:
    entry = ref["arl_tabular_cusum_k0.5"]
    assert entry["params"]["k"] == Decimal("0.5")
    _check_table(CusumDesign(k=0.5, h=float(column[1:])), entry["expected"][column])


def test_one_sided_cusum_matches_the_entry_notes(ref: dict[str, Any]) -> None:
    # "Brook&Evans point -> 117.596": one-sided k=0.5, h=3 in control. A symmetric two-sided
    # pair at zero shift has exactly half the one-sided ARL under the 1/ARL+ + 1/ARL- rule.
    m = re.search(r"Brook&Evans point -> ([\d.]+)", ref["arl_tabular_cusum_k0.5"]["notes"])
    assert m is not None
    two_sided = markov_arl(CusumDesign(k=0.5, h=3.0)).arl
    assert abs(2 * two_sided - float(m[1])) <= 0.0005


#: Montgomery's printed entries that sit one unit (in the last digit) from the true ARL, which
#: an independent integral-equation solution confirms (48.294, 18.150, 15.848, 84.006).
MONTGOMERY_OFF_BY_ONE = {
    (0.25, 2.998): frozenset({"0.5"}),
    (0.2, 2.962): frozenset({"0.75"}),
    (0.1, 2.814): frozenset({"0.75"}),
    (0.05, 2.615): frozenset({"0.25"}),
}


def test_ewma_reproduces_every_montgomery_design(ref: dict[str, Any]) -> None:
    entries = ref["arl_ewma"]["expected"]
    assert len(entries) == 5
    for key, table in entries.items():
        m = re.match(r"lam([\d.]+)_L([\d.]+)", key)
        assert m is not None, key
        lam, L = float(m[1]), float(m[2])  # noqa: N806
        _check_table(
            EwmaDesign(lam=lam, L=L),
            table,
            known_off_by_one_unit=MONTGOMERY_OFF_BY_ONE.get((lam, L), frozenset()),
        )


# Lucas & Saccucci (1990), Table 3 (two-sided, fixed limits), the entry's first source.
LUCAS_SACCUCCI = {
    (0.5, 3.071): {
        "0.0": "500",
        "0.25": "255",
        "0.5": "88.8",
        "1.0": "17.5",
        "2.0": "3.63",
        "3.0": "1.93",
        "5.0": "1.07",
    },
    (0.03, 2.437): {
        "0.0": "500",
        "0.25": "76.7",
        "0.5": "29.3",
        "1.0": "12.6",
        "2.0": "5.99",
        "3.0": "4.03",
        "5.0": "2.55",
    },
}


@pytest.mark.parametrize("design", sorted(LUCAS_SACCUCCI))
def test_ewma_reproduces_lucas_saccucci(design: tuple[float, float]) -> None:
    table = {k: Decimal(v) for k, v in LUCAS_SACCUCCI[design].items()}
    _check_table(EwmaDesign(lam=design[0], L=design[1]), table)


def test_ewma_matches_the_sas_qc_value_to_eight_digits() -> None:
    # SAS/QC manual (1999): lam 0.25, L 3, one-sigma shift: 11.154267016.
    assert markov_arl(EwmaDesign(lam=0.25, L=3.0), 1.0).arl == pytest.approx(11.154267016, 1e-8)


def _integral_equation_arl(lam: float, L: float, shift: float, nodes: int = 80) -> float:  # noqa: N803
    """Zero-state EWMA ARL by Nystroem's method with Gauss-Legendre nodes (Crowder 1987)."""
    from scipy.stats import norm

    h = L * math.sqrt(lam / (2.0 - lam))
    x, w = np.polynomial.legendre.leggauss(nodes)
    z, w = h * x, h * w
    kernel = norm.pdf((z[None, :] - (1.0 - lam) * z[:, None]) / lam - shift) / lam
    a = np.linalg.solve(np.eye(nodes) - kernel * w[None, :], np.ones(nodes))
    return float(1.0 + np.sum(w * norm.pdf(z / lam - shift) / lam * a))


@pytest.mark.parametrize(
    ("lam", "L", "shift"),
    [
        (0.25, 2.998, 0.5),
        (0.2, 2.962, 0.75),
        (0.1, 2.814, 0.75),
        (0.05, 2.615, 0.25),
        (0.4, 3.054, 0.0),
        (0.03, 2.437, 1.0),
    ],
)
def test_ewma_chain_agrees_with_the_integral_equation(lam: float, L: float, shift: float) -> None:  # noqa: N803
    res = markov_arl(EwmaDesign(lam=lam, L=L), shift)
    exact = _integral_equation_arl(lam, L, shift)
    assert res.arl == pytest.approx(exact, rel=1e-6)
    assert abs(res.arl - exact) <= res.numerical_error


def test_ewma_with_lam_one_is_the_shewhart_chart() -> None:
    for shift in (0.0, 1.0, 2.5):
        ewma = markov_arl(EwmaDesign(lam=1.0, L=3.0), shift).arl
        assert ewma == pytest.approx(markov_arl(ShewhartDesign(L=3.0), shift).arl, rel=1e-9)


def test_exact_limits_have_no_markov_chain_and_arl_falls_back_to_simulation() -> None:
    design = EwmaDesign(lam=0.2, L=3.0, limits="exact")
    with pytest.raises(ParameterError, match="'limits' parameter of markov_arl"):
        markov_arl(design)
    res = arl(design, 2.0, runs=200, seed=1)
    assert res.method == "simulation" and res.convention == "zero-state, exact time-varying limits"
    assert arl(EwmaDesign(), 2.0).method == "markov"


# -- simulation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("design", "shift", "runs"),
    [
        (ShewhartDesign(rules=WE), 0.0, 20_000),
        (ShewhartDesign(rules=("we2", "nelson7")), 0.0, 10_000),
        (EwmaDesign(lam=0.2, L=3.0), 0.5, 10_000),
        (CusumDesign(k=0.5, h=4.0), 1.0, 20_000),
    ],
    ids=["we1-4", "we2+nelson7", "ewma", "cusum"],
)
def test_simulation_agrees_with_the_markov_chain(
    design: ShewhartDesign | EwmaDesign | CusumDesign, shift: float, runs: int
) -> None:
    sim = simulate_arl(design, shift, runs=runs, seed=20240601)
    exact = markov_arl(design, shift).arl
    assert sim.method == "simulation" and sim.censored == 0 and sim.runs == runs
    assert abs(sim.arl - exact) < 4 * sim.se, (sim.arl, sim.se, exact)


def test_exact_ewma_limits_detect_small_shifts_sooner_than_the_tables_say() -> None:
    asymptotic = markov_arl(EwmaDesign(lam=0.2, L=3.0), 0.5).arl
    sim = simulate_arl(EwmaDesign(lam=0.2, L=3.0, limits="exact"), 0.5, runs=40_000, seed=7)
    assert sim.arl + 4 * sim.se < asymptotic, (sim.arl, sim.se, asymptotic)


def test_simulation_is_seeded() -> None:
    design = CusumDesign(k=0.5, h=4.0)
    a = simulate_arl(design, 1.0, runs=500, seed=3)
    assert a == simulate_arl(design, 1.0, runs=500, seed=3)
    assert a.arl != simulate_arl(design, 1.0, runs=500, seed=4).arl


def test_censored_runs_are_reported_and_make_a_lower_bound() -> None:
    res = simulate_arl(ShewhartDesign(L=6.0), runs=50, seed=0, max_steps=40)
    assert res.censored == 50 and res.arl == 40.0 and res.se == 0.0
    some = simulate_arl(ShewhartDesign(L=2.0), runs=2000, seed=0, max_steps=30)
    # ARL 22: P(silent for 30 samples) = 0.954^30 = 0.24, so about 480 of 2000 are censored.
    assert 300 < some.censored < 700
    assert some.arl < markov_arl(ShewhartDesign(L=2.0)).arl


# -- solvers -----------------------------------------------------------------------------------


def test_solver_finds_the_shewhart_three_sigma_limit() -> None:
    solved = solve_design(EwmaDesign(lam=1.0, L=2.0), 370.4)
    assert isinstance(solved, EwmaDesign) and solved.lam == 1.0
    assert solved.L == pytest.approx(3.0, abs=1e-4)
    assert solve_design(ShewhartDesign(), 370.4).L == pytest.approx(3.0, abs=1e-4)


def test_solver_recovers_montgomery_ewma_limits_for_arl0_500(ref: dict[str, Any]) -> None:
    for key in ref["arl_ewma"]["expected"]:
        m = re.match(r"lam([\d.]+)_L([\d.]+)", key)
        assert m is not None
        solved = solve_design(EwmaDesign(lam=float(m[1])), 500.0)
        assert isinstance(solved, EwmaDesign)
        assert round(solved.L, 3) == float(m[2]), (key, solved.L)


def test_solver_round_trips_cusum_h_and_rule_limits() -> None:
    arl0 = markov_arl(CusumDesign(k=0.5, h=4.0)).arl
    solved = solve_design(CusumDesign(k=0.5, h=1.0), arl0)
    assert isinstance(solved, CusumDesign) and solved.h == pytest.approx(4.0, abs=1e-6)
    rules = solve_design(ShewhartDesign(rules=WE), 50.0)
    assert markov_arl(rules).arl == pytest.approx(50.0, rel=1e-9)
    assert rules.rules == WE


def test_solver_refuses_targets_run_rules_cannot_reach() -> None:
    # Eight in a row on one side alone gives ARL0 = 2**8 - 1 = 255 however wide the limits.
    with pytest.raises(ParameterError, match="must be at most 255"):
        solve_design(ShewhartDesign(rules=("we1", "we4")), 370.4)
    with pytest.raises(ParameterError, match="'limits' parameter of solve_design"):
        solve_design(EwmaDesign(limits="exact"), 370.4)


# -- parameters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: EwmaDesign(lam=1.5),
            r"The 'lam' parameter of EwmaDesign must be a float in "
            r"\(0, 1\]. Got 1.5 instead.",
        ),
        (lambda: EwmaDesign(L=0.0), r"'L' parameter of EwmaDesign must be a float > 0"),
        (lambda: EwmaDesign(limits="wide"), r"'limits' parameter of EwmaDesign must be one of"),
        (lambda: CusumDesign(k=-0.1), r"'k' parameter of CusumDesign must be a float >= 0"),
        (lambda: CusumDesign(h=0.0), r"'h' parameter of CusumDesign must be a float > 0"),
        (
            lambda: ShewhartDesign(rules=("we9",)),
            r"'rules' parameter of ShewhartDesign must be "
            r"one of 'we1'",
        ),
        (
            lambda: ShewhartDesign(rules=()),
            r"'rules' parameter of ShewhartDesign must be a "
            r"non-empty tuple",
        ),
        (lambda: markov_arl(EwmaDesign(), math.nan), r"'shift' parameter of markov_arl"),
        (lambda: simulate_arl(EwmaDesign(), runs=1), r"'runs' parameter of simulate_arl"),
        (lambda: solve_design(CusumDesign(), 0.5), r"'target_arl0' parameter of solve_design"),
    ],
)
def test_bad_parameters_are_rejected_with_the_house_message(build: Any, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        build()


def test_results_are_frozen_and_exact_methods_have_no_standard_error() -> None:
    res = markov_arl(CusumDesign(), 1.0)
    assert isinstance(res, ArlResult) and res.se == 0.0 and res.runs == 0 and res.states > 300
    assert res.convention == "zero-state, no head start, 1/ARL = 1/ARL+ + 1/ARL-"
    with pytest.raises(AttributeError):
        res.arl = 1.0  # type: ignore[misc]


def test_nelson_aliases_use_the_western_electric_chain() -> None:
    we = markov_arl(ShewhartDesign(rules=("we1", "we2", "we3"))).arl
    nelson = markov_arl(ShewhartDesign(rules=("nelson1", "nelson5", "nelson6"))).arl
    assert nelson == we


def test_run_rules_simulation_agrees_with_the_chain() -> None:
    """The RunRules-based simulation (used for nelson3, 4, 8) checked where a chain exists."""
    from models.arl import _simulate_run_rules

    design = ShewhartDesign(rules=("we1", "we2", "we3", "we4"))
    sim = _simulate_run_rules(design, 0.0, runs=6000, seed=5, max_steps=20_000)
    assert sim.censored == 0
    assert abs(sim.arl - markov_arl(design).arl) < 4 * sim.se, (sim.arl, sim.se)


def test_rules_without_a_chain_are_simulated_and_need_three_sigma_zones() -> None:
    design = ShewhartDesign(rules=("we1", "nelson3"))
    res = arl(design, runs=2000, seed=3)
    assert res.method == "simulation" and res.censored == 0
    # Adding a rule can only shorten the in-control run length.
    assert res.arl < markov_arl(ShewhartDesign(rules=("we1",))).arl
    with pytest.raises(ParameterError, match="'L' parameter of ShewhartDesign must be 3.0"):
        arl(ShewhartDesign(L=2.5, rules=("nelson4",)), runs=100)
    with pytest.raises(ParameterError, match="zone rules with a Markov chain"):
        markov_arl(design)
