"""Shewhart attribute charts (p, np, c, u) with variable sample sizes, vectorized over tags.

Much of what a cell line counts is pass/fail or a tally: cells rejected at end-of-line test
out of those tested, weld defects per tray, coating voids per metre of electrode. Such counts
follow binomial or Poisson models rather than the normal one, and their limits depend on how
much was inspected, so each sample (row) gets limits from its own size. Inputs are ``counts``
and ``sizes`` shaped ``(time, tags)``. Counts come from the field, so a row that cannot be a
count (negative, not whole, more defectives than units, size <= 0) is bad input: ``update``
does not raise for it but skips the row and counts it in ``invalid`` (a baseline with such a
row is rejected by ``fit``, since Phase I data should have been checked). NaN in either input
means "no sample" and is skipped and counted in ``skipped``; ``skipped`` also includes the
invalid rows. Wrong shapes are programming errors and raise. The charts keep no state between
samples, so chunking cannot change their results.

References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., sections 7.2
(p and np charts, 7.2.2 variable sample size) and 7.3 (c and u charts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

import numpy as np
import numpy.typing as npt

from models.detector import BaselineError, FloatArray, NotFittedError, as_chunk
from models.params import check_float, check_int

__all__ = ["AttributeResult", "CChart", "NpChart", "PChart", "UChart"]

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class AttributeResult:
    """One ``update``; arrays are shaped ``(time, tags)``, ``skipped`` and ``invalid`` ``(tags,)``.

    ``statistic`` is the plotted value (p = count / size, np = count, c = count,
    u = count / size); it and ``center``, ``lcl``, ``ucl`` are NaN on rows that were not
    charted. ``signal`` is +1 above ``ucl``, -1 below ``lcl`` (never below a lower limit of 0),
    0 otherwise. ``skipped`` counts rows not charted per tag, ``invalid`` those of them that
    were bad input rather than missing.
    """

    statistic: FloatArray
    center: FloatArray
    lcl: FloatArray
    ucl: FloatArray
    signal: npt.NDArray[np.int8]
    skipped: npt.NDArray[np.int64]
    invalid: npt.NDArray[np.int64]


class _AttributeChart:
    """What the four charts share; subclasses give the statistic's mean and sd per row."""

    _name: ClassVar[str]
    #: Does the chart use sizes at all (all but the c chart)?
    _sized: ClassVar[bool] = True
    #: Sizes are whole numbers of units and bound the count (p and np charts).
    _binomial: ClassVar[bool] = True

    def __init__(
        self,
        L: float = 3.0,  # noqa: N803 - the literature's name
        min_baseline: int = 20,
    ) -> None:
        self.L = check_float(self._name, "L", L, 0.0, low_open=True)
        self.min_baseline = check_int(self._name, "min_baseline", min_baseline, 1)
        self._fitted = False

    # -- what subclasses define --------------------------------------------------------------

    def _plotted(self, counts: FloatArray, sizes: FloatArray) -> FloatArray:
        raise NotImplementedError

    def _moments(self, rate: FloatArray, sizes: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Mean and standard deviation of the plotted statistic for each row."""
        raise NotImplementedError

    # -- Phase I -----------------------------------------------------------------------------

    def fit(
        self, counts: npt.ArrayLike, sizes: npt.ArrayLike | None = None,
        tags: list[str] | None = None,
    ) -> Self:  # fmt: skip
        """Estimate the centre (p-bar, c-bar or u-bar) per tag from baseline counts and sizes.

        The c chart ignores ``sizes``.
        """
        self._fit(counts, sizes, tags)
        return self

    def _fit(
        self, counts: npt.ArrayLike, sizes: npt.ArrayLike | None, tags: list[str] | None
    ) -> None:
        c, n = self._inputs(counts, sizes, "baseline counts", None)
        names = tags or [f"#{j}" for j in range(c.shape[1])]
        missing = self._missing(c, n)
        for reason, bad in self._problems(c, n, missing):
            if bad.any():
                i, j = (int(v[0]) for v in np.nonzero(bad))
                raise BaselineError(
                    f"{self._name} baseline row {i} of tag {names[j]} is invalid: {reason} "
                    f"(count {float(c[i, j])!r}, size {float(n[i, j])!r})"
                )
        use = ~missing
        m = use.sum(axis=0)
        short = np.flatnonzero(m < self.min_baseline)
        if short.size:
            j = int(short[0])
            raise BaselineError(
                f"{self._name} needs at least {self.min_baseline} baseline samples per tag; "
                f"tag {names[j]} has {int(m[j])}"
            )
        rate = np.where(use, c, 0.0).sum(axis=0) / np.where(use, n, 0.0).sum(axis=0)
        bad_rate = np.flatnonzero(~self._rate_ok(rate))
        if bad_rate.size:
            j = int(bad_rate[0])
            raise BaselineError(
                f"{self._name} needs a baseline with {self._degenerate_hint()}; tag {names[j]} "
                f"has rate {float(rate[j])!r}"
            )
        self._set(rate)

    def _fit_known(self, rate: npt.ArrayLike, name: str) -> None:
        r = np.atleast_1d(np.asarray(rate, dtype=np.float64))
        if r.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one value per tag), got shape {r.shape}")
        if not np.all(self._rate_ok(r)):
            raise BaselineError(
                f"{name} must be {self._rate_range()} for every tag, got {r.tolist()}"
            )
        self._set(r)

    def _rate_ok(self, rate: FloatArray) -> BoolArray:
        ok = np.isfinite(rate) & (rate > 0.0)
        return ok & (rate < 1.0) if self._binomial else ok

    def _rate_range(self) -> str:
        return "in (0, 1)" if self._binomial else "finite and > 0"

    def _degenerate_hint(self) -> str:
        if self._binomial:
            return "both conforming and nonconforming units"
        return "at least one nonconformity"

    def _set(self, rate: FloatArray) -> None:
        self.center_: FloatArray = rate
        self.n_tags_ = int(rate.size)
        self._fitted = True

    def reset(self) -> None:
        """Nothing to forget: each sample is judged on its own. Keeps the fit."""

    # -- Phase II ----------------------------------------------------------------------------

    def update(self, counts: npt.ArrayLike, sizes: npt.ArrayLike | None = None) -> AttributeResult:
        """Chart one ``(time, tags)`` chunk of counts and sizes (the c chart ignores sizes)."""
        return self._chart(counts, sizes)

    def _chart(self, counts: npt.ArrayLike, sizes: npt.ArrayLike | None) -> AttributeResult:
        if not self._fitted:
            raise NotFittedError(
                f"This {self._name} is not fitted yet; call fit(baseline) before update."
            )
        c, n = self._inputs(counts, sizes, "counts", self.n_tags_)
        missing = self._missing(c, n)
        invalid = np.zeros(c.shape, dtype=bool)
        for _, bad in self._problems(c, n, missing):
            invalid |= bad
        use = ~missing & ~invalid
        safe_n = np.where(use, n, 1.0)
        stat = np.where(use, self._plotted(c, safe_n), np.nan)
        mean, sd = self._moments(self.center_, safe_n)
        center = np.where(use, mean, np.nan)
        lcl = np.where(use, np.maximum(mean - self.L * sd, 0.0), np.nan)
        ucl = np.where(use, mean + self.L * sd, np.nan)
        signal = (stat > ucl).astype(np.int8) - (stat < lcl).astype(np.int8)
        return AttributeResult(
            stat,
            center,
            lcl,
            ucl,
            signal,
            np.sum(~use, axis=0).astype(np.int64),
            np.sum(invalid, axis=0).astype(np.int64),
        )

    # -- input checks ------------------------------------------------------------------------

    def _inputs(
        self, counts: npt.ArrayLike, sizes: npt.ArrayLike | None, name: str, n_tags: int | None
    ) -> tuple[FloatArray, FloatArray]:
        c = as_chunk(counts, name, n_tags)
        if not self._sized:
            return c, np.ones_like(c)
        if sizes is None:
            raise ValueError(f"{self._name} needs sizes (units inspected per sample)")
        s = np.asarray(sizes, dtype=np.float64)
        if s.ndim == 0:
            return c, np.full_like(c, float(s))
        s = as_chunk(s, "sizes")
        if s.shape != c.shape:
            raise ValueError(
                f"sizes must be a scalar or shaped like counts {c.shape}, got {s.shape}"
            )
        return c, s

    def _missing(self, c: FloatArray, n: FloatArray) -> BoolArray:
        return np.isnan(c) | np.isnan(n)

    def _problems(
        self, c: FloatArray, n: FloatArray, missing: BoolArray
    ) -> list[tuple[str, BoolArray]]:
        """Named masks of present rows that cannot be a sample, in the order they are reported."""
        present = ~missing
        out = [
            ("count is not finite", present & ~np.isfinite(c)),
            ("count is negative", present & (c < 0.0)),
            ("count is not a whole number", present & np.isfinite(c) & (c != np.floor(c))),
        ]
        if self._sized:
            out.append(("size is not finite and > 0", present & ~(np.isfinite(n) & (n > 0.0))))
        if self._binomial:
            out.append(
                ("size is not a whole number", present & np.isfinite(n) & (n != np.floor(n)))
            )
            out.append(("count exceeds size", present & (c > n)))
        return out


class PChart(_AttributeChart):
    """Fraction nonconforming: p_i = count_i / size_i, limits p +/- L sqrt(p (1 - p) / n_i).

    Parameters:
        L: limit width in standard deviations of p_i, > 0.
        min_baseline: fewest usable baseline samples per tag.

    Fitted attribute: ``center_``, p-bar per tag (total nonconforming / total inspected).

    Examples:
        >>> rng = np.random.default_rng(2)
        >>> sizes = rng.integers(80, 120, size=(25, 1))
        >>> det = PChart().fit(rng.binomial(sizes, 0.05), sizes)
        >>> res = det.update([[4], [19], [5]], [[100], [100], [-3]])
        >>> res.signal.ravel().tolist(), res.invalid.tolist()
        ([0, 1, 0], [1])

    References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., 7.2.
    """

    _name = "PChart"

    def fit_known(self, p: npt.ArrayLike) -> PChart:
        """Use a fraction nonconforming known or specified in advance (one per tag)."""
        self._fit_known(p, "p")
        return self

    def _plotted(self, counts: FloatArray, sizes: FloatArray) -> FloatArray:
        return counts / sizes

    def _moments(self, rate: FloatArray, sizes: FloatArray) -> tuple[FloatArray, FloatArray]:
        return np.broadcast_to(rate, sizes.shape), np.sqrt(rate * (1.0 - rate) / sizes)


class NpChart(_AttributeChart):
    """Number nonconforming: count_i, limits n_i p +/- L sqrt(n_i p (1 - p)).

    Meant for constant sample sizes (the count is then read directly); variable sizes are
    accepted and give per-row centre and limits.

    Parameters:
        L: limit width in standard deviations of the count, > 0.
        min_baseline: fewest usable baseline samples per tag.

    Fitted attribute: ``center_``, p-bar per tag.

    Examples:
        >>> rng = np.random.default_rng(4)
        >>> det = NpChart().fit(rng.binomial(200, 0.02, size=(30, 2)), 200)
        >>> res = det.update([[3, 4], [2, 15]], 200)
        >>> res.signal.tolist()
        [[0, 0], [0, 1]]

    References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., 7.2.1.
    """

    _name = "NpChart"

    def fit_known(self, p: npt.ArrayLike) -> NpChart:
        """Use a fraction nonconforming known or specified in advance (one per tag)."""
        self._fit_known(p, "p")
        return self

    def _plotted(self, counts: FloatArray, sizes: FloatArray) -> FloatArray:
        return counts

    def _moments(self, rate: FloatArray, sizes: FloatArray) -> tuple[FloatArray, FloatArray]:
        return sizes * rate, np.sqrt(sizes * rate * (1.0 - rate))


class CChart(_AttributeChart):
    """Nonconformities per sample of constant extent: count_i, limits c +/- L sqrt(c).

    ``sizes`` is not used (pass None); for samples of varying extent use `UChart`.

    Parameters:
        L: limit width in standard deviations of the count, > 0.
        min_baseline: fewest usable baseline samples per tag.

    Fitted attribute: ``center_``, c-bar per tag (mean count per sample).

    Examples:
        >>> rng = np.random.default_rng(6)
        >>> det = CChart().fit(rng.poisson(8.0, size=(30, 1)))
        >>> res = det.update([[7], [25], [np.nan]])
        >>> res.signal.ravel().tolist(), res.skipped.tolist()
        ([0, 1, 0], [1])

    References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., 7.3.1.
    """

    _name = "CChart"
    _sized = False
    _binomial = False

    def fit_known(self, c: npt.ArrayLike) -> CChart:
        """Use a mean count per sample known or specified in advance (one per tag)."""
        self._fit_known(c, "c")
        return self

    def _plotted(self, counts: FloatArray, sizes: FloatArray) -> FloatArray:
        return counts

    def _moments(self, rate: FloatArray, sizes: FloatArray) -> tuple[FloatArray, FloatArray]:
        return np.broadcast_to(rate, sizes.shape), np.broadcast_to(np.sqrt(rate), sizes.shape)


class UChart(_AttributeChart):
    """Nonconformities per inspection unit: u_i = count_i / size_i, limits u +/- L sqrt(u / n_i).

    Sizes are inspection units and need not be whole (9.5 m^2 of electrode).

    Parameters:
        L: limit width in standard deviations of u_i, > 0.
        min_baseline: fewest usable baseline samples per tag.

    Fitted attribute: ``center_``, u-bar per tag (total count / total units).

    Examples:
        >>> rng = np.random.default_rng(8)
        >>> units = rng.uniform(8.0, 12.0, size=(25, 1))
        >>> det = UChart().fit(rng.poisson(1.5 * units), units)
        >>> res = det.update([[14], [40]], [[10.0], [10.0]])
        >>> res.signal.ravel().tolist()
        [0, 1]

    References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., 7.3.2.
    """

    _name = "UChart"
    _binomial = False

    def fit_known(self, u: npt.ArrayLike) -> UChart:
        """Use a mean count per unit known or specified in advance (one per tag)."""
        self._fit_known(u, "u")
        return self

    def _plotted(self, counts: FloatArray, sizes: FloatArray) -> FloatArray:
        return counts / sizes

    def _moments(self, rate: FloatArray, sizes: FloatArray) -> tuple[FloatArray, FloatArray]:
        return np.broadcast_to(rate, sizes.shape), np.sqrt(rate / sizes)
