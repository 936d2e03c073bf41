"""Hotelling's T2 chart for individual observations and for subgroups, Phase I and Phase II.

Separate univariate charts on correlated variables both miss and misplace signals: a point can be
inside every single limit yet far outside the joint ellipse (zone 1 hot while zone 2 is cold), and
p charts at 3 sigma raise p times the false alarms. T2 measures the distance from the in-control
centre in units of the covariance, so one limit covers all variables at a known false-alarm rate.

* Individuals, baseline ``(m, p)``: centre = mean, covariance = sample covariance (ddof 1),
  ``T2 = (x - c)' S^-1 (x - c)``.
* Subgroups, baseline ``(m, p, n)``: centre = mean of the subgroup means, covariance = mean of
  the within-subgroup covariances, ``T2 = n (xbar - c)' S^-1 (xbar - c)``.

`fit` also scores the baseline itself against the Phase I limit (``t2_baseline_``,
``ucl_phase1_``): that is the retrospective check whether the baseline was in control, and points
above it should be investigated and removed before the model is used. `update` judges new data
against the Phase II limit ``ucl_``. A robust centre and covariance (scikit-learn's MinCovDet,
on the server) enter through `fit_known`. Limits need scipy (fit time only); scoring with a known
``ucl`` needs numpy alone.

References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., 11.3; Tracy,
Young & Mason (1992); Scrucca (2004) and qcc's ``mqcc``, whose boiler example
`tests/models/test_mv_hotelling.py` reproduces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.detector import BaselineError, FloatArray, NotFittedError
from models.mvlimits import t2_limit_individual, t2_limit_subgroup
from models.params import check_float, check_int

__all__ = ["HotellingResult", "HotellingT2"]


@dataclass(frozen=True, slots=True)
class HotellingResult:
    """T2 per row, ``signal`` (1 above ``ucl``), per-variable contributions ``z_j (S^-1 z)_j``
    (they add up to T2) shaped ``(time, p)``, and ``skipped`` rows (a missing value)."""

    t2: FloatArray
    signal: npt.NDArray[np.int8]
    contributions: FloatArray
    skipped: int


class HotellingT2:
    """Hotelling T2 chart; ``alpha`` is the false-alarm probability per point.

    Examples:
        >>> rng = np.random.default_rng(4)
        >>> cov = [[1.0, 0.9], [0.9, 1.0]]               # two zones that move together
        >>> det = HotellingT2(alpha=0.005).fit(rng.multivariate_normal([0, 0], cov, 100))
        >>> res = det.update([[1.5, 1.5], [1.5, -1.5]])  # the second breaks the correlation
        >>> res.signal.tolist(), res.t2.round(1).tolist()
        ([0, 1], [2.1, 52.5])
    """

    def __init__(self, alpha: float = 0.0027, min_baseline: int = 20) -> None:
        self.alpha = check_float(
            "HotellingT2", "alpha", alpha, 0.0, 0.5, low_open=True, high_open=True
        )
        self.min_baseline = check_int("HotellingT2", "min_baseline", min_baseline, 3)
        self._fitted = False

    def fit(self, baseline: npt.ArrayLike, tags: list[str] | None = None) -> HotellingT2:
        """Phase I on ``(m, p)`` individual observations or ``(m, p, n)`` subgroups.

        Rows (subgroups) with a missing value are left out. Raises `BaselineError` when fewer
        than ``max(min_baseline, p + 2)`` complete rows remain or the covariance is singular.
        """
        a = np.asarray(baseline, dtype=np.float64)
        if a.ndim not in (2, 3):
            raise ValueError(f"baseline must be (m, p) or (m, p, n), got shape {a.shape}")
        p = a.shape[1]
        names = list(tags) if tags else [f"#{j}" for j in range(p)]
        complete = np.isfinite(a).reshape(a.shape[0], -1).all(axis=1)
        a = a[complete]
        m = a.shape[0]
        need = max(self.min_baseline, p + 2)
        if m < need:
            raise BaselineError(
                f"HotellingT2 needs at least {need} complete baseline rows for {p} variables; "
                f"got {m}"
            )
        if a.ndim == 2:
            n = 1
            center = a.mean(axis=0)
            cov = np.cov(a, rowvar=False, ddof=1).reshape(p, p)
        else:
            n = a.shape[2]
            if n < 2:
                raise ValueError("subgroups need n >= 2 members; use (m, p) for individuals")
            means = a.mean(axis=2)
            center = means.mean(axis=0)
            dev = a - means[:, :, None]
            cov = np.einsum("ijk,ilk->jl", dev, dev) / (m * (n - 1))
        spread = np.diag(cov)
        flat = np.flatnonzero(~(spread > 0.0))
        if flat.size:
            raise BaselineError(
                f"HotellingT2 needs a baseline that varies; tag {names[int(flat[0])]} has "
                f"variance {float(spread[int(flat[0])])!r}"
            )
        self._set(center, cov, m, n)
        self.ucl_phase1_ = self._limit(1)
        self.t2_baseline_ = self._t2(a.mean(axis=2) if n > 1 else a)
        return self

    def fit_known(
        self,
        center: npt.ArrayLike,
        covariance: npt.ArrayLike,
        m: int,
        n: int = 1,
        ucl: float | None = None,
    ) -> HotellingT2:
        """Use a centre and covariance estimated elsewhere (e.g. MinCovDet) from ``m`` rows of
        subgroup size ``n``. Without ``ucl`` the Phase II limit is computed (needs scipy)."""
        c = np.atleast_1d(np.asarray(center, dtype=np.float64))
        s = np.asarray(covariance, dtype=np.float64)
        p = c.shape[0]
        if c.ndim != 1 or s.shape != (p, p):
            raise ValueError(
                f"center (p,) and covariance (p, p) expected, got {c.shape}, {s.shape}"
            )
        self._set(
            c, s, check_int("HotellingT2", "m", m, p + 2), check_int("HotellingT2", "n", n, 1)
        )
        if ucl is not None:
            self.ucl_ = check_float("HotellingT2", "ucl", ucl, 0.0, low_open=True)
        return self

    def _set(self, center: FloatArray, cov: FloatArray, m: int, n: int) -> None:
        if not np.all(np.isfinite(cov)) or np.linalg.matrix_rank(cov) < cov.shape[0]:
            raise BaselineError(
                "HotellingT2 needs a non-singular covariance; some variables are linear "
                "combinations of others (drop one, or use PCA monitoring)"
            )
        self.center_ = center
        self.covariance_ = cov
        self.precision_ = np.linalg.inv(cov)
        self.m_ = m
        self.n_ = n
        self._fitted = True
        self.ucl_ = self._limit(2)

    def _limit(self, phase: int) -> float:
        p = self.center_.shape[0]
        if self.n_ == 1:
            return t2_limit_individual(self.m_, p, self.alpha, phase)
        return t2_limit_subgroup(self.m_, self.n_, p, self.alpha, phase)

    def _t2(self, xbar: FloatArray) -> FloatArray:
        d = xbar - self.center_
        t2: FloatArray = self.n_ * np.einsum("ij,ij->i", d, d @ self.precision_)
        return t2

    def update(self, chunk: npt.ArrayLike) -> HotellingResult:
        """Phase II: ``(time, p)`` observations, or ``(time, p, n)`` subgroups of the fitted
        size; a row (subgroup) with a missing value is skipped (NaN, no signal)."""
        if not self._fitted:
            raise NotFittedError("HotellingT2 is not fitted yet; call fit or fit_known first")
        a = np.asarray(chunk, dtype=np.float64)
        p = self.center_.shape[0]
        want = (p,) if self.n_ == 1 else (p, self.n_)
        if a.ndim == 1 and self.n_ == 1:
            a = a[None, :]
        if a.shape[1:] != want:
            raise ValueError(
                f"chunk must be shaped (time, {', '.join(map(str, want))}), got {a.shape}"
            )
        xbar = a if self.n_ == 1 else a.mean(axis=2)
        ok: npt.NDArray[np.bool_] = np.all(np.isfinite(xbar), axis=1)
        d = np.where(ok[:, None], xbar - self.center_, 0.0)
        contrib = self.n_ * d * (d @ self.precision_)
        t2 = np.where(ok, contrib.sum(axis=1), np.nan)
        contrib[~ok] = np.nan
        signal = (t2 > self.ucl_).astype(np.int8)
        return HotellingResult(t2, signal, contrib, int(np.count_nonzero(~ok)))

    def reset(self) -> None:
        """Nothing to forget: T2 keeps no state between rows."""
