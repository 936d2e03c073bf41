"""Individuals (I-MR) chart: the contract, chunking, gaps, published limits, run lengths.

Published values: Montgomery's aircraft primer paint viscosity data as charted by qcc
(spc_reference.json "qcc_viscosity_individuals_IMR"), checked to every printed digit. Run
lengths: for 3-sigma limits on independent normal data a signal is a Bernoulli event with
p = Phi(-3 - d) + 1 - Phi(3 - d), so ARL = 1 / p (370.40 in control, 43.89 at a 1-sigma shift).
The simulated mean run length must lie within four Monte-Carlo standard errors of it.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import shewhart
from models.detector import BaselineError, Detector, NotFittedError, ParameterError
from models.shewhart import Individuals, IndividualsResult

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "spc_reference.json"
FIELDS = ("x", "mr", "lcl", "ucl", "mr_ucl", "signal", "mr_signal")


def _reference(name: str) -> dict[str, Any]:
    if not REFERENCE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"reference data missing: {REFERENCE}")
        pytest.skip(f"reference data missing: {REFERENCE}")
    entry: dict[str, Any] = json.loads(REFERENCE.read_text())[name]
    return entry


def _agrees_to_printed_digits(value: float, printed: float) -> bool:
    """True if ``value`` rounds to ``printed`` at the number of decimals it was printed with."""
    decimals = -Decimal(repr(printed)).as_tuple().exponent
    assert isinstance(decimals, int)
    return abs(value - printed) <= 0.5 * 10.0**-decimals * (1 + 1e-9)


def _fitted(seed: int = 0, tags: int = 3) -> Individuals:
    return Individuals().fit(np.random.default_rng(seed).normal(size=(60, tags)))


def test_follows_the_detector_contract() -> None:
    det = Individuals()
    assert isinstance(det, Detector)
    assert det.fit(np.random.default_rng(0).normal(size=(50, 2))) is det
    for name in ("center_", "sigma_", "mr_bar_", "lcl_", "ucl_", "mr_ucl_"):
        assert getattr(det, name).shape == (2,), name
    res = det.update(np.zeros((4, 2)))
    assert isinstance(res, IndividualsResult)
    for name in FIELDS:
        assert getattr(res, name).shape == (4, 2), name
    assert res.signal.dtype == np.int8 and res.mr_signal.dtype == np.int8
    assert res.skipped.shape == (2,)
    assert shewhart.__all__ == ["Individuals", "IndividualsResult"]


def test_fit_known_sets_the_limits() -> None:
    det = Individuals(L=2.5).fit_known([10.0, 0.0], [2.0, 0.5])
    np.testing.assert_allclose(det.lcl_, [5.0, -1.25])
    np.testing.assert_allclose(det.ucl_, [15.0, 1.25])
    np.testing.assert_allclose(det.mr_ucl_, [3.267 * 1.128 * 2.0, 3.267 * 1.128 * 0.5])
    with pytest.raises(BaselineError, match="sigma finite and > 0"):
        Individuals().fit_known([0.0], [0.0])
    with pytest.raises(ValueError, match="1-D of one length"):
        Individuals().fit_known([0.0, 1.0], [1.0])


def test_update_before_fit_is_a_clear_error() -> None:
    with pytest.raises(
        NotFittedError,
        match=r"This Individuals is not fitted yet; call fit\(baseline\) before update.",
    ):
        Individuals().update(np.zeros((3, 1)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"L": 0}, r"The 'L' parameter of Individuals must be a float > 0. Got 0 instead."),
        ({"L": "3"}, r"The 'L' parameter of Individuals must be a float > 0. Got '3' instead."),
        (
            {"min_baseline": 1},
            r"The 'min_baseline' parameter of Individuals must be an int >= 2. Got 1 instead.",
        ),
        ({"min_baseline": 20.0}, r"'min_baseline' parameter of Individuals must be an int >= 2"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        Individuals(**kwargs)


def test_short_baseline_names_the_tag() -> None:
    x = np.random.default_rng(0).normal(size=(30, 2))
    x[7:, 1] = np.nan
    with pytest.raises(
        BaselineError,
        match="Individuals needs at least 20 baseline samples per tag; tag lane03_A has 7",
    ):
        Individuals().fit(x, tags=["lane01_A", "lane03_A"])
    with pytest.raises(BaselineError, match="tag #1 has 7"):
        Individuals().fit(x)


def test_flat_baseline_is_rejected() -> None:
    with pytest.raises(BaselineError, match="baseline that varies; tag #0 has MRbar 0.0"):
        Individuals().fit(np.ones((30, 1)))


def test_wrong_shapes_raise() -> None:
    det = _fitted(tags=2)
    with pytest.raises(ValueError, match="2 tag columns as in fit, got 3"):
        det.update(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"shaped \(time, tags\)"):
        det.update(np.zeros((4, 2, 2)))


@settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(st.integers(0, 40), min_size=0, max_size=3),
    seed=st.integers(0, 2**16),
    nan_rate=st.sampled_from([0.0, 0.2, 0.6]),
)
def test_chunking_does_not_change_results(cuts: list[int], seed: int, nan_rate: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 3)) * 1.5
    x[rng.random(x.shape) < nan_rate] = np.nan
    whole = _fitted(tags=3).update(x)
    det = _fitted(tags=3)
    bounds = [0, *sorted(cuts), 40]
    parts = [det.update(x[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    for name in FIELDS:
        joined = np.vstack([getattr(p, name) for p in parts])
        np.testing.assert_array_equal(joined, getattr(whole, name), err_msg=name)
    np.testing.assert_array_equal(sum(p.skipped for p in parts), whole.skipped)


@pytest.mark.parametrize("block", [1, 7, None])
def test_clean_and_gappy_tags_together_match_each_tag_alone(
    block: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tags without NaN take consecutive rows, tags with NaN pair usable samples; rows are
    # charted in blocks of ``block`` samples, so block edges are crossed too.
    if block is not None:
        monkeypatch.setattr(shewhart, "_BLOCK", block)
    rng = np.random.default_rng(11)
    x = rng.normal(size=(50, 4)) * 1.3
    x[rng.random(x.shape) < 0.3] = np.nan
    x[:, 0] = rng.normal(size=50) * 1.3  # no NaN
    x[7, 2] = np.inf
    det = _fitted(tags=4)
    parts = [det.update(x[a:b]) for a, b in [(0, 2), (2, 30), (30, 50)]]
    for j in range(4):
        alone = Individuals().fit_known(det.center_[j : j + 1], det.sigma_[j : j + 1])
        ref = alone.update(x[:, j : j + 1])
        for name in FIELDS:
            joined = np.vstack([getattr(p, name) for p in parts])[:, j : j + 1]
            np.testing.assert_array_equal(joined, getattr(ref, name), err_msg=f"{name} {j}")
        assert sum(p.skipped for p in parts)[j] == ref.skipped[0]
    assert sum(p.skipped for p in parts)[0] == 0 and (np.nan_to_num(parts[1].mr[:, 0]) > 0).all()


def test_moving_range_spans_chunks_and_gaps() -> None:
    det = Individuals().fit_known([0.0], [1.0])
    first = det.update([[1.0], [np.nan]])
    second = det.update([[4.0], [np.nan], [np.nan], [2.5]])
    assert np.isnan(first.mr).all()
    np.testing.assert_array_equal(second.mr[:, 0], [3.0, np.nan, np.nan, 1.5])
    assert first.skipped.tolist() == [1] and second.skipped.tolist() == [2]


def test_nan_samples_are_skipped_and_do_not_move_state() -> None:
    x = np.random.default_rng(3).normal(size=(20, 2))
    gappy = x.copy()
    gappy[5:9, 0] = np.nan
    res = _fitted(tags=2).update(gappy)
    assert res.skipped.tolist() == [4, 0]
    assert (res.signal[5:9, 0] == 0).all() and (res.mr_signal[5:9, 0] == 0).all()
    clean = _fitted(tags=2).update(np.delete(x, range(5, 9), axis=0))
    kept = ~np.isnan(gappy[:, 0])
    np.testing.assert_array_equal(res.mr[kept, 0], clean.mr[:, 0])
    np.testing.assert_array_equal(res.mr[:, 1], _fitted(tags=2).update(x).mr[:, 1])


def test_signals_on_both_charts() -> None:
    det = Individuals().fit_known([0.0], [1.0])
    res = det.update([[0.0], [3.5], [-3.2], [0.0], [0.1]])
    assert res.signal[:, 0].tolist() == [0, 1, -1, 0, 0]
    # MR limit 3.267 * 1.128 = 3.685: 6.7 exceeds it, 3.5 and 3.2 do not.
    assert res.mr_signal[:, 0].tolist() == [0, 0, 1, 0, 0]
    res = det.update([[3.0], [-0.7]])
    assert res.mr_signal[:, 0].tolist() == [0, 1]


def test_parameters_unchanged_by_use_and_pickle_round_trip_mid_stream() -> None:
    det = _fitted()
    det.update(np.random.default_rng(1).normal(size=(10, 3)))
    assert (det.L, det.min_baseline) == (3.0, 20)
    clone = pickle.loads(pickle.dumps(det))
    nxt = np.random.default_rng(2).normal(size=(10, 3))
    a, b = clone.update(nxt), det.update(nxt)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.isnan(a.mr[0]).any()


def test_reset_forgets_the_last_sample_but_keeps_the_fit() -> None:
    det = _fitted()
    limits = det.ucl_.copy()
    x = np.random.default_rng(4).normal(size=(10, 3))
    first = det.update(x)
    det.update(x)
    det.reset()
    again = det.update(x)
    np.testing.assert_array_equal(again.mr, first.mr)
    assert np.isnan(again.mr[0]).all()
    np.testing.assert_array_equal(det.ucl_, limits)


def test_viscosity_phase_one_limits_match_qcc() -> None:
    ref = _reference("qcc_viscosity_individuals_IMR")
    v = np.array(ref["data"]["viscosity"])
    trial = np.array(ref["data"]["trial(phase I)"])
    exp = ref["expected"]["phaseI_20"]
    det = Individuals().fit(v[trial])
    assert _agrees_to_printed_digits(det.center_[0], exp["center"])
    assert _agrees_to_printed_digits(det.sigma_[0], exp["std_dev"])
    assert _agrees_to_printed_digits(det.lcl_[0], exp["LCL"])
    assert _agrees_to_printed_digits(det.ucl_[0], exp["UCL"])
    assert _agrees_to_printed_digits(det.mr_bar_[0], exp["computed_MRbar"])
    res = det.update(v[trial])
    assert int(np.count_nonzero(res.signal)) == exp["violations(qcc test)"]
    assert np.flatnonzero(res.signal).tolist() == [3]  # batch 4, above the UCL


@pytest.mark.parametrize("how", ["deleted", "nan"])
def test_viscosity_limits_without_batch_four_match_qcc(how: str) -> None:
    ref = _reference("qcc_viscosity_individuals_IMR")
    v = np.array(ref["data"]["viscosity"])[:20]
    exp = ref["expected"]["phaseI_without_batch4(19 obs)"]
    if how == "deleted":
        baseline = np.delete(v, 3)
    else:  # a gap: the moving range pairs batches 3 and 5, as qcc does after deletion
        baseline = v.copy()
        baseline[3] = np.nan
    det = Individuals(min_baseline=19).fit(baseline)
    assert _agrees_to_printed_digits(det.center_[0], exp["center"])
    assert _agrees_to_printed_digits(det.sigma_[0], exp["std_dev"])
    assert _agrees_to_printed_digits(det.lcl_[0], exp["LCL"])
    assert _agrees_to_printed_digits(det.ucl_[0], exp["UCL"])


def _normal_tail(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _closed_form_arl(shift: float, L: float = 3.0) -> float:  # noqa: N803
    return 1.0 / (_normal_tail(L - shift) + _normal_tail(L + shift))


def test_closed_form_matches_the_published_arls() -> None:
    ref = _reference("arl_shewhart_individuals_3sigma")["expected"]
    published = ref["ARL_by_shift_champ_woodall"]
    assert _agrees_to_printed_digits(_closed_form_arl(0.0), published["0.0"])
    assert _agrees_to_printed_digits(_closed_form_arl(1.0), published["1.0"])


def _run_lengths(shift: float, runs: int, seed: int, block: int = 500) -> np.ndarray:
    """First signal time of ``runs`` independent charts, fed in blocks until all signalled."""
    det = Individuals().fit_known(np.zeros(runs), np.ones(runs))
    rng = np.random.default_rng(seed)
    first = np.zeros(runs, dtype=np.int64)
    done = np.zeros(runs, dtype=bool)
    t0 = 0
    while not done.all():
        assert t0 < 40_000, "runs did not all signal"
        sig = det.update(rng.normal(size=(block, runs)) + shift).signal != 0
        hit = sig.any(axis=0) & ~done
        first[hit] = t0 + sig[:, hit].argmax(axis=0) + 1
        done |= hit
        t0 += block
    return first


@pytest.mark.parametrize(("shift", "seed"), [(0.0, 21), (1.0, 22)])
def test_run_lengths_match_the_closed_form(shift: float, seed: int) -> None:
    arl = _closed_form_arl(shift)
    rl = _run_lengths(shift, runs=4000, seed=seed)
    se = rl.std(ddof=1) / np.sqrt(rl.size)
    assert abs(rl.mean() - arl) < 4 * se, (rl.mean(), arl, se)
