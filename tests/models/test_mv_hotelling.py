"""Hotelling T2: qcc's published boiler example, and the false-alarm rates the limits promise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.detector import BaselineError, NotFittedError
from models.hotelling import HotellingT2
from models.params import ParameterError

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "data" / "spc_reference.json"


def _boiler() -> dict:
    if not REFERENCE.is_file():
        pytest.skip(f"{REFERENCE} is not available")
    return json.loads(REFERENCE.read_text())["qcc_boiler_hotelling_T2_individual"]


def test_qcc_boiler_limits_centre_and_statistics() -> None:
    ref = _boiler()
    exp = ref["expected"]
    alpha = 1.0 - ref["params"]["confidence_level"]
    det = HotellingT2(alpha=alpha).fit(np.array(ref["data"]))
    np.testing.assert_allclose(det.center_, exp["center"], rtol=0, atol=5e-3)
    assert np.linalg.det(det.covariance_) == pytest.approx(exp["det_S"], rel=1e-6)
    # qcc prints 7 significant digits of its limits.
    assert det.ucl_phase1_ == pytest.approx(
        exp["UCL_phaseI (beta: (m-1)^2/m * Beta(p/2,(m-p-1)/2))"], rel=1e-6
    )
    assert det.ucl_ == pytest.approx(
        exp["UPL_phaseII (F: p(m+1)(m-1)/(m(m-p)) F(p,m-p))"], rel=1e-6
    )
    # The reference T2 values are rounded to 5 significant digits.
    np.testing.assert_allclose(det.t2_baseline_, exp["computed_T2_per_obs"], rtol=1e-4)
    above = (np.flatnonzero(det.t2_baseline_ > det.ucl_phase1_) + 1).tolist()
    assert above == exp["computed_obs_above_UCL"]


def test_phase_two_false_alarm_rate_of_individuals_is_alpha() -> None:
    # The F limit is unconditional: over fresh baselines and one new point each, P(T2 > UCL) is
    # exactly alpha. Binomial SE = sqrt(alpha (1 - alpha) / R); tolerance 5 SE.
    rng = np.random.default_rng(11)
    alpha, reps, m, p = 0.05, 4000, 30, 3
    hits = 0
    for _ in range(reps):
        x = rng.normal(size=(m + 1, p))
        det = HotellingT2(alpha=alpha).fit(x[:m])
        hits += int(det.update(x[m:]).signal[0])
    se = np.sqrt(alpha * (1 - alpha) / reps)
    assert abs(hits / reps - alpha) < 5 * se


def test_phase_one_false_alarm_rate_of_individuals_is_alpha() -> None:
    # Each baseline point exceeds the beta limit with probability alpha. Points of one baseline
    # are dependent, so the SE comes from the spread of the per-baseline rates; 5 SE.
    rng = np.random.default_rng(12)
    alpha, reps, m, p = 0.05, 1500, 25, 4
    rates = np.empty(reps)
    for r in range(reps):
        det = HotellingT2(alpha=alpha).fit(rng.normal(size=(m, p)))
        rates[r] = np.mean(det.t2_baseline_ > det.ucl_phase1_)
    se = rates.std(ddof=1) / np.sqrt(reps)
    assert abs(rates.mean() - alpha) < 5 * se


def test_phase_two_false_alarm_rate_of_subgroups_is_alpha() -> None:
    rng = np.random.default_rng(13)
    alpha, reps, m, n, p = 0.05, 4000, 20, 4, 2
    cov = np.array([[1.0, 0.7], [0.7, 1.0]])
    chol = np.linalg.cholesky(cov)
    hits = 0
    for _ in range(reps):
        x = np.einsum("ij,mjn->min", chol, rng.normal(size=(m + 1, p, n))) + 5.0
        det = HotellingT2(alpha=alpha).fit(x[:m])
        hits += int(det.update(x[m:]).signal[0])
    se = np.sqrt(alpha * (1 - alpha) / reps)  # binomial SE, tolerance 5 SE
    assert abs(hits / reps - alpha) < 5 * se


def test_subgroup_statistic_is_n_times_the_mean_distance() -> None:
    rng = np.random.default_rng(14)
    base = rng.normal(size=(20, 3, 5))
    det = HotellingT2().fit(base)
    means = base.mean(axis=2)
    pooled = sum(np.cov(base[i], ddof=1) for i in range(20)) / 20
    new = rng.normal(size=(4, 3, 5))
    d = new.mean(axis=2) - means.mean(axis=0)
    expected = 5 * np.einsum("ij,jk,ik->i", d, np.linalg.inv(pooled), d)
    np.testing.assert_allclose(det.update(new).t2, expected, rtol=1e-12)


def test_contributions_add_up_and_name_the_variable_that_moved() -> None:
    rng = np.random.default_rng(15)
    det = HotellingT2(alpha=0.001).fit(rng.normal(size=(200, 4)))
    x = rng.normal(size=(5, 4))
    x[2, 3] += 8.0
    res = det.update(x)
    np.testing.assert_allclose(res.contributions.sum(axis=1), res.t2, rtol=1e-12)
    assert res.signal.tolist() == [0, 0, 1, 0, 0]
    assert int(np.argmax(res.contributions[2])) == 3


def test_missing_rows_are_skipped_and_counted() -> None:
    det = HotellingT2().fit(np.random.default_rng(16).normal(size=(50, 2)))
    res = det.update([[0.0, 0.0], [np.nan, 1.0], [0.1, 0.2]])
    assert res.skipped == 1
    assert np.isnan(res.t2[1]) and res.signal[1] == 0
    assert np.isfinite(res.t2[[0, 2]]).all()


def test_errors_are_clear() -> None:
    with pytest.raises(ParameterError, match="'alpha' parameter of HotellingT2"):
        HotellingT2(alpha=0.7)
    with pytest.raises(NotFittedError):
        HotellingT2().update([[1.0, 2.0]])
    with pytest.raises(BaselineError, match="at least 20 complete baseline rows"):
        HotellingT2().fit(np.ones((10, 2)))
    x = np.random.default_rng(17).normal(size=(40, 2))
    with pytest.raises(BaselineError, match="non-singular"):
        HotellingT2().fit(np.c_[x, x[:, 0] + x[:, 1]])


def test_known_parameters_score_without_fitting_limits() -> None:
    det = HotellingT2().fit_known([0.0, 0.0], np.eye(2), m=1000, ucl=9.0)
    assert det.update([[2.0, 2.0], [3.0, 0.5]]).signal.tolist() == [0, 1]
