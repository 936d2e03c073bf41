"""Tabular CUSUM: the contract, Montgomery's worked example, chunk invariance and run lengths.

The worked example (Montgomery Table 9.1 data, mu0 = 10, sigma = 1, k = 1/2, h = 5) is checked
value by value: C+, N+ and C- per period, the first signal at period 29, N+ = 7 there and the
estimated new mean 11.25. The run-length checks compare a vectorized, seeded simulation with
the published zero-state ARLs of the two-sided chart (k = 1/2, h = 4 and 5) within four
Monte-Carlo standard errors of the mean run length.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.cusum import Cusum, CusumResult
from models.detector import BaselineError, Detector, NotFittedError, ParameterError

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "spc_reference.json"
ROW_FIELDS = ("c_plus", "c_minus", "n_plus", "n_minus", "signal", "change_point", "shift", "sample")


def _reference(name: str) -> dict[str, Any]:
    if not REFERENCE.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"reference data missing: {REFERENCE}")
        pytest.skip(f"reference data missing: {REFERENCE}")
    entry: dict[str, Any] = json.loads(REFERENCE.read_text())[name]
    return entry


def _fitted(seed: int = 0, tags: int = 3, **kwargs: Any) -> Cusum:
    return Cusum(**kwargs).fit(np.random.default_rng(seed).normal(size=(100, tags)))


def _montgomery() -> tuple[np.ndarray, dict[str, Any], CusumResult]:
    ref = _reference("montgomery_cusum_example_table_9_1")
    p = ref["params"]
    x = np.array(ref["data"])
    det = Cusum(k=p["K"], h=p["H"]).fit_known([p["mu0"]], [p["sigma"]])
    return x, ref["expected"], det.update(x)


# -- contract ------------------------------------------------------------------------------


def test_follows_the_detector_contract() -> None:
    det = Cusum()
    assert isinstance(det, Detector)
    assert det.fit(np.random.default_rng(0).normal(size=(50, 2))) is det
    assert det.center_.shape == (2,) and det.sigma_.shape == (2,)


def test_fit_learns_mean_and_moving_range_sigma() -> None:
    base = np.tile([1.0, 3.0], 15)  # mean 2, every moving range 2
    det = Cusum(k=0.5, h=4.0).fit(base)
    np.testing.assert_allclose(det.center_, [2.0])
    np.testing.assert_allclose(det.sigma_, [2.0 / 1.128])
    np.testing.assert_allclose(det.reference_, 0.5 * det.sigma_)
    np.testing.assert_allclose(det.interval_, 4.0 * det.sigma_)


def test_update_before_fit_is_a_clear_error() -> None:
    with pytest.raises(
        NotFittedError, match=r"This Cusum is not fitted yet; call fit\(baseline\) before update."
    ):
        Cusum().update(np.zeros((3, 1)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": -0.5}, r"The 'k' parameter of Cusum must be a float >= 0. Got -0.5 instead."),
        ({"h": 0}, r"The 'h' parameter of Cusum must be a float > 0. Got 0 instead."),
        ({"h": "5"}, r"The 'h' parameter of Cusum must be a float > 0. Got '5' instead."),
        (
            {"h": 4.0, "head_start": 4.0},
            r"The 'head_start' parameter of Cusum must be a float in \[0, 4\). Got 4.0 instead.",
        ),
        ({"min_baseline": 1}, r"The 'min_baseline' parameter of Cusum must be an int >= 2"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        Cusum(**kwargs)


def test_short_baseline_names_the_tag() -> None:
    x = np.random.default_rng(0).normal(size=(30, 2))
    x[7:, 1] = np.nan
    with pytest.raises(
        BaselineError, match="CUSUM needs at least 20 baseline samples per tag; tag lane03_A has 7"
    ):
        Cusum().fit(x, tags=["lane01_A", "lane03_A"])
    with pytest.raises(BaselineError, match="tag #1 has 7"):
        Cusum().fit(x)


def test_flat_baseline_and_bad_known_sigma_are_rejected() -> None:
    with pytest.raises(BaselineError, match="baseline that varies; tag #0"):
        Cusum().fit(np.ones((30, 1)))
    with pytest.raises(BaselineError, match="sigma must be > 0"):
        Cusum().fit_known([1.0, 2.0], [1.0, 0.0])


def test_parameters_unchanged_by_use_and_pickle_round_trip() -> None:
    det = _fitted(head_start=1.0)
    before = (det.k, det.h, det.min_baseline, det.head_start)
    det.update(np.random.default_rng(1).normal(size=(10, 3)) + 1.0)
    assert (det.k, det.h, det.min_baseline, det.head_start) == before
    clone = pickle.loads(pickle.dumps(det))
    nxt = np.random.default_rng(2).normal(size=(10, 3)) + 1.0
    a, b = clone.update(nxt), det.update(nxt)
    for name in ROW_FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_reset_restarts_statistics_and_sample_count_but_keeps_the_fit() -> None:
    det = _fitted()
    center = det.center_.copy()
    x = np.random.default_rng(4).normal(size=(40, 3)) + 1.5
    first = det.update(x)
    assert first.signal.any()  # so the reset has state to forget
    det.reset()
    again = det.update(x)
    np.testing.assert_array_equal(det.center_, center)
    for name in ROW_FIELDS:
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))


# -- Montgomery's worked example -----------------------------------------------------------


def test_montgomery_table_statistics_period_by_period() -> None:
    _, expected, res = _montgomery()
    np.testing.assert_allclose(res.c_plus[:, 0], expected["C_plus"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.c_minus[:, 0], expected["C_minus"], rtol=0, atol=1e-9)
    assert res.n_plus[:, 0].tolist() == expected["N_plus"]
    # N- is not tabulated; it is the length of the current run of nonzero C-.
    runs, n = [], 0
    for c in expected["C_minus"]:
        n = n + 1 if c > 0 else 0
        runs.append(n)
    assert res.n_minus[:, 0].tolist() == runs
    assert res.skipped.tolist() == [0]


def test_montgomery_signal_change_point_and_new_mean() -> None:
    _, expected, res = _montgomery()
    periods = (np.flatnonzero(res.signal[:, 0]) + 1).tolist()
    assert periods == expected["signal_periods"]
    assert periods[0] == expected["first_signal_period_1based"]
    assert expected["signal_side"] == "upper" and (res.signal[res.signal != 0] == 1).all()
    first = periods[0] - 1
    assert res.n_plus[first, 0] == expected["N_plus_at_signal"]
    assert round(float(res.shift[first, 0]), 2) == expected["mu_hat_after_shift"]
    # "The shift began after period 22" (1-based) is sample index 22 counted from 0.
    assert res.change_point[first, 0] == expected["shift_began_after_period"]
    assert res.sample[first, 0] - res.n_plus[first, 0] + 1 == res.change_point[first, 0]
    quiet = res.signal[:, 0] == 0
    assert (res.change_point[quiet, 0] == -1).all() and np.isnan(res.shift[quiet, 0]).all()


def test_statistic_continues_after_a_signal() -> None:
    x, expected, res = _montgomery()
    # Period 30 continues from C+ = 5.28 (no reset): 5.28 + 10.52 - 10.5 = 5.30.
    assert res.c_plus[29, 0] == pytest.approx(res.c_plus[28, 0] + x[29] - 10.5)
    assert res.signal[29, 0] == 1 and res.n_plus[29, 0] == expected["N_plus_at_signal"] + 1


def test_statistics_are_in_data_units() -> None:
    x, expected, _ = _montgomery()
    det = Cusum(k=0.5, h=5.0).fit_known([100.0], [2.0])
    res = det.update(100.0 + 2.0 * (x - 10.0))
    np.testing.assert_allclose(res.c_plus[:, 0], 2.0 * np.array(expected["C_plus"]), atol=1e-9)
    assert (np.flatnonzero(res.signal[:, 0]) + 1).tolist() == expected["signal_periods"]
    assert res.shift[28, 0] == pytest.approx(
        100.0 + 2.0 * (expected["mu_hat_after_shift"] - 10), abs=0.02
    )


def test_lower_side_signals_minus_one_with_its_own_estimate() -> None:
    x, _, _ = _montgomery()
    res = Cusum().fit_known([10.0], [1.0]).update(20.0 - x)  # the example mirrored
    assert (np.flatnonzero(res.signal[:, 0] == -1) + 1).tolist() == [29, 30]
    np.testing.assert_allclose(res.c_minus[28, 0], 5.28, atol=1e-9)
    assert res.shift[28, 0] == pytest.approx(10.0 - 0.5 - 5.28 / 7)


def test_head_start_starts_both_sides_above_zero() -> None:
    det = Cusum(k=0.5, h=5.0, head_start=2.5).fit_known([0.0], [2.0])
    res = det.update([[1.0]])
    # C+ = max(0, 1 - 1 + 5), C- = max(0, -1 - 1 + 5): head start 2.5 sigma = 5 data units.
    assert res.c_plus[0, 0] == 5.0 and res.c_minus[0, 0] == 3.0
    assert res.n_plus[0, 0] == 1 and res.n_minus[0, 0] == 1


# -- chunking and NaN hygiene --------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(st.integers(0, 80), min_size=2, max_size=2),
    seed=st.integers(0, 2**16),
    head=st.sampled_from([0.0, 2.0]),
)
def test_chunking_does_not_change_results(cuts: list[int], seed: int, head: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(80, 4)) + np.array([0.0, 1.0, -1.0, 0.5])
    x[rng.random(x.shape) < 0.1] = np.nan
    lo, hi = sorted(cuts)
    whole = _fitted(tags=4, head_start=head).update(x)
    assert whole.signal.any()  # the comparison covers signalling rows too
    det = _fitted(tags=4, head_start=head)
    parts = [det.update(x[:lo]), det.update(x[lo:hi]), det.update(x[hi:])]
    for name in ROW_FIELDS:
        joined = np.vstack([getattr(p, name) for p in parts])
        np.testing.assert_array_equal(joined, getattr(whole, name), err_msg=name)
    np.testing.assert_array_equal(sum(p.skipped for p in parts), whole.skipped)


def test_nan_samples_are_skipped_and_counted_without_moving_state() -> None:
    x = np.random.default_rng(3).normal(size=(30, 2)) + 0.8
    gappy = x.copy()
    gappy[5:9, 0] = np.nan
    res = _fitted(tags=2).update(gappy)
    assert res.skipped.tolist() == [4, 0]
    assert np.isnan(res.c_plus[5:9, 0]).all() and (res.signal[5:9, 0] == 0).all()
    assert (res.n_plus[5:9, 0] == res.n_plus[4, 0]).all()  # carried, not advanced
    clean = _fitted(tags=2).update(np.delete(x, range(5, 9), axis=0))
    keep = ~np.isnan(res.c_plus[:, 0])
    for name in ("c_plus", "c_minus", "n_plus", "n_minus", "signal"):
        np.testing.assert_array_equal(getattr(res, name)[keep, 0], getattr(clean, name)[:, 0])
    full = _fitted(tags=2).update(x)
    np.testing.assert_array_equal(res.c_plus[:, 1], full.c_plus[:, 1])


def test_change_point_counts_rows_including_gaps() -> None:
    det = Cusum(k=0.5, h=4.0).fit_known([0.0], [1.0])
    x = np.array([0.0, 0.0, 2.0, np.nan, np.nan, 2.0, 2.0])[:, None]
    res = det.update(x)
    # C+ = 1.5, (gap), 3.0, 4.5 > 4: the excursion began at row 2; N+ counts 3 valid samples.
    assert res.signal[:, 0].tolist() == [0, 0, 0, 0, 0, 0, 1]
    assert res.change_point[6, 0] == 2 and res.n_plus[6, 0] == 3
    assert res.sample[:, 0].tolist() == list(range(7))
    more = det.update(np.array([[2.0]]))
    assert more.sample[0, 0] == 7 and more.change_point[0, 0] == 2


# -- run lengths against the literature ----------------------------------------------------


def _run_lengths(h: float, shift: float, tags: int, seed: int, head: float = 0.0) -> np.ndarray:
    """First-signal times of ``tags`` independent two-sided charts, simulated chunk by chunk."""
    det = Cusum(k=0.5, h=h, head_start=head).fit_known(np.zeros(tags), np.ones(tags))
    rng = np.random.default_rng(seed)
    rl = np.zeros(tags, dtype=np.int64)
    done = np.zeros(tags, dtype=bool)
    rows, chunk = 0, 400
    while not done.all():
        assert rows < 40_000, "some runs never signalled"
        sig = det.update(rng.normal(size=(chunk, tags)) + shift).signal != 0
        hit = sig.any(axis=0) & ~done
        rl[hit] = rows + sig[:, hit].argmax(axis=0) + 1
        done |= hit
        rows += chunk
    return rl


@pytest.mark.parametrize(("h", "seed"), [(4, 41), (5, 51)])
def test_in_control_arl_matches_published_table(h: int, seed: int) -> None:
    ref = _reference("arl_tabular_cusum_k0.5")
    assert ref["params"]["sided"] == "two" and ref["params"]["head_start"] == 0
    arl0 = ref["expected"][f"h{h}"]["0.0"]
    rl = _run_lengths(float(h), 0.0, tags=8000, seed=seed)
    se = rl.std(ddof=1) / np.sqrt(rl.size)
    assert abs(rl.mean() - arl0) < 4 * se, (rl.mean(), se)


@pytest.mark.parametrize("h", [4, 5])
@pytest.mark.parametrize("shift", ["0.5", "1.0", "2.0"])
def test_shifted_arl_matches_published_table(h: int, shift: str) -> None:
    arl = _reference("arl_tabular_cusum_k0.5")["expected"][f"h{h}"][shift]
    rl = _run_lengths(float(h), float(shift), tags=4000, seed=7 * h + int(10 * float(shift)))
    se = rl.std(ddof=1) / np.sqrt(rl.size)
    assert abs(rl.mean() - arl) < 4 * se, (rl.mean(), se)


def test_head_start_shortens_the_run_length_after_a_start_up_shift() -> None:
    plain = _run_lengths(5.0, 1.0, tags=4000, seed=61)
    fir = _run_lengths(5.0, 1.0, tags=4000, seed=62, head=2.5)
    se = np.hypot(plain.std(ddof=1), fir.std(ddof=1)) / np.sqrt(4000)
    assert plain.mean() - fir.mean() > 4 * se, (plain.mean(), fir.mean(), se)


def _sample_by_sample(x: np.ndarray, mu0: float, sigma: float, k: float, h: float) -> dict:
    """Montgomery's eqs. 9.2-9.5 one sample at a time, to check the row-vectorized recursion."""
    out: dict[str, list] = {f: [] for f in ("c_plus", "c_minus", "n_plus", "n_minus", "signal")}
    out["change_point"], out["shift"] = [], []
    cp = cm = 0.0
    n_p = n_m = s_p = s_m = 0
    big, ref = h * sigma, k * sigma
    for i, v in enumerate(x):
        if np.isfinite(v):
            cp, cm = max(0.0, v - (mu0 + ref) + cp), max(0.0, (mu0 - ref) - v + cm)
            n_p, n_m = (n_p + 1 if cp > 0 else 0), (n_m + 1 if cm > 0 else 0)
            s_p, s_m = (i if n_p == 1 else s_p), (i if n_m == 1 else s_m)
        up = bool(np.isfinite(v) and cp > big and not (cm > big and cm > cp))
        dn = bool(np.isfinite(v) and cm > big and not up)
        out["c_plus"].append(cp if np.isfinite(v) else np.nan)
        out["c_minus"].append(cm if np.isfinite(v) else np.nan)
        out["n_plus"].append(n_p)
        out["n_minus"].append(n_m)
        out["signal"].append(int(up) - int(dn))
        out["change_point"].append(s_p if up else s_m if dn else -1)
        shift = mu0 + ref + cp / n_p if up else mu0 - ref - cm / n_m if dn else np.nan
        out["shift"].append(shift)
    return out


