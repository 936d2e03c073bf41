"""Frozen-sensor detector: the contract, run counting with NaN and tolerance, chunk invariance."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.detector import Detector, NotFittedError, ParameterError
from models.stuck import Stuck, StuckResult


def _fitted(tags: int = 1, **kwargs: float) -> Stuck:
    return Stuck(**kwargs).fit(np.zeros((1, tags)))


def test_follows_the_detector_contract() -> None:
    det = Stuck()
    assert isinstance(det, Detector)
    assert det.fit(np.random.default_rng(0).normal(size=(5, 3))) is det
    assert det.n_tags_ == 3
    assert Stuck().fit_known([1.0, 2.0], [0.1, 0.1]).n_tags_ == 2


def test_update_before_fit_is_a_clear_error() -> None:
    with pytest.raises(
        NotFittedError, match=r"This Stuck is not fitted yet; call fit\(baseline\) before update."
    ):
        Stuck().update(np.zeros((3, 1)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, r"The 'n' parameter of Stuck must be an int >= 1. Got 0 instead."),
        ({"n": 2.5}, r"The 'n' parameter of Stuck must be an int >= 1. Got 2.5 instead."),
        (
            {"tolerance": -0.1},
            r"The 'tolerance' parameter of Stuck must be a float >= 0. Got -0.1 instead.",
        ),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        Stuck(**kwargs)


def test_signals_while_a_value_repeats_n_times() -> None:
    x = np.array([1.0, 2.0, 2.0, 2.0, 2.0, 3.0, 3.0])[:, None]
    res = _fitted(n=3).update(x)
    assert res.run_length[:, 0].tolist() == [0, 0, 1, 2, 3, 0, 1]
    assert res.signal[:, 0].tolist() == [0, 0, 0, 0, 1, 0, 0]


def test_signal_is_a_level_for_as_long_as_the_tag_is_stuck() -> None:
    res = _fitted(n=2).update(np.full(6, 7.5))
    assert res.signal[:, 0].tolist() == [0, 0, 1, 1, 1, 1]


def test_nan_is_skipped_without_breaking_or_extending_the_run() -> None:
    x = np.array([4.0, 4.0, np.nan, np.nan, 4.0, 5.0, np.nan, 5.0])[:, None]
    res = _fitted(n=2).update(x)
    assert res.skipped.tolist() == [3]
    assert res.run_length[:, 0].tolist() == [0, 1, 1, 1, 2, 0, 0, 1]
    assert res.signal[:, 0].tolist() == [0, 0, 0, 0, 1, 0, 0, 0]


def test_tolerance_counts_small_changes_as_unchanged() -> None:
    x = np.array([1.0, 1.004, 0.998, 1.003, 1.5])[:, None]
    assert _fitted(n=3).update(x).signal[:, 0].tolist() == [0, 0, 0, 0, 0]
    loose = _fitted(n=3, tolerance=0.01).update(x)
    assert loose.run_length[:, 0].tolist() == [0, 1, 2, 3, 0]
    assert loose.signal[:, 0].tolist() == [0, 0, 0, 1, 0]


def test_tags_are_independent_and_huge_values_do_not_warn() -> None:
    x = np.array([[1e308, 3.0], [-1e308, 3.0], [-1e308, 3.0], [np.inf, 3.0]])
    res = _fitted(tags=2, n=2).update(x)
    assert res.run_length.tolist() == [[0, 0], [0, 1], [1, 2], [1, 3]]
    assert res.skipped.tolist() == [1, 0]


def test_reset_forgets_the_run_and_pickle_round_trip_keeps_it() -> None:
    det = _fitted(n=3)
    det.update(np.full(3, 2.0))
    clone = pickle.loads(pickle.dumps(det))
    assert clone.update([2.0]).signal.tolist() == [[1]]
    assert (clone.n, clone.tolerance) == (3, 0.0)
    det.reset()
    assert det.update([2.0]).run_length.tolist() == [[0]]


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(0, 60), max_size=3), seed=st.integers(0, 2**16))
def test_chunking_does_not_change_results(cuts: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=(60, 4)).astype(np.float64)  # repeats are common
    x[rng.random(x.shape) < 0.15] = np.nan
    whole = _fitted(tags=4, n=3).update(x)
    det = _fitted(tags=4, n=3)
    bounds = [0, *sorted(cuts), 60]
    parts: list[StuckResult] = [
        det.update(x[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)
    ]
    for name in ("run_length", "signal"):
        joined = np.vstack([getattr(p, name) for p in parts])
        np.testing.assert_array_equal(joined, getattr(whole, name))
    assert sum(p.skipped for p in parts).tolist() == whole.skipped.tolist()
