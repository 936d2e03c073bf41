"""Phase I estimation: sigma estimators, iterative exclusion, qcc's viscosity study.

qcc's individuals chart of Montgomery's paint-viscosity data flags batch 4 in the first 20
batches; recomputing without it gives centre 33.98947 and sigma 0.4117415. ``fit_phase1`` must
reach exactly that by itself. The estimators are checked on hand-computed values and, for
consistency, against a seeded simulation with a tolerance of four Monte-Carlo standard errors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.detector import BaselineError, ParameterError
from models.phase1 import fit_phase1, robust_sigma

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "spc_reference.json"
METHODS = ("mr", "mr_median", "mad", "std")


def _reference(name: str) -> dict[str, Any]:
    if not REFERENCE.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"reference data missing: {REFERENCE}")
        pytest.skip(f"reference data missing: {REFERENCE}")
    entry: dict[str, Any] = json.loads(REFERENCE.read_text())[name]
    return entry


# -- robust_sigma --------------------------------------------------------------------------


def test_estimators_on_hand_computed_values() -> None:
    x = np.array([1.0, 2.0, 4.0, 3.0])  # moving ranges 1, 2, 1; deviations from 2.5: 1.5, 0.5
    assert robust_sigma(x, "mr")[0] == pytest.approx((4.0 / 3.0) / 1.128)
    assert robust_sigma(x, "mr_median")[0] == pytest.approx(1.0 / 0.954)
    assert robust_sigma(x, "mad")[0] == pytest.approx(1.4826 * 1.0)
    assert robust_sigma(x, "std")[0] == pytest.approx(np.std(x, ddof=1))


@pytest.mark.parametrize("method", METHODS)
def test_estimators_are_consistent_for_normal_data(method: str) -> None:
    tags, n, sigma = 400, 500, 2.0
    x = np.random.default_rng(21).normal(7.0, sigma, size=(n, tags))
    est = robust_sigma(x, method)
    se = est.std(ddof=1) / np.sqrt(tags)
    assert abs(est.mean() - sigma) < 4 * se, (est.mean(), se)


@pytest.mark.parametrize("method", METHODS)
def test_nan_is_ignored_and_moving_ranges_bridge_gaps(method: str) -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=(50, 2))
    x[[4, 5, 30], 0] = np.nan
    both = robust_sigma(x, method)
    assert both[0] == pytest.approx(robust_sigma(x[np.isfinite(x[:, 0]), 0], method)[0])
    assert both[1] == pytest.approx(robust_sigma(x[:, 1], method)[0])


def test_robust_estimators_resist_an_outlier() -> None:
    x = np.random.default_rng(9).normal(size=200)
    spiked = x.copy()
    spiked[100] = 50.0
    for method in ("mr_median", "mad"):
        assert robust_sigma(spiked, method)[0] == pytest.approx(
            robust_sigma(x, method)[0], rel=0.05
        )
    assert robust_sigma(spiked, "std")[0] > 2 * robust_sigma(x, "std")[0]


def test_too_few_samples_give_nan_without_warnings() -> None:
    x = np.array([[1.0, np.nan, np.nan], [np.nan, np.nan, 2.0]])
    for method in METHODS:
        sigma = robust_sigma(x, method)
        assert np.isnan(sigma).all(), method
    assert np.isnan(robust_sigma(np.empty((0, 2)), "mad")).all()


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(
        ParameterError,
        match=r"The 'method' parameter of robust_sigma must be one of 'mr', 'mr_median', 'mad', "
        r"'std'. Got 'iqr' instead.",
    ):
        robust_sigma(np.arange(5.0), "iqr")


# -- fit_phase1 ----------------------------------------------------------------------------


def test_qcc_viscosity_phase1_drops_batch_4() -> None:
    ref = _reference("qcc_viscosity_individuals_IMR")
    trial = np.array(ref["data"]["trial(phase I)"])
    x = np.array(ref["data"]["viscosity"])[trial]
    all20 = ref["expected"]["phaseI_20"]
    kept = ref["expected"]["phaseI_without_batch4(19 obs)"]

    raw = fit_phase1(x, exclude=False, tags=["viscosity"])
    assert raw.center[0] == pytest.approx(all20["center"], abs=1e-6)
    assert raw.sigma[0] == pytest.approx(all20["std_dev"], rel=1e-6)
    assert raw.ucl[0] == pytest.approx(all20["UCL"], abs=1e-5)
    assert raw.lcl[0] == pytest.approx(all20["LCL"], abs=1e-5)
    assert raw.n_excluded.tolist() == [0] and raw.iterations == 0

    lim = fit_phase1(x, min_samples=15, tags=["viscosity"])
    assert np.flatnonzero(lim.excluded[:, 0]).tolist() == [3]  # batch 4
    assert lim.center[0] == pytest.approx(kept["center"], abs=1e-5)
    assert lim.sigma[0] == pytest.approx(kept["std_dev"], rel=1e-6)
    assert lim.ucl[0] == pytest.approx(kept["UCL"], abs=1e-5)
    assert lim.lcl[0] == pytest.approx(kept["LCL"], abs=1e-5)
    assert lim.n_used.tolist() == [19] and lim.n_excluded.tolist() == [1]
    assert lim.iterations == 1

    with pytest.raises(
        BaselineError,
        match="at least 20 baseline samples per tag; tag viscosity has 19 after excluding 1",
    ):
        fit_phase1(x, tags=["viscosity"])


def test_injected_outliers_are_excluded_and_clean_data_is_untouched() -> None:
    rng = np.random.default_rng(31)
    tags, n = 6, 300
    # Uniform noise never reaches 3 sigma (its range is +/- 1.73 sigma), so nothing clean is
    # out of control and any exclusion of clean data would be the procedure's fault.
    half = np.sqrt(3.0)
    x = rng.uniform(-half, half, size=(n, tags)) + np.arange(tags)
    clean = x.copy()
    injected = np.zeros_like(x, dtype=bool)
    for j in range(1, tags):
        rows = rng.choice(n, size=j * 3, replace=False)
        injected[rows, j] = True
        x[rows, j] += rng.choice([-1.0, 1.0], size=rows.size) * rng.uniform(8.0, 15.0, rows.size)
    lim = fit_phase1(x)
    np.testing.assert_array_equal(lim.excluded, injected)
    assert lim.n_excluded.tolist() == [3 * j for j in range(tags)]
    # What is left is the clean series with those samples missing.
    expected = fit_phase1(np.where(injected, np.nan, clean), exclude=False)
    np.testing.assert_allclose(lim.center, expected.center)
    np.testing.assert_allclose(lim.sigma, expected.sigma)
    untouched = fit_phase1(clean)
    assert untouched.n_excluded.tolist() == [0] * tags and untouched.iterations == 0


def test_masked_outlier_needs_a_second_round() -> None:
    x = np.tile([9.0, 11.0], 20)
    x = np.r_[np.insert(x, 20, 16.0), 30.0]  # 30 inflates sigma enough to hide 16 at first
    lim = fit_phase1(x)
    assert np.flatnonzero(lim.excluded[:, 0]).tolist() == [20, 41] and lim.iterations == 2
    assert lim.center[0] == pytest.approx(10.0) and lim.sigma[0] == pytest.approx(2.0 / 1.128)
    once = fit_phase1(x, max_iter=1)
    assert np.flatnonzero(once.excluded[:, 0]).tolist() == [41] and once.iterations == 1


def test_estimates_match_the_samples_kept_for_every_method() -> None:
    x = np.random.default_rng(12).normal(size=(200, 3))
    x[50, :] += 9.0
    for method in METHODS:
        lim = fit_phase1(x, sigma_method=method)
        kept = np.where(lim.excluded, np.nan, x)
        np.testing.assert_allclose(lim.sigma, robust_sigma(kept, method), err_msg=method)
        np.testing.assert_allclose(lim.center, np.nanmean(kept, axis=0), err_msg=method)
        assert lim.excluded[50].all(), method


def test_short_and_flat_baselines_name_the_tag() -> None:
    x = np.random.default_rng(0).normal(size=(30, 2))
    x[7:, 1] = np.nan
    with pytest.raises(BaselineError, match="at least 20 baseline samples per tag; tag #1 has 7$"):
        fit_phase1(x)
    with pytest.raises(BaselineError, match="tag lane03_A has 7"):
        fit_phase1(x, tags=["lane01_A", "lane03_A"])
    with pytest.raises(BaselineError, match="baseline that varies; tag flat has sigma 0.0"):
        fit_phase1(np.c_[np.arange(30.0), np.ones(30)], tags=["ramp", "flat"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"L": 0.0}, r"The 'L' parameter of fit_phase1 must be a float > 0. Got 0.0 instead."),
        ({"max_iter": 0}, r"The 'max_iter' parameter of fit_phase1 must be an int >= 1"),
        ({"min_samples": 1}, r"The 'min_samples' parameter of fit_phase1 must be an int >= 2"),
        ({"sigma_method": "range"}, r"'sigma_method' parameter of fit_phase1 must be one of"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        fit_phase1(np.arange(30.0), **kwargs)


def test_tag_names_must_match_columns() -> None:
    with pytest.raises(ValueError, match="2 tag names for 3 tag columns"):
        fit_phase1(np.zeros((30, 3)), tags=["a", "b"])
