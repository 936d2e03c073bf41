"""Capability indices: qcc's piston-ring study, Montgomery's interval examples, coverage.

Published values: qcc's capability analysis of Montgomery's piston-ring data (specification
73.95-74.05, within sigma R-bar/d2 from 25 subgroups of 5) and Montgomery's worked intervals
(section 8.3.5): Cp for n = 20, s = 1.75, limits 38-62 (1.57 <= Cp <= 3.01) and Bissell's Cpk
interval for n = 20, Cpk = 1.33 (0.88 <= Cpk <= 1.78). The chi-square interval for Pp is exact
for normal data, so its simulated coverage must be the nominal 95 % within four binomial
standard errors.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.capability import Capability, capability
from models.detector import ParameterError

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "spc_reference.json"


def _reference(name: str) -> dict[str, Any]:
    if not REFERENCE.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"reference data missing: {REFERENCE}")
        pytest.skip(f"reference data missing: {REFERENCE}")
    entry: dict[str, Any] = json.loads(REFERENCE.read_text())[name]
    return entry


def _sample(n: int, mean: float, sd: float, seed: int) -> np.ndarray:
    """``n`` points whose sample mean and standard deviation are exactly ``mean`` and ``sd``."""
    z = np.random.default_rng(seed).normal(size=n)
    return mean + sd * (z - z.mean()) / z.std(ddof=1)


def test_qcc_piston_rings_capability() -> None:
    ref = _reference("qcc_pistonrings_xbar_R_S")
    groups = np.array(ref["data"]["groups_of_5_in_sample_order"])[:25]  # phase I: 1-25
    expected = ref["expected"]
    rbar = float(np.mean(groups.max(axis=1) - groups.min(axis=1)))
    assert rbar == pytest.approx(expected["R"]["center"], abs=1e-9)
    sigma = rbar / 2.326  # qcc's d2 for n = 5
    assert sigma == pytest.approx(expected["xbar"]["std_dev"], rel=1e-6)
    cap = capability(groups.ravel(), lsl=73.95, usl=74.05, sigma_within=sigma)
    assert cap.mean[0] == pytest.approx(expected["xbar"]["center"], abs=5e-6)  # printed 7 digits
    published = expected["capability(spec 73.95-74.05)"]
    got = {"Cp": cap.cp, "Cp_l": cap.cpl, "Cp_u": cap.cpu, "Cp_k": cap.cpk, "Cpm": cap.cpm}
    for name, value in got.items():
        assert round(float(value[0]), 2) == published[name], name


def test_montgomery_cp_interval_example() -> None:
    # USL 62, LSL 38, n = 20, s = 1.75: Cp = 2.29 and 1.57 <= Cp <= 3.01 at 95 %.
    x = _sample(20, 50.0, 1.75, seed=1)
    cap = capability(x, lsl=38.0, usl=62.0, sigma_within=1.75)
    assert cap.cp[0] == pytest.approx(24.0 / 10.5) and round(float(cap.cp[0]), 2) == 2.29
    # The book multiplies the rounded 2.29 by the chi-square factors.
    assert round(2.29 * float(cap.cp_low[0] / cap.cp[0]), 2) == 1.57
    assert round(2.29 * float(cap.cp_high[0] / cap.cp[0]), 2) == 3.01
    # s is the overall sample standard deviation here, so Pp and its interval agree.
    np.testing.assert_allclose(
        [cap.pp[0], cap.pp_low[0], cap.pp_high[0]], [cap.cp[0], cap.cp_low[0], cap.cp_high[0]]
    )


def test_bissell_cpk_interval_example() -> None:
    # n = 20, Cpk = 1.33: 0.88 <= Cpk <= 1.78 at 95 % (an upper limit 3 * 1.33 sigma away).
    x = _sample(20, 50.0, 1.0, seed=2)
    cap = capability(x, usl=50.0 + 3 * 1.33, sigma_within=1.0)
    assert cap.cpk[0] == pytest.approx(1.33)
    assert round(float(cap.cpk_low[0]), 2) == 0.88 and round(float(cap.cpk_high[0]), 2) == 1.78
    assert cap.ppk_low[0] == pytest.approx(cap.cpk_low[0])


def test_pp_interval_has_nominal_coverage() -> None:
    tags, n = 4000, 30
    x = np.random.default_rng(11).normal(0.0, 2.0, size=(n, tags))
    cap = capability(x, lsl=-8.0, usl=8.0)
    true_pp = 16.0 / (6 * 2.0)
    covered = np.mean((cap.pp_low <= true_pp) & (true_pp <= cap.pp_high))
    se = np.sqrt(0.95 * 0.05 / tags)
    assert abs(covered - 0.95) < 4 * se, covered


def test_within_and_overall_sigma_differ_under_drift() -> None:
    rng = np.random.default_rng(5)
    n = 500
    drift = np.linspace(0.0, 3.0, n)  # a 3-sigma slide across the window
    x = np.c_[rng.normal(size=n), rng.normal(size=n) + drift]
    cap = capability(x, lsl=-6.0, usl=9.0)
    # iid column: both sigmas estimate 1; drifting column: overall ~ sqrt(1 + 9/12) = 1.32.
    assert abs(cap.pp[0] / cap.cp[0] - 1.0) < 0.1
    assert cap.pp[1] / cap.cp[1] < 0.85
    assert cap.sigma_within[1] == pytest.approx(1.0, abs=0.1)


def test_one_sided_specifications() -> None:
    x = np.random.default_rng(3).normal(10.0, 0.5, size=(100, 2))
    cap = capability(x, lsl=[8.5, np.nan], usl=[np.nan, 11.5])
    assert np.isnan(cap.cp).all() and np.isnan(cap.pp).all() and np.isnan(cap.cpm).all()
    assert np.isnan(cap.cpu[0]) and np.isnan(cap.cpl[1])
    assert cap.cpk[0] == cap.cpl[0] and cap.cpk[1] == cap.cpu[1]
    assert cap.ppk[0] == cap.ppl[0] and cap.ppk[1] == cap.ppu[1]
    assert np.isfinite(cap.cpk_low).all() and np.isfinite(cap.ppk_high).all()
    none = capability(x)
    assert np.isnan(none.cpk).all() and np.isfinite(none.sigma_overall).all()


def test_vectorized_over_tags_with_nan_ignored_per_tag() -> None:
    x = np.random.default_rng(4).normal(5.0, 1.0, size=(60, 3))
    x[[3, 10, 11, 40], 1] = np.nan
    both = capability(x, lsl=1.0, usl=9.0)
    alone = capability(x[np.isfinite(x[:, 1]), 1], lsl=1.0, usl=9.0)
    assert both.n.tolist() == [60, 56, 60]
    for f in dataclasses.fields(Capability):
        value = getattr(both, f.name)
        if isinstance(value, np.ndarray):
            np.testing.assert_allclose(value[1], getattr(alone, f.name)[0], err_msg=f.name)
    first = capability(x[:, 0], lsl=1.0, usl=9.0)
    assert both.cpk[0] == pytest.approx(first.cpk[0])


def test_too_few_samples_give_nan_not_warnings() -> None:
    x = np.array([[1.0, np.nan], [np.nan, np.nan], [np.nan, np.nan]])
    cap = capability(x, lsl=0.0, usl=2.0)
    assert cap.n.tolist() == [1, 0]
    assert np.isnan(cap.cp).all() and np.isnan(cap.ppk).all() and np.isnan(cap.cpk_low).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"confidence": 1.0},
            r"The 'confidence' parameter of capability must be a float in \(0, 1\). "
            r"Got 1.0 instead.",
        ),
        (
            {"lsl": 10.0, "usl": 9.0},
            r"The 'usl' parameter of capability must be a float > 10. Got 9.0 instead.",
        ),
        (
            {"lsl": 0.0, "usl": 9.0, "sigma_within": 0.0},
            r"The 'sigma_within' parameter of capability must be a float > 0. Got 0.0 instead.",
        ),
        ({"sigma_method": "iqr"}, r"'sigma_method' parameter of capability must be one of"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        capability(np.arange(30.0), **kwargs)


def test_spec_of_wrong_length_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"lsl must be a scalar or have one value per tag \(2\)"):
        capability(np.zeros((10, 2)), lsl=[1.0, 2.0, 3.0])


def test_result_is_frozen() -> None:
    cap = capability(np.arange(30.0), lsl=-5.0, usl=40.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cap.cp = np.zeros(1)  # type: ignore[misc]
