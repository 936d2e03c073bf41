"""p, np, c and u charts: the contract, bad rows at run time, and Montgomery's worked examples.

Worked examples (Montgomery, *Introduction to Statistical Quality Control*, 8th ed., data as
shipped with the qcc R package), with every number used stated here:

* Orange juice cans (Example 7.1): 30 samples of n = 50 cans, nonconforming counts below,
  total 347, so p-bar = 347 / 1500 = 0.2313, UCL 0.4102, LCL 0.0524, samples 15 and 23 above
  the UCL. Without them: p-bar = 301 / 1400 = 0.2150, UCL 0.3893, LCL 0.0407, and sample 21
  (p = 0.40) is then above the UCL.
* Printed circuit boards (Example 7.3): 26 samples of 100 boards, 516 nonconformities,
  c-bar = 19.85; samples 6 (c = 5) and 20 (c = 39) fall outside. The book prints UCL 33.22 and
  LCL 6.48, computed from c-bar rounded to 19.85; the unrounded values are 33.21 and 6.48.
  Without samples 6 and 20: c-bar = 472 / 24 = 19.67, UCL 32.97, LCL 6.36.
* Personal computers (Example 7.4): 20 samples of 5 units, 193 nonconformities, u-bar = 1.93,
  UCL 3.79, LCL 0.07, no sample outside.
* Dyed cloth (Example 7.5): 10 rolls of 8 to 13 inspection units (fractional), 153 defects in
  107.5 units, u-bar = 1.42; limits per roll from its own size, none outside.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import attribute
from models.attribute import AttributeResult, CChart, NpChart, PChart, UChart
from models.detector import BaselineError, NotFittedError, ParameterError

CHARTS = [PChart, NpChart, CChart, UChart]
Chart = PChart | NpChart | CChart | UChart
FIELDS = ("statistic", "center", "lcl", "ucl", "signal")

ORANGE_JUICE = [12, 15, 8, 10, 4, 7, 16, 9, 14, 10, 5, 6, 17, 12, 22,
                8, 10, 5, 13, 11, 20, 18, 24, 15, 9, 12, 7, 13, 9, 6]  # fmt: skip
CIRCUIT = [21, 24, 16, 12, 15, 5, 28, 20, 31, 25, 20, 24, 16,
           19, 10, 17, 13, 22, 18, 39, 30, 24, 16, 19, 17, 15]  # fmt: skip
PC = [10, 12, 8, 14, 10, 16, 11, 7, 10, 15, 9, 5, 7, 11, 12, 6, 8, 10, 7, 5]
CLOTH = [14, 12, 20, 11, 7, 10, 21, 16, 19, 23]
CLOTH_UNITS = [10, 8, 13, 10, 9.5, 10, 12, 10.5, 12, 12.5]


def _col(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)[:, None]


def _baseline(cls: type[Chart], tags: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(40, 80, size=(30, tags)).astype(float)
    if cls in (PChart, NpChart):
        return rng.binomial(sizes.astype(int), 0.1).astype(float), sizes
    return rng.poisson(0.2 * sizes).astype(float), sizes


def _fitted(cls: type[Chart], tags: int = 3) -> Chart:
    counts, sizes = _baseline(cls, tags)
    return cls().fit(counts, sizes)


# -- contract ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", CHARTS)
def test_follows_the_contract(cls: type[Chart]) -> None:
    det = cls()
    counts, sizes = _baseline(cls, tags=2)
    assert det.fit(counts, sizes) is det
    assert det.center_.shape == (2,)
    res = det.update(counts[:4], sizes[:4])
    assert isinstance(res, AttributeResult)
    for name in FIELDS:
        assert getattr(res, name).shape == (4, 2), name
    assert res.signal.dtype == np.int8
    assert res.skipped.shape == (2,) and res.invalid.shape == (2,)
    assert attribute.__all__ == ["AttributeResult", "CChart", "NpChart", "PChart", "UChart"]


@pytest.mark.parametrize("cls", CHARTS)
def test_update_before_fit_is_a_clear_error(cls: type[Chart]) -> None:
    with pytest.raises(
        NotFittedError,
        match=rf"This {cls.__name__} is not fitted yet; call fit\(baseline\) before update.",
    ):
        cls().update(np.zeros((3, 1)), np.ones((3, 1)))


@pytest.mark.parametrize("cls", CHARTS)
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"L": 0.0}, r"The 'L' parameter of {} must be a float > 0. Got 0.0 instead."),
        ({"L": float("nan")}, r"The 'L' parameter of {} must be a float > 0. Got nan instead."),
        ({"min_baseline": 0}, r"The 'min_baseline' parameter of {} must be an int >= 1."),
    ],
)
def test_invalid_parameters_are_rejected(
    cls: type[Chart], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ParameterError, match=message.format(cls.__name__)):
        cls(**kwargs)


@pytest.mark.parametrize("cls", CHARTS)
def test_short_baseline_names_the_tag(cls: type[Chart]) -> None:
    counts, sizes = _baseline(cls, tags=2)
    counts[7:, 1] = np.nan
    with pytest.raises(
        BaselineError,
        match=f"{cls.__name__} needs at least 20 baseline samples per tag; tag lane03_A has 7",
    ):
        cls().fit(counts, sizes, tags=["lane01_A", "lane03_A"])


@pytest.mark.parametrize(
    ("cls", "hint"),
    [
        (PChart, "both conforming and nonconforming units"),
        (NpChart, "both conforming and nonconforming units"),
        (CChart, "at least one nonconformity"),
        (UChart, "at least one nonconformity"),
    ],
)
def test_degenerate_baselines_are_rejected(cls: type[Chart], hint: str) -> None:
    with pytest.raises(BaselineError, match=f"{hint}; tag #0 has rate 0.0"):
        cls().fit(np.zeros((25, 1)), np.full((25, 1), 10.0))
    if cls in (PChart, NpChart):
        with pytest.raises(BaselineError, match="tag #0 has rate 1.0"):
            cls().fit(np.full((25, 1), 10.0), np.full((25, 1), 10.0))


@pytest.mark.parametrize(
    ("counts", "sizes", "reason"),
    [
        (-1.0, 10.0, "count is negative"),
        (2.5, 10.0, "count is not a whole number"),
        (np.inf, 10.0, "count is not finite"),
        (11.0, 10.0, "count exceeds size"),
        (1.0, 0.0, "size is not finite and > 0"),
        (1.0, 9.5, "size is not a whole number"),
    ],
)
def test_invalid_baseline_rows_are_rejected_by_fit(
    counts: float, sizes: float, reason: str
) -> None:
    c, n = np.full((25, 2), 2.0), np.full((25, 2), 10.0)
    c[4, 1], n[4, 1] = counts, sizes
    with pytest.raises(BaselineError, match=f"PChart baseline row 4 of tag B is invalid: {reason}"):
        PChart().fit(c, n, tags=["A", "B"])


@pytest.mark.parametrize("cls", CHARTS)
def test_bad_rows_at_run_time_are_skipped_and_counted_not_raised(cls: type[Chart]) -> None:
    det = _fitted(cls, tags=1)
    counts = _col([3, -1, 2.5, 70, 4, np.nan, 2, 5])
    sizes = _col([50, 50, 50, 60, 0, 50, np.nan, -2])
    res = det.update(counts, sizes)
    if cls in (PChart, NpChart):  # 70 > 60 is impossible for a count of nonconforming units
        bad = [1, 2, 3, 4, 7]
    elif cls is UChart:  # 70 defects in 60 units is possible
        bad = [1, 2, 4, 7]
    else:  # sizes mean nothing to a c chart
        bad = [1, 2]
    missing = [5] if cls is CChart else [5, 6]
    assert res.invalid.tolist() == [len(bad)]
    assert res.skipped.tolist() == [len(bad) + len(missing)]
    not_charted = sorted(bad + missing)
    assert np.isnan(res.statistic[not_charted, 0]).all()
    assert np.isnan(res.ucl[not_charted, 0]).all()
    assert (res.signal[not_charted, 0] == 0).all()
    charted = [i for i in range(8) if i not in not_charted]
    assert np.isfinite(res.statistic[charted, 0]).all()


@pytest.mark.parametrize("cls", [PChart, NpChart, UChart])
def test_wrong_shapes_raise(cls: type[Chart]) -> None:
    det = _fitted(cls, tags=2)
    with pytest.raises(ValueError, match=f"{cls.__name__} needs sizes"):
        det.update(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"sizes must be a scalar or shaped like counts \(3, 2\)"):
        det.update(np.zeros((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="2 tag columns as in fit, got 3"):
        det.update(np.zeros((3, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"shaped \(time, tags\)"):
        det.update(np.zeros((3, 2, 1)), 1.0)


def test_c_chart_ignores_sizes() -> None:
    det = CChart().fit(_col(CIRCUIT))
    counts = _col([20, 40, 3])
    a, b = det.update(counts), det.update(counts, _col([1, -5, np.nan]))
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert b.invalid.tolist() == [0] and b.skipped.tolist() == [0]


@pytest.mark.parametrize("cls", CHARTS)
@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 30), max_size=3), seed=st.integers(0, 2**16))
def test_chunking_does_not_change_results(cls: type[Chart], cuts: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    counts, sizes = _baseline(cls, tags=3, seed=seed)
    counts[rng.random(counts.shape) < 0.2] = np.nan
    counts[rng.random(counts.shape) < 0.1] = -1.0
    det = _fitted(cls)
    whole = det.update(counts, sizes)
    bounds = [0, *sorted(cuts), 30]
    parts = [
        det.update(counts[a:b], sizes[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    for name in FIELDS:
        joined = np.vstack([getattr(p, name) for p in parts])
        np.testing.assert_array_equal(joined, getattr(whole, name), err_msg=name)
    np.testing.assert_array_equal(sum(p.skipped for p in parts), whole.skipped)
    np.testing.assert_array_equal(sum(p.invalid for p in parts), whole.invalid)


@pytest.mark.parametrize("cls", CHARTS)
def test_pickle_round_trip_and_reset(cls: type[Chart]) -> None:
    det = _fitted(cls)
    counts, sizes = _baseline(cls, seed=5)
    first = det.update(counts, sizes)
    clone = pickle.loads(pickle.dumps(det))
    det.reset()
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(clone.update(counts, sizes), name),
                                      getattr(first, name))  # fmt: skip
        np.testing.assert_array_equal(getattr(det.update(counts, sizes), name),
                                      getattr(first, name))  # fmt: skip
    assert (det.L, det.min_baseline) == (3.0, 20)


@pytest.mark.parametrize(
    ("cls", "value", "message"),
    [
        (PChart, 0.0, r"p must be in \(0, 1\) for every tag"),
        (NpChart, 1.0, r"p must be in \(0, 1\) for every tag"),
        (CChart, -2.0, "c must be finite and > 0 for every tag"),
        (UChart, np.inf, "u must be finite and > 0 for every tag"),
    ],
)
def test_fit_known_checks_the_rate(cls: type[Chart], value: float, message: str) -> None:
    with pytest.raises(BaselineError, match=message):
        cls().fit_known([0.1, value])


def test_lower_limit_is_clipped_at_zero_and_never_signals() -> None:
    res = PChart().fit_known([0.01]).update(_col([0, 0, 5]), _col([100, 100, 100]))
    assert res.lcl[:, 0].tolist() == [0.0, 0.0, 0.0]
    assert res.signal[:, 0].tolist() == [0, 0, 1]  # 0.05 > 0.01 + 3 * 0.00995


# -- worked examples -----------------------------------------------------------------------------


def _p_limits(p: float, n: float) -> tuple[float, float]:
    half = 3.0 * np.sqrt(p * (1.0 - p) / n)
    return max(p - half, 0.0), p + half


def test_orange_juice_p_chart_matches_montgomery() -> None:
    counts = _col(ORANGE_JUICE)
    assert counts.sum() == 347
    det = PChart().fit(counts, 50)
    assert det.center_[0] == pytest.approx(347 / 1500, rel=1e-15)
    res = det.update(counts, 50)
    lcl, ucl = _p_limits(347 / 1500, 50)
    np.testing.assert_allclose(res.lcl[:, 0], lcl, rtol=1e-14)
    np.testing.assert_allclose(res.ucl[:, 0], ucl, rtol=1e-14)
    assert (round(det.center_[0], 4), round(ucl, 4), round(lcl, 4)) == (0.2313, 0.4102, 0.0524)
    assert (np.flatnonzero(res.signal[:, 0]) + 1).tolist() == [15, 23]
    assert (res.signal[[14, 22], 0] == 1).all()

    revised = PChart().fit(np.delete(counts, [14, 22], axis=0), 50)
    assert revised.center_[0] == pytest.approx(301 / 1400, rel=1e-15)
    res = revised.update(counts, 50)
    lcl, ucl = _p_limits(301 / 1400, 50)
    assert (round(ucl, 4), round(lcl, 4)) == (0.3893, 0.0407)
    np.testing.assert_allclose(res.ucl[:, 0], ucl, rtol=1e-14)
    assert (np.flatnonzero(res.signal[:, 0]) + 1).tolist() == [15, 21, 23]


def test_orange_juice_np_chart_is_the_p_chart_times_n() -> None:
    counts = _col(ORANGE_JUICE)
    p = PChart().fit(counts, 50).update(counts, 50)
    np_ = NpChart().fit(counts, 50).update(counts, 50)
    np.testing.assert_allclose(np_.statistic, 50 * p.statistic, rtol=1e-14)
    np.testing.assert_allclose(np_.center, 50 * p.center, rtol=1e-14)
    np.testing.assert_allclose(np_.ucl, 50 * p.ucl, rtol=1e-14)
    np.testing.assert_allclose(np_.lcl, 50 * p.lcl, rtol=1e-14)
    np.testing.assert_array_equal(np_.signal, p.signal)
    assert round(float(np_.center[0, 0]), 2) == 11.57


def test_circuit_board_c_chart_matches_montgomery() -> None:
    counts = _col(CIRCUIT)
    assert counts.sum() == 516
    det = CChart().fit(counts)
    cbar = 516 / 26
    assert det.center_[0] == pytest.approx(cbar, rel=1e-15)
    res = det.update(counts)
    np.testing.assert_allclose(res.ucl[:, 0], cbar + 3 * np.sqrt(cbar), rtol=1e-14)
    np.testing.assert_allclose(res.lcl[:, 0], cbar - 3 * np.sqrt(cbar), rtol=1e-14)
    assert (round(res.ucl[0, 0], 2), round(res.lcl[0, 0], 2)) == (33.21, 6.48)
    assert round(19.85 + 3 * np.sqrt(19.85), 2) == 33.22  # the book's rounded-c-bar value
    assert res.signal[:, 0].tolist() == [-1 if i == 5 else 1 if i == 19 else 0 for i in range(26)]

    revised = CChart().fit(np.delete(counts, [5, 19], axis=0))
    res = revised.update(counts)
    assert revised.center_[0] == pytest.approx(472 / 24, rel=1e-15)
    assert (round(res.ucl[0, 0], 2), round(res.lcl[0, 0], 2)) == (32.97, 6.36)


def test_personal_computer_u_chart_matches_montgomery() -> None:
    counts = _col(PC)
    assert counts.sum() == 193
    det = UChart().fit(counts, 5)
    assert det.center_[0] == pytest.approx(1.93, rel=1e-14)
    res = det.update(counts, 5)
    np.testing.assert_allclose(res.ucl[:, 0], 1.93 + 3 * np.sqrt(1.93 / 5), rtol=1e-14)
    np.testing.assert_allclose(res.lcl[:, 0], 1.93 - 3 * np.sqrt(1.93 / 5), rtol=1e-14)
    assert (round(res.ucl[0, 0], 2), round(res.lcl[0, 0], 2)) == (3.79, 0.07)
    assert not res.signal.any()


def test_dyed_cloth_u_chart_with_fractional_units_matches_montgomery() -> None:
    counts, units = _col(CLOTH), _col(CLOTH_UNITS)
    assert counts.sum() == 153 and units.sum() == 107.5
    det = UChart(min_baseline=10).fit(counts, units)
    ubar = 153 / 107.5
    assert det.center_[0] == pytest.approx(ubar, rel=1e-15) and round(ubar, 2) == 1.42
    res = det.update(counts, units)
    n = np.asarray(CLOTH_UNITS)
    np.testing.assert_allclose(res.ucl[:, 0], ubar + 3 * np.sqrt(ubar / n), rtol=1e-14)
    np.testing.assert_allclose(res.lcl[:, 0], ubar - 3 * np.sqrt(ubar / n), rtol=1e-14)
    np.testing.assert_allclose(res.statistic[:, 0], np.asarray(CLOTH) / n, rtol=1e-15)
    # roll 1 (10 units): UCL 2.56, LCL 0.29; roll 3 (13 units): UCL 2.42, LCL 0.43
    assert (round(res.ucl[0, 0], 2), round(res.lcl[0, 0], 2)) == (2.56, 0.29)
    assert (round(res.ucl[2, 0], 2), round(res.lcl[2, 0], 2)) == (2.42, 0.43)
    assert res.invalid.tolist() == [0] and not res.signal.any()
