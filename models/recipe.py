"""One fitted detector per product recipe, so a recipe change is not mistaken for a shift.

A cell line runs several recipes (chemistries, formats) whose process means legitimately
differ: a coating weight that is normal for one recipe is a fault for another. One chart across
a changeover would either signal at every switch or need limits too wide to see anything.
``RecipeLimits`` keeps one detector per recipe key, fitted on that recipe's baseline, and routes
each contiguous run of rows to its recipe's detector, so every recipe's chart keeps its own
state across switches (a CUSUM half way to a signal on recipe A resumes there when A comes back)
and the results come back as one result of the detector's own type, rows in chunk order.

Rows whose recipe has no fitted detector are skipped, never a crash: they read NaN (float
fields), 0 (integer fields, so no signal) or False, are added to the result's ``skipped`` count
when the detector has one, and are counted per key in ``unknown_`` for the caller to log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Generic, Protocol, TypeVar, cast

import numpy as np
import numpy.typing as npt

from models.detector import BaselineError, NotFittedError, ParameterError

__all__ = ["RecipeLimits"]

R_co = TypeVar("R_co", covariant=True)


class _Chart(Protocol[R_co]):
    """What ``RecipeLimits`` needs of a detector: the `models.detector.Detector` contract."""

    def fit(self, baseline: npt.ArrayLike, tags: list[str] | None = None) -> Any: ...

    def update(self, chunk: npt.ArrayLike) -> R_co: ...

    def reset(self) -> None: ...


class RecipeLimits(Generic[R_co]):
    """Routes rows to a per-recipe detector built by ``factory`` and reassembles the results.

    Parameters:
        factory: a zero-argument callable returning a new, unfitted detector (a detector class
            or a ``functools.partial`` of one; it must be picklable for the whole object to be).

    Learned attributes: ``detectors_`` (recipe key -> fitted detector) and ``unknown_``
    (recipe key -> rows skipped because no detector was fitted for it, since fit or reset).

    The result of ``update`` has the detector's result type: row fields ``(time, tags, ...)`` are
    assembled in chunk order, per-tag ``(tags,)`` fields (counts such as ``skipped``) are summed
    over the runs.

    Examples:
        >>> from models.ewma import Ewma
        >>> rng = np.random.default_rng(2)
        >>> limits = RecipeLimits(Ewma).fit(
        ...     {"A": rng.normal(10.0, 1.0, (100, 1)), "B": rng.normal(20.0, 1.0, (100, 1))}
        ... )
        >>> x = np.r_[rng.normal(10.0, 1.0, (30, 1)), rng.normal(20.0, 1.0, (30, 1))]
        >>> res = limits.update(x, ["A"] * 30 + ["B"] * 30)  # a changeover, not a shift
        >>> bool(res.signal.any()), res.statistic.shape
        (False, (60, 1))
        >>> res = limits.update(x[:5], ["C"] * 5)  # no baseline for recipe C
        >>> int(res.skipped[0]), limits.unknown_
        (5, {'C': 5})

    References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., 10.1
    (short production runs: charts per part number / deviation from nominal).
    """

    def __init__(self, factory: Callable[[], _Chart[R_co]]) -> None:
        if not callable(factory):
            raise ParameterError(
                "The 'factory' parameter of RecipeLimits must be a callable returning a "
                f"detector. Got {factory!r} instead."
            )
        self.factory = factory
        self._fitted = False

    def fit(
        self, baselines: Mapping[Hashable, npt.ArrayLike], tags: list[str] | None = None
    ) -> RecipeLimits[R_co]:
        """Fit ``factory()`` on each recipe's baseline; a bad baseline names its recipe."""
        if not baselines:
            raise BaselineError("RecipeLimits needs a baseline for at least one recipe")
        detectors: dict[Hashable, _Chart[R_co]] = {}
        for key, baseline in baselines.items():
            det = self.factory()
            try:
                det.fit(baseline) if tags is None else det.fit(baseline, tags=tags)
            except BaselineError as e:
                raise BaselineError(f"recipe {key!r}: {e}") from e
            detectors[key] = det
        self.detectors_ = detectors
        self._fitted = True
        self.reset()
        return self

    def reset(self) -> None:
        """Reset every recipe's detector (their fits stay) and the unknown-recipe counts."""
        if self._fitted:
            for det in self.detectors_.values():
                det.reset()
            self.unknown_: dict[Hashable, int] = {}

    def update(self, chunk: npt.ArrayLike, recipe: npt.ArrayLike) -> R_co:
        """Run each contiguous run of rows through its recipe's detector; ``recipe`` per row."""
        if not self._fitted:
            raise NotFittedError(
                "This RecipeLimits is not fitted yet; call fit(baseline) before update."
            )
        x = np.asarray(chunk, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        keys = np.asarray(recipe, dtype=object).reshape(-1)
        t = x.shape[0]
        if keys.size != t:
            raise ValueError(f"recipe must name one recipe per row ({t}), got {keys.size}")
        cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1 if t else np.array([], dtype=np.int64)
        bounds = np.r_[0, cuts, t].astype(np.int64) if t else np.array([0, 0], dtype=np.int64)
        runs: list[tuple[int, int, Any]] = []
        unknown_rows = 0
        for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            if stop == start:
                continue
            key = keys[start]
            det = self.detectors_.get(key)
            if det is None:
                self.unknown_[key] = self.unknown_.get(key, 0) + stop - start
                unknown_rows += stop - start
                runs.append((start, stop, None))
            else:
                runs.append((start, stop, det.update(x[start:stop])))
        template = next((r for _, _, r in runs if r is not None), None)
        if template is None:
            template = next(iter(self.detectors_.values())).update(x[:0])
        return cast(R_co, self._assemble(template, runs, t, x.shape[1], unknown_rows))

    @staticmethod
    def _assemble(
        template: Any, runs: list[tuple[int, int, Any]], t: int, m: int, unknown_rows: int
    ) -> Any:
        out: dict[str, Any] = {}
        for field in dataclasses.fields(template):
            first = getattr(template, field.name)
            if not isinstance(first, np.ndarray):
                out[field.name] = first
            elif first.ndim >= 2:
                rows = np.empty((t, *first.shape[1:]), dtype=first.dtype)
                for start, stop, res in runs:
                    rows[start:stop] = (
                        _FILL[first.dtype.kind] if res is None else getattr(res, field.name)
                    )
                out[field.name] = rows
            else:
                total = np.zeros(m, dtype=first.dtype)
                for _, _, res in runs:
                    if res is not None:
                        total = total + getattr(res, field.name)
                if field.name == "skipped":
                    total = total + unknown_rows
                out[field.name] = total
        return type(template)(**out)


#: What an unknown-recipe row reads, by numpy dtype kind.
_FILL: dict[str, Any] = {"f": np.nan, "c": np.nan, "i": 0, "u": 0, "b": False}