def test_many_tags_with_gaps_match_the_sample_by_sample_recursion() -> None:
    rng = np.random.default_rng(71)
    x = rng.normal(size=(300, 400)) + np.where(np.arange(400) % 3 == 0, 1.5, 0.0)
    x[rng.random(x.shape) < 0.02] = np.nan  # scattered gaps in most tags
    x[:, 5] = np.nan
    x[40, 7], x[41, 8] = np.inf, -np.inf
    det = Cusum(k=0.5, h=4.0).fit_known(np.zeros(400), np.ones(400))
    res = [det.update(x[a:b]) for a, b in ((0, 100), (100, 100), (100, 137), (137, 300))]
    for j in range(0, 400, 7):
        ref = _sample_by_sample(x[:, j], 0.0, 1.0, 0.5, 4.0)
        for field, expected in ref.items():
            got = np.concatenate([getattr(r, field)[:, j] for r in res])
            np.testing.assert_array_equal(got, expected, err_msg=f"{field} of tag {j}")
    assert any((r.signal != 0).any() for r in res)


def test_wide_rows_match_the_sample_by_sample_recursion_across_chunk_edges() -> None:
    # Wide enough for the row-by-row marks; shifts that come and go make excursions end and
    # restart on and across chunk edges, so carried excursion starts are read and replaced.
    tags = 2500
    rng = np.random.default_rng(83)
    x = rng.normal(size=(240, tags))
    x[30:90] += np.where(np.arange(tags) % 2 == 0, 1.5, -1.5)
    x[150:200:2] += 2.5
    x[rng.random(x.shape) < 0.0005] = np.nan  # a few columns take the skipping path
    x[120, 11] = np.inf
    det = Cusum(k=0.5, h=4.0).fit_known(np.zeros(tags), np.ones(tags))
    cuts = (0, 1, 1, 29, 30, 89, 90, 91, 150, 151, 240)
    res = [det.update(x[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    for j in [*range(0, tags, 37), 11]:
        ref = _sample_by_sample(x[:, j], 0.0, 1.0, 0.5, 4.0)
        for field, expected in ref.items():
            got = np.concatenate([getattr(r, field)[:, j] for r in res])
            np.testing.assert_array_equal(got, expected, err_msg=f"{field} of tag {j}")
    signals = np.concatenate([r.signal for r in res])
    assert (signals[30:90] == 1).any() and (signals[30:90] == -1).any()
    assert (signals[150:200] == 1).sum() > (signals[100:150] == 1).sum()


def test_result_representation_of_counts_and_sample() -> None:
    det = Cusum().fit_known(np.zeros(3), np.ones(3))
    det.update(np.zeros((4, 3)))
    res = det.update(np.full((5, 3), 2.0))
    assert res.n_plus.dtype == np.int32 and res.n_minus.dtype == np.int32
    assert res.n_plus[:, 0].tolist() == [1, 2, 3, 4, 5]
    assert res.sample.shape == (5, 3) and res.sample.dtype == np.int64
    assert res.sample.tolist() == [[i] * 3 for i in range(4, 9)]
    assert not res.sample.flags.writeable  # one shared column, not a copy per tag
    with pytest.raises(ValueError):
        res.sample[0, 0] = 0
