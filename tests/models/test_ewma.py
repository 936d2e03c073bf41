"""EWMA chart: the contract, chunk invariance, NaN hygiene and run lengths against theory.

The run-length checks compare a vectorized simulation with the Markov-chain ARL of Lucas &
Saccucci's design (lam 0.2, L 3.0: ARL0 = 559.8 with asymptotic limits). The tolerance is four
Monte-Carlo standard errors of the mean run length, so the test fails on a real bias, not on
noise (seeded, so it is also repeatable).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.detector import BaselineError, Detector, NotFittedError, ParameterError
from models.ewma import Ewma


def _fitted(seed: int = 0, tags: int = 3) -> Ewma:
    return Ewma(lam=0.2, L=3.0).fit(np.random.default_rng(seed).normal(size=(100, tags)))


def test_follows_the_detector_contract() -> None:
    det = Ewma()
    assert isinstance(det, Detector)
    assert det.fit(np.random.default_rng(0).normal(size=(50, 2))) is det
    assert det.center_.shape == (2,) and det.sigma_.shape == (2,)


def test_update_before_fit_is_a_clear_error() -> None:
    with pytest.raises(NotFittedError, match="not fitted yet; call fit"):
        Ewma().update(np.zeros((3, 1)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"lam": 1.5},
            r"The 'lam' parameter of Ewma must be a float in \(0, 1\]. Got 1.5 instead.",
        ),
        ({"lam": 0}, r"'lam' parameter of Ewma must be a float in \(0, 1\]. Got 0 instead."),
        ({"L": -1.0}, r"The 'L' parameter of Ewma must be a float > 0. Got -1.0 instead."),
        ({"limits": "wide"}, r"'limits' parameter of Ewma must be one of 'exact', 'asymptotic'"),
        ({"min_baseline": 1}, r"'min_baseline' parameter of Ewma must be an int >= 2"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        Ewma(**kwargs)


def test_short_baseline_names_the_tag() -> None:
    x = np.random.default_rng(0).normal(size=(30, 2))
    x[7:, 1] = np.nan
    with pytest.raises(
        BaselineError, match="at least 20 baseline samples per tag; tag lane03_A has 7"
    ):
        Ewma().fit(x, tags=["lane01_A", "lane03_A"])


def test_flat_baseline_is_rejected() -> None:
    with pytest.raises(BaselineError, match="baseline that varies"):
        Ewma().fit(np.ones((30, 1)))


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(0, 60), seed=st.integers(0, 2**16))
def test_chunking_does_not_change_results(cut: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 4))
    x[rng.random(x.shape) < 0.1] = np.nan
    whole = _fitted(tags=4).update(x)
    det = _fitted(tags=4)
    a, b = det.update(x[:cut]), det.update(x[cut:])
    for name in ("statistic", "lcl", "ucl", "signal"):
        joined = np.vstack([getattr(a, name), getattr(b, name)])
        np.testing.assert_array_equal(joined, getattr(whole, name))


def test_nan_samples_are_skipped_and_counted_without_moving_state() -> None:
    x = np.random.default_rng(3).normal(size=(20, 2))
    gappy = x.copy()
    gappy[5:9, 0] = np.nan
    res = _fitted(tags=2).update(gappy)
    assert res.skipped.tolist() == [4, 0]
    assert np.isnan(res.statistic[5:9, 0]).all() and (res.signal[5:9, 0] == 0).all()
    clean = _fitted(tags=2).update(np.delete(x, range(5, 9), axis=0))
    np.testing.assert_allclose(
        res.statistic[~np.isnan(res.statistic[:, 0]), 0], clean.statistic[:, 0]
    )
    np.testing.assert_allclose(res.statistic[:, 1], _fitted(tags=2).update(x).statistic[:, 1])


def test_parameters_unchanged_by_use_and_pickle_round_trip() -> None:
    det = _fitted()
    before = (det.lam, det.L, det.limits, det.min_baseline)
    det.update(np.random.default_rng(1).normal(size=(10, 3)))
    assert (det.lam, det.L, det.limits, det.min_baseline) == before
    clone = pickle.loads(pickle.dumps(det))
    nxt = np.random.default_rng(2).normal(size=(10, 3))
    np.testing.assert_array_equal(clone.update(nxt).statistic, det.update(nxt).statistic)


def test_reset_restarts_the_statistic_but_keeps_the_fit() -> None:
    det = _fitted()
    x = np.random.default_rng(4).normal(size=(10, 3))
    first = det.update(x)
    det.reset()
    np.testing.assert_array_equal(det.update(x).statistic, first.statistic)


def _run_lengths(shift: float, tags: int, steps: int, seed: int) -> np.ndarray:
    det = Ewma(lam=0.2, L=3.0, limits="asymptotic").fit_known(np.zeros(tags), np.ones(tags))
    x = np.random.default_rng(seed).normal(size=(steps, tags)) + shift
    sig = det.update(x).signal != 0
    assert sig.any(axis=0).all(), "some runs never signalled; raise steps"
    return sig.argmax(axis=0) + 1


def test_in_control_arl_matches_lucas_saccucci() -> None:
    rl = _run_lengths(0.0, tags=4000, steps=8000, seed=11)
    se = rl.std(ddof=1) / np.sqrt(rl.size)
    assert abs(rl.mean() - 559.8) < 4 * se, (rl.mean(), se)


def test_one_sigma_shift_arl_matches_theory() -> None:
    # Markov chain (Brook & Evans, 401 states) for lam 0.2, L 3.0, shift 1 sigma: 10.84.
    rl = _run_lengths(1.0, tags=4000, steps=200, seed=12)
    se = rl.std(ddof=1) / np.sqrt(rl.size)
    assert abs(rl.mean() - 10.84) < 4 * se, (rl.mean(), se)


def test_many_tags_with_gaps_match_the_sample_by_sample_recursion() -> None:
    rng = np.random.default_rng(72)
    lam, width = 0.2, 3.0
    x = rng.normal(size=(300, 400)) + np.where(np.arange(400) % 3 == 0, 1.0, 0.0)
    x[rng.random(x.shape) < 0.02] = np.nan
    x[:, 5] = np.nan
    x[40, 7], x[41, 8] = np.inf, -np.inf
    det = Ewma(lam=lam, L=width).fit_known(np.zeros(400), np.ones(400))
    res = [det.update(x[a:b]) for a, b in ((0, 100), (100, 100), (100, 137), (137, 300))]
    stat = np.concatenate([r.statistic for r in res])
    ucl = np.concatenate([r.ucl for r in res])
    lcl = np.concatenate([r.lcl for r in res])
    signal = np.concatenate([r.signal for r in res])
    for j in range(0, 400, 7):
        z, n = 0.0, 0
        for i, v in enumerate(x[:, j]):
            if not np.isfinite(v):
                assert np.isnan(stat[i, j]) and signal[i, j] == 0
                continue
            z, n = lam * v + (1.0 - lam) * z, n + 1
            limit = width * np.sqrt(lam / (2.0 - lam) * (1.0 - (1.0 - lam) ** (2 * n)))
            assert stat[i, j] == z and ucl[i, j] == pytest.approx(limit, rel=1e-12), (i, j)
            assert lcl[i, j] == -ucl[i, j], (i, j)
            assert signal[i, j] == int(z > ucl[i, j]) - int(z < lcl[i, j]), (i, j)
    assert sum(r.skipped for r in res)[5] == 300
    assert (signal != 0).any()
