"""Per-recipe limits: routing, state kept across changeovers, unknown recipes, chunking.

The reference is the obvious slow implementation: one `Ewma` per recipe, each updated with its
recipe's runs in order. ``RecipeLimits`` must produce the same numbers, rows in chunk order, in
one result of the detector's own type, however the stream is chunked.
"""

from __future__ import annotations

import functools
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.cusum import Cusum, CusumResult
from models.detector import BaselineError, NotFittedError, ParameterError
from models.ewma import Ewma, EwmaResult
from models.recipe import RecipeLimits

MEANS = {"A": 10.0, "B": 20.0, "C": -5.0}
EWMA_FIELDS = ("statistic", "lcl", "ucl", "signal")


def _baselines(tags: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(m, 1.0, size=(80, tags)) for k, m in MEANS.items()}


def _stream(recipes: list[str], tags: int = 2, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = np.array([MEANS.get(r, 0.0) for r in recipes])
    return means[:, None] + rng.normal(size=(len(recipes), tags))


def test_fit_returns_self_with_one_detector_per_recipe() -> None:
    base = _baselines()
    limits = RecipeLimits(Ewma)
    assert limits.fit(base) is limits
    assert set(limits.detectors_) == set(MEANS)
    for key, det in limits.detectors_.items():
        np.testing.assert_allclose(det.center_, base[key].mean(axis=0))


def test_update_before_fit_is_a_clear_error() -> None:
    with pytest.raises(NotFittedError, match="This RecipeLimits is not fitted yet; call fit"):
        RecipeLimits(Ewma).update(np.zeros((3, 1)), ["A"] * 3)


def test_factory_must_be_callable() -> None:
    with pytest.raises(
        ParameterError,
        match=r"The 'factory' parameter of RecipeLimits must be a callable returning a "
        r"detector. Got 3 instead.",
    ):
        RecipeLimits(3)  # type: ignore[arg-type]


def test_bad_baseline_names_the_recipe_and_the_tag() -> None:
    base = _baselines()
    base["B"][5:, 1] = np.nan
    with pytest.raises(
        BaselineError,
        match="recipe 'B': EWMA needs at least 20 baseline samples per tag; tag lane03_A has 5",
    ):
        RecipeLimits(Ewma).fit(base, tags=["lane01_A", "lane03_A"])
    with pytest.raises(BaselineError, match="at least one recipe"):
        RecipeLimits(Ewma).fit({})


def test_routing_matches_one_detector_per_recipe_with_state_kept_across_switches() -> None:
    recipes = ["A"] * 7 + ["B"] * 5 + ["A"] * 4 + ["C"] * 3 + ["B"] * 6 + ["A"] * 2
    x = _stream(recipes)
    x[[2, 9, 20], [0, 1, 0]] = np.nan
    base = _baselines()
    res = RecipeLimits(Ewma).fit(base).update(x, recipes)
    assert isinstance(res, EwmaResult) and res.statistic.shape == x.shape

    own = {k: Ewma().fit(b) for k, b in base.items()}
    keys = np.array(recipes)
    bounds = [0, *np.flatnonzero(keys[1:] != keys[:-1]) + 1, len(recipes)]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        ref = own[recipes[start]].update(x[start:stop])
        for name in EWMA_FIELDS:
            np.testing.assert_array_equal(getattr(res, name)[start:stop], getattr(ref, name))
    assert res.skipped.tolist() == [2, 1]
    # A recipe change is not a shift: with per-recipe limits nothing signals, while one chart
    # fitted on recipe A alone would signal at the first changeover.
    assert not res.signal.any()
    assert (Ewma().fit(base["A"]).update(x).signal != 0).any()


def test_unknown_recipe_rows_are_skipped_counted_and_leave_state_alone() -> None:
    recipes = ["A"] * 5 + ["X"] * 3 + ["A"] * 5 + [None] * 2  # type: ignore[list-item]
    x = _stream(["A"] * 15)
    limits = RecipeLimits(Ewma).fit(_baselines())
    res = limits.update(x, recipes)
    unknown = np.array([r is None or r == "X" for r in recipes])
    assert np.isnan(res.statistic[unknown]).all() and np.isnan(res.ucl[unknown]).all()
    assert (res.signal[unknown] == 0).all()
    assert res.skipped.tolist() == [5, 5]
    assert limits.unknown_ == {"X": 3, None: 2}
    ref = Ewma().fit(_baselines()["A"]).update(x[~unknown])
    np.testing.assert_array_equal(res.statistic[~unknown], ref.statistic)


def test_chunk_of_only_unknown_or_no_rows() -> None:
    limits = RecipeLimits(Ewma).fit(_baselines(tags=3))
    res = limits.update(np.ones((4, 3)), ["Z"] * 4)
    assert isinstance(res, EwmaResult) and res.statistic.shape == (4, 3)
    assert np.isnan(res.statistic).all() and res.skipped.tolist() == [4, 4, 4]
    empty = limits.update(np.ones((0, 3)), [])
    assert empty.statistic.shape == (0, 3) and empty.skipped.tolist() == [0, 0, 0]


def test_recipe_must_name_every_row() -> None:
    limits = RecipeLimits(Ewma).fit(_baselines())
    with pytest.raises(ValueError, match=r"one recipe per row \(4\), got 3"):
        limits.update(np.zeros((4, 2)), ["A"] * 3)


@settings(max_examples=40, deadline=None)
@given(
    recipes=st.lists(st.sampled_from(["A", "B", "C", "X"]), min_size=0, max_size=50),
    cuts=st.lists(st.integers(0, 50), min_size=2, max_size=2),
    seed=st.integers(0, 2**16),
)
def test_chunking_does_not_change_results(recipes: list[str], cuts: list[int], seed: int) -> None:
    x = _stream(recipes, tags=3, seed=seed)
    rng = np.random.default_rng(seed)
    x[rng.random(x.shape) < 0.1] = np.nan
    lo, hi = sorted(min(c, len(recipes)) for c in cuts)
    whole_limits = RecipeLimits(Ewma).fit(_baselines(tags=3))
    whole = whole_limits.update(x, recipes)
    split = RecipeLimits(Ewma).fit(_baselines(tags=3))
    parts = [split.update(x[a:b], recipes[a:b]) for a, b in ((0, lo), (lo, hi), (hi, None))]
    for name in EWMA_FIELDS:
        joined = np.vstack([getattr(p, name) for p in parts])
        np.testing.assert_array_equal(joined, getattr(whole, name), err_msg=name)
    np.testing.assert_array_equal(sum(p.skipped for p in parts), whole.skipped)
    assert split.unknown_ == whole_limits.unknown_


def test_works_for_other_detectors_with_integer_fields() -> None:
    recipes = ["A"] * 30 + ["B"] * 10 + ["A"] * 30
    x = _stream(recipes, tags=1)
    x[40:] += 1.5  # recipe A drifts up after the changeover
    limits = RecipeLimits(functools.partial(Cusum, h=4.0)).fit(_baselines(tags=1))
    res = limits.update(x, recipes)
    assert isinstance(res, CusumResult)
    own = Cusum(h=4.0).fit(_baselines(tags=1)["A"])
    a_rows = np.array(recipes) == "A"
    ref = own.update(x[a_rows])
    for name in ("c_plus", "n_plus", "signal", "change_point", "sample"):
        np.testing.assert_array_equal(getattr(res, name)[a_rows], getattr(ref, name))
    assert (res.signal[40:] == 1).any()


def test_reset_and_pickle_round_trip() -> None:
    recipes = ["A"] * 10 + ["B"] * 10
    x = _stream(recipes)
    limits = RecipeLimits(functools.partial(Ewma, lam=0.1)).fit(_baselines())
    assert all(d.lam == 0.1 for d in limits.detectors_.values())
    first = limits.update(x, recipes)
    limits.update(np.ones((2, 2)), ["Q", "Q"])
    clone = pickle.loads(pickle.dumps(limits))
    nxt = _stream(recipes, seed=5)
    np.testing.assert_array_equal(
        clone.update(nxt, recipes).statistic, limits.update(nxt, recipes).statistic
    )
    assert clone.unknown_ == {"Q": 2}
    limits.reset()
    assert limits.unknown_ == {}
    np.testing.assert_array_equal(limits.update(x, recipes).statistic, first.statistic)
