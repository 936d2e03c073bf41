"""Shewhart Xbar-R and Xbar-S charts for subgrouped data, vectorized over tags.

Where a line measures several cells per interval (five can weights per minute, a few
impedance readings per tray), the subgroup mean is far more sensitive to a shift of the process
mean than single values, and the within-subgroup spread (range or standard deviation) estimates
the short-term sigma without being inflated by shifts between subgroups. A chunk is shaped
``(time, tags, n)``; members that are missing are NaN, so subgroups may vary in size, and each
subgroup gets limits from its own size (Montgomery 6.3.2). Range charts use d2(n) / d3(n), S
charts c4(n) (`models.constants`).

Sigma is estimated as qcc's defaults do (the unweighted average of the per-subgroup unbiased
estimates: mean of R_i / d2(n_i) for Xbar-R, "UWAVE-R"; mean of S_i / c4(n_i) for Xbar-S,
"UWAVE-SD"); with equal subgroup sizes these are Montgomery's Rbar / d2 and Sbar / c4. The grand
mean is the mean of all baseline observations (subgroup means weighted by size). For a subgroup
of size n the spread chart's centre is d2(n) sigma (or c4(n) sigma) and its limits are that
+/- L d3(n) sigma (or L sqrt(1 - c4(n)^2) sigma), the lower one clipped at 0: for constant n and
L = 3 these are the familiar D3 Rbar, D4 Rbar and B3 Sbar, B4 Sbar, and the Xbar limits are
Xbarbar +/- A2 Rbar and +/- A3 Sbar. The charts keep no state between subgroups, so chunking
cannot change their results.

References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., sections 6.2
(Xbar and R), 6.3 (Xbar and S, 6.3.2 variable sample size); qcc (Scrucca 2004), sd.xbar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from models.constants import MAX_TABLE_N, c4, d2, d3
from models.detector import BaselineError, FloatArray, NotFittedError
from models.params import check_float, check_int

__all__ = ["XbarR", "XbarRResult", "XbarS", "XbarSResult"]

IntArray = npt.NDArray[np.int64]
Int8Array = npt.NDArray[np.int8]


@dataclass(frozen=True, slots=True)
class XbarRResult:
    """One ``update`` of an Xbar-R chart; arrays ``(time, tags)``, ``skipped`` ``(tags,)``.

    ``n`` is the number of usable members of each subgroup. ``xbar`` and its limits are NaN for
    an empty subgroup, ``r`` and its centre and limits also for a subgroup of one. ``signal`` is
    +1 / -1 where ``xbar`` is above ``ucl`` / below ``lcl``; ``spread_signal`` likewise for ``r``
    against ``r_ucl`` / ``r_lcl``. ``skipped`` counts empty subgroups per tag.
    """

    xbar: FloatArray
    lcl: FloatArray
    ucl: FloatArray
    r: FloatArray
    r_center: FloatArray
    r_lcl: FloatArray
    r_ucl: FloatArray
    n: IntArray
    signal: Int8Array
    spread_signal: Int8Array
    skipped: IntArray


@dataclass(frozen=True, slots=True)
class XbarSResult:
    """One ``update`` of an Xbar-S chart; as `XbarRResult` with the standard deviation ``s``."""

    xbar: FloatArray
    lcl: FloatArray
    ucl: FloatArray
    s: FloatArray
    s_center: FloatArray
    s_lcl: FloatArray
    s_ucl: FloatArray
    n: IntArray
    signal: Int8Array
    spread_signal: Int8Array
    skipped: IntArray


@dataclass(frozen=True, slots=True)
class _Charted:
    xbar: FloatArray
    lcl: FloatArray
    ucl: FloatArray
    spread: FloatArray
    spread_center: FloatArray
    spread_lcl: FloatArray
    spread_ucl: FloatArray
    n: IntArray
    signal: Int8Array
    spread_signal: Int8Array
    skipped: IntArray


class _SubgroupChart:
    """What Xbar-R and Xbar-S share; subclasses say how spread is measured and scaled."""

    _name: ClassVar[str]
    _max_n: ClassVar[int | None]

    def __init__(
        self,
        L: float = 3.0,  # noqa: N803 - the literature's name
        min_baseline: int = 20,
    ) -> None:
        self.L = check_float(self._name, "L", L, 0.0, low_open=True)
        self.min_baseline = check_int(self._name, "min_baseline", min_baseline, 2)
        self._fitted = False

    # -- what subclasses define --------------------------------------------------------------

    def _spread(self, x: FloatArray, ok: npt.NDArray[np.bool_], n: IntArray) -> FloatArray:
        raise NotImplementedError

    def _mean_and_sd(self, n: IntArray) -> tuple[FloatArray, FloatArray]:
        """Mean and sd of the spread statistic per unit sigma for subgroup sizes ``n`` >= 2."""
        raise NotImplementedError

    # -- Phase I -----------------------------------------------------------------------------

    def _fit(self, baseline: npt.ArrayLike, tags: list[str] | None) -> None:
        x = self._as_subgroups(baseline, "baseline", None)
        names = tags or [f"#{j}" for j in range(x.shape[1])]
        ok = np.isfinite(x)
        n = ok.sum(axis=2)
        usable = n >= 2
        m = usable.sum(axis=0)
        short = np.flatnonzero(m < self.min_baseline)
        if short.size:
            j = int(short[0])
            raise BaselineError(
                f"{self._name} needs at least {self.min_baseline} baseline subgroups of two or "
                f"more per tag; tag {names[j]} has {int(m[j])}"
            )
        spread = self._spread(x, ok, n)
        unit_mean, _ = self._mean_and_sd(np.where(usable, n, 2))
        estimates = np.where(usable, spread / unit_mean, 0.0)
        sigma = estimates.sum(axis=0) / m
        center = np.where(ok, x, 0.0).sum(axis=(0, 2)) / n.sum(axis=0)
        flat = np.flatnonzero(~(sigma > 0.0))
        if flat.size:
            j = int(flat[0])
            raise BaselineError(
                f"{self._name} needs a baseline that varies within subgroups; tag {names[j]} "
                f"has sigma {float(sigma[j])!r}"
            )
        self._set(center, sigma)

    def _fit_known(self, center: npt.ArrayLike, sigma: npt.ArrayLike) -> None:
        c = np.atleast_1d(np.asarray(center, dtype=np.float64))
        s = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
        if c.shape != s.shape or c.ndim != 1:
            raise ValueError(
                f"center and sigma must be 1-D of one length, got {c.shape}, {s.shape}"
            )
        if not (np.all(s > 0.0) and np.all(np.isfinite(s)) and np.all(np.isfinite(c))):
            raise BaselineError(
                f"center must be finite and sigma finite and > 0 for every tag, got "
                f"{c.tolist()}, {s.tolist()}"
            )
        self._set(c, s)

    def _set(self, center: FloatArray, sigma: FloatArray) -> None:
        self.center_: FloatArray = center
        self.sigma_: FloatArray = sigma
        self.n_tags_ = int(center.size)
        self._fitted = True

    def reset(self) -> None:
        """Nothing to forget: a Shewhart chart judges each subgroup on its own. Keeps the fit."""

    # -- Phase II ----------------------------------------------------------------------------

    def _chart(self, chunk: npt.ArrayLike) -> _Charted:
        if not self._fitted:
            raise NotFittedError(
                f"This {self._name} is not fitted yet; call fit(baseline) before update."
            )
        x = self._as_subgroups(chunk, "chunk", self.n_tags_)
        ok = np.isfinite(x)
        n = ok.sum(axis=2)
        some, pair = n >= 1, n >= 2
        total = np.where(ok, x, 0.0).sum(axis=2)
        xbar = np.full(n.shape, np.nan)
        np.divide(total, n, out=xbar, where=some)
        half = np.full(n.shape, np.nan)
        np.divide(self.L * self.sigma_, np.sqrt(n), out=half, where=some)
        lcl, ucl = self.center_ - half, self.center_ + half
        spread = np.where(pair, self._spread(x, ok, n), np.nan)
        unit_mean, unit_sd = self._mean_and_sd(np.where(pair, n, 2))
        s_center = np.where(pair, unit_mean * self.sigma_, np.nan)
        s_half = self.L * unit_sd * self.sigma_
        s_lcl = np.where(pair, np.maximum(s_center - s_half, 0.0), np.nan)
        s_ucl = np.where(pair, s_center + s_half, np.nan)
        return _Charted(
            xbar=xbar,
            lcl=lcl,
            ucl=ucl,
            spread=spread,
            spread_center=s_center,
            spread_lcl=s_lcl,
            spread_ucl=s_ucl,
            n=n.astype(np.int64),
            signal=(xbar > ucl).astype(np.int8) - (xbar < lcl).astype(np.int8),
            spread_signal=(spread > s_ucl).astype(np.int8) - (spread < s_lcl).astype(np.int8),
            skipped=np.sum(~some, axis=0).astype(np.int64),
        )

    def _as_subgroups(self, a: npt.ArrayLike, name: str, n_tags: int | None) -> FloatArray:
        x = np.asarray(a, dtype=np.float64)
        if x.ndim != 3:
            raise ValueError(
                f"{name} must be shaped (time, tags, n) with NaN for missing members, got an "
                f"array with shape {x.shape}"
            )
        if n_tags is not None and x.shape[1] != n_tags:
            raise ValueError(f"{name} must have {n_tags} tag columns as in fit, got {x.shape[1]}")
        if self._max_n is not None and x.shape[2] > self._max_n:
            raise ValueError(
                f"{self._name} handles subgroups of at most {self._max_n} members (the d2/d3 "
                f"tables end there; use XbarS for larger subgroups), got {x.shape[2]}"
            )
        return x


class XbarR(_SubgroupChart):
    """Xbar and range charts; sigma from the ranges (mean of R_i / d2(n_i)).

    Parameters:
        L: limit width in sigmas of the plotted statistic, > 0.
        min_baseline: fewest baseline subgroups with two or more members per tag.

    Fitted attributes (one entry per tag): ``center_`` (grand mean), ``sigma_`` (process
    sigma). Subgroups hold at most 25 members.

    Examples:
        >>> rng = np.random.default_rng(3)
        >>> det = XbarR().fit(rng.normal(10.0, 0.5, size=(30, 1, 5)))
        >>> new = rng.normal(10.0, 0.5, size=(10, 1, 5))
        >>> new[6] += 1.5
        >>> res = det.update(new)
        >>> np.flatnonzero(res.signal[:, 0]).tolist()
        [6]
        >>> res.r.shape, int(res.spread_signal.sum())
        ((10, 1), 0)

    References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., 6.2, 6.3.2.
    """

    _name = "XbarR"
    _max_n = MAX_TABLE_N

    def fit(self, baseline: npt.ArrayLike, tags: list[str] | None = None) -> XbarR:
        """Learn ``center_`` and ``sigma_`` per tag from ``(subgroups, tags, n)`` baseline."""
        self._fit(baseline, tags)
        return self

    def fit_known(self, center: npt.ArrayLike, sigma: npt.ArrayLike) -> XbarR:
        """Use a process mean and sigma known from earlier studies instead of a baseline."""
        self._fit_known(center, sigma)
        return self

    def update(self, chunk: npt.ArrayLike) -> XbarRResult:
        """Chart a ``(time, tags, n)`` chunk of subgroups."""
        c = self._chart(chunk)
        return XbarRResult(
            c.xbar, c.lcl, c.ucl, c.spread, c.spread_center, c.spread_lcl, c.spread_ucl, c.n,
            c.signal, c.spread_signal, c.skipped,
        )  # fmt: skip

    def _spread(self, x: FloatArray, ok: npt.NDArray[np.bool_], n: IntArray) -> FloatArray:
        hi = np.where(ok, x, -np.inf).max(axis=2, initial=-np.inf)
        lo = np.where(ok, x, np.inf).min(axis=2, initial=np.inf)
        return np.where(n >= 2, hi - lo, np.nan)

    def _mean_and_sd(self, n: IntArray) -> tuple[FloatArray, FloatArray]:
        return _arr(d2(n)), _arr(d3(n))


class XbarS(_SubgroupChart):
    """Xbar and standard-deviation charts; sigma from the S_i (mean of S_i / c4(n_i)).

    Parameters:
        L: limit width in sigmas of the plotted statistic, > 0.
        min_baseline: fewest baseline subgroups with two or more members per tag.

    Fitted attributes (one entry per tag): ``center_`` (grand mean), ``sigma_`` (process
    sigma). Preferred over `XbarR` for subgroups larger than about 10, and for any size.

    Examples:
        >>> rng = np.random.default_rng(5)
        >>> det = XbarS().fit(rng.normal(0.0, 1.0, size=(25, 2, 8)))
        >>> new = rng.normal(0.0, 1.0, size=(6, 2, 8))
        >>> new[3, 1] *= 3.0
        >>> res = det.update(new)
        >>> np.flatnonzero(res.spread_signal[:, 1]).tolist(), int(res.spread_signal[:, 0].sum())
        ([3], 0)

    References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., 6.3.
    """

    _name = "XbarS"
    _max_n = None

    def fit(self, baseline: npt.ArrayLike, tags: list[str] | None = None) -> XbarS:
        """Learn ``center_`` and ``sigma_`` per tag from ``(subgroups, tags, n)`` baseline."""
        self._fit(baseline, tags)
        return self

    def fit_known(self, center: npt.ArrayLike, sigma: npt.ArrayLike) -> XbarS:
        """Use a process mean and sigma known from earlier studies instead of a baseline."""
        self._fit_known(center, sigma)
        return self

    def update(self, chunk: npt.ArrayLike) -> XbarSResult:
        """Chart a ``(time, tags, n)`` chunk of subgroups."""
        c = self._chart(chunk)
        return XbarSResult(
            c.xbar, c.lcl, c.ucl, c.spread, c.spread_center, c.spread_lcl, c.spread_ucl, c.n,
            c.signal, c.spread_signal, c.skipped,
        )  # fmt: skip

    def _spread(self, x: FloatArray, ok: npt.NDArray[np.bool_], n: IntArray) -> FloatArray:
        safe_n = np.maximum(n, 1)
        mean = np.where(ok, x, 0.0).sum(axis=2) / safe_n
        dev = np.where(ok, x - mean[..., None], 0.0)
        ss = (dev * dev).sum(axis=2)
        return np.where(n >= 2, np.sqrt(ss / np.maximum(n - 1, 1)), np.nan)

    def _mean_and_sd(self, n: IntArray) -> tuple[FloatArray, FloatArray]:
        c = _arr(c4(n))
        return c, np.sqrt(1.0 - c * c)


def _arr(v: Any) -> FloatArray:
    return np.asarray(v, dtype=np.float64)
