"""One contract suite, run over every detector in ``models/``.

Each case says how to build the detector, what a baseline and a stream look like for it, and one
parameter it must reject. The suite then checks what every detector promises:

* ``fit`` returns the detector itself; ``update`` before ``fit`` raises `NotFittedError`;
* chunking never changes results: ``update(a ++ b)`` equals ``update(a)`` then ``update(b)``,
  field by field, for any split (empty chunks included) of a stream with NaNs in it;
* hyperparameters are stored as given and never changed by use;
* a pickled fitted detector continues exactly like the original; ``reset`` restarts Phase II;
* an invalid parameter is rejected with the shared message shape.

Per-detector behaviour (limits, rules, published values) is tested in each detector's own file.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.attribute import CChart, NpChart, PChart, UChart
from models.cusum import Cusum
from models.detector import NotFittedError
from models.ewma import Ewma
from models.params import ParameterError
from models.recipe import RecipeLimits
from models.runrules import RunRules
from models.shewhart import Individuals
from models.stuck import Stuck
from models.subgroup import XbarR, XbarS

TAGS = 3
ROWS = 40
MESSAGE = re.compile(r"^The '\w+' parameter of \w+ must be .+\. Got .+ instead\.$")


@dataclass(frozen=True)
class Case:
    """How to drive one detector class through the contract."""

    name: str
    make: Callable[[], Any]
    bad: Callable[[], Any]
    fit: Callable[[Any, np.random.Generator], Any]
    stream: Callable[[np.random.Generator], tuple[np.ndarray, ...]]


def _normal(rng: np.random.Generator, rows: int = ROWS, shift: float = 0.0) -> np.ndarray:
    x = rng.normal(10.0, 1.0, size=(rows, TAGS)) + shift
    x[rng.random(x.shape) < 0.1] = np.nan
    return x


def _fit_plain(det: Any, rng: np.random.Generator) -> Any:
    return det.fit(rng.normal(10.0, 1.0, size=(60, TAGS)))


def _stream_plain(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    # A drift in the second half, so that signals and non-zero states occur in the stream.
    x = _normal(rng)
    x[ROWS // 2 :] += np.linspace(0.0, 3.0, ROWS - ROWS // 2)[:, None]
    return (x,)


def _fit_subgroups(det: Any, rng: np.random.Generator) -> Any:
    return det.fit(rng.normal(10.0, 1.0, size=(30, TAGS, 5)))


def _stream_subgroups(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    x = rng.normal(10.0, 1.0, size=(ROWS, TAGS, 5))
    x[rng.random(x.shape) < 0.1] = np.nan
    x[ROWS // 2 :] += 1.5
    return (x,)


def _counts(rng: np.random.Generator, rows: int, p: float) -> tuple[np.ndarray, np.ndarray]:
    sizes = rng.integers(40, 60, size=(rows, TAGS)).astype(float)
    return rng.binomial(sizes.astype(int), p).astype(float), sizes


def _fit_counts(det: Any, rng: np.random.Generator) -> Any:
    return det.fit(*_counts(rng, 30, 0.1))


def _stream_counts(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    counts, sizes = _counts(rng, ROWS, 0.1)
    counts[ROWS // 2 :] += rng.integers(0, 8, size=(ROWS - ROWS // 2, TAGS))
    counts[3, 1] = np.nan
    counts[5, 2] = -1.0  # a bad row: skipped and counted, not raised
    return counts, sizes


def _fit_recipes(det: Any, rng: np.random.Generator) -> Any:
    return det.fit({"A": rng.normal(10.0, 1.0, (60, TAGS)), "B": rng.normal(12.0, 2.0, (60, TAGS))})


def _stream_recipes(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    (x,) = _stream_plain(rng)
    recipe = np.array(["A"] * 12 + ["B"] * 10 + ["A"] * 8 + ["C"] * 2 + ["B"] * 8, dtype=object)
    return x, recipe


def _ewma() -> Ewma:
    return Ewma(lam=0.2, L=3.0)


CASES = [
    Case("Ewma", _ewma, lambda: Ewma(lam=1.5), _fit_plain, _stream_plain),
    Case(
        "Ewma-asymptotic",
        lambda: Ewma(limits="asymptotic"),
        lambda: Ewma(L=0),
        _fit_plain,
        _stream_plain,
    ),
    Case("Cusum", lambda: Cusum(k=0.5, h=4.0), lambda: Cusum(h=-1.0), _fit_plain, _stream_plain),
    Case("Individuals", Individuals, lambda: Individuals(L="3"), _fit_plain, _stream_plain),
    Case(
        "RunRules",
        lambda: RunRules(rules=tuple(RunRules.RULES)),
        lambda: RunRules(rules=("we9",)),
        _fit_plain,
        _stream_plain,
    ),
    Case("Stuck", lambda: Stuck(n=3), lambda: Stuck(n=0), _fit_plain, _stream_plain),
    Case("XbarR", XbarR, lambda: XbarR(min_baseline=1), _fit_subgroups, _stream_subgroups),
    Case("XbarS", XbarS, lambda: XbarS(L=-2.0), _fit_subgroups, _stream_subgroups),
    Case("PChart", PChart, lambda: PChart(L=0.0), _fit_counts, _stream_counts),
    Case("NpChart", NpChart, lambda: NpChart(min_baseline=0), _fit_counts, _stream_counts),
    Case("CChart", CChart, lambda: CChart(L=float("nan")), _fit_counts, _stream_counts),
    Case("UChart", UChart, lambda: UChart(L=True), _fit_counts, _stream_counts),
    Case(
        "RecipeLimits",
        lambda: RecipeLimits(_ewma),
        lambda: RecipeLimits(3),
        _fit_recipes,
        _stream_recipes,
    ),
]
IDS = [c.name for c in CASES]


def _params(det: Any) -> dict[str, Any]:
    """The hyperparameters: public attributes that are not learned (no trailing underscore)."""
    return {k: v for k, v in vars(det).items() if not k.startswith("_") and not k.endswith("_")}


def _split(args: tuple[np.ndarray, ...], a: int, b: int) -> tuple[np.ndarray, ...]:
    return tuple(x[a:b] for x in args)


def _join(parts: list[Any]) -> dict[str, np.ndarray]:
    """Stack per-row fields (time, tags, ...) over time; add up per-tag counters (tags,)."""
    out: dict[str, np.ndarray] = {}
    for f in dataclasses.fields(parts[0]):
        values = [np.asarray(getattr(p, f.name)) for p in parts]
        if values[0].ndim == 1:
            out[f.name] = np.sum(values, axis=0)
        else:
            out[f.name] = np.concatenate(values, axis=0)
    return out


def _fields(res: Any) -> dict[str, np.ndarray]:
    return {f.name: np.asarray(getattr(res, f.name)) for f in dataclasses.fields(res)}


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fit_returns_self(case: Case) -> None:
    det = case.make()
    assert case.fit(det, np.random.default_rng(0)) is det


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_update_before_fit_is_a_clear_error(case: Case) -> None:
    with pytest.raises(NotFittedError, match="is not fitted yet; call fit"):
        case.make().update(*case.stream(np.random.default_rng(0)))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_invalid_parameter_has_the_shared_message(case: Case) -> None:
    with pytest.raises(ParameterError) as info:
        case.bad()
    assert MESSAGE.match(str(info.value)), str(info.value)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, ROWS), min_size=1, max_size=3), seed=st.integers(0, 999))
def test_chunking_does_not_change_results(case: Case, cuts: list[int], seed: int) -> None:
    stream = case.stream(np.random.default_rng(seed))
    whole = case.make()
    case.fit(whole, np.random.default_rng(1))
    expected = _fields(whole.update(*stream))
    det = case.make()
    case.fit(det, np.random.default_rng(1))
    bounds = [0, *sorted(cuts), ROWS]
    parts = [det.update(*_split(stream, a, b)) for a, b in zip(bounds, bounds[1:], strict=False)]
    _assert_same(_join(parts), expected)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_parameters_are_unchanged_by_use(case: Case) -> None:
    det = case.make()
    before = _params(det)
    case.fit(det, np.random.default_rng(0))
    det.update(*case.stream(np.random.default_rng(1)))
    det.reset()
    assert _params(det).keys() == before.keys()
    for k, v in before.items():
        assert _params(det)[k] is v or _params(det)[k] == v, k


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_pickled_detector_continues_like_the_original(case: Case) -> None:
    det = case.make()
    case.fit(det, np.random.default_rng(0))
    stream = case.stream(np.random.default_rng(2))
    det.update(*_split(stream, 0, ROWS // 2))
    clone = pickle.loads(pickle.dumps(det))
    rest = _split(stream, ROWS // 2, ROWS)
    _assert_same(_fields(clone.update(*rest)), _fields(det.update(*rest)))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reset_restarts_phase_two_and_keeps_the_fit(case: Case) -> None:
    det = case.make()
    case.fit(det, np.random.default_rng(0))
    stream = case.stream(np.random.default_rng(3))
    first = _fields(det.update(*stream))
    det.reset()
    _assert_same(_fields(det.update(*stream)), first)
