"""EWMA control chart for individual observations, vectorized over tags.

The exponentially weighted moving average z_t = lam * x_t + (1 - lam) * z_{t-1} reacts to small
sustained shifts (0.5-2 sigma) far sooner than a Shewhart chart. Its centre and sigma are frozen
by ``fit`` on an in-control baseline (Phase I); a running mean would chase the very shift the
chart is meant to find. NaN samples are skipped per tag: they neither move the statistic nor
advance the time-varying limits, so gaps and bad-quality samples cannot corrupt the state.

References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., section 9.2;
Lucas & Saccucci (1990), Technometrics 32(1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.detector import BaselineError, FloatArray, NotFittedError, as_chunk
from models.params import check_choice, check_float, check_int
from models.phase1 import robust_sigma

__all__ = ["Ewma", "EwmaResult"]


@dataclass(frozen=True, slots=True)
class EwmaResult:
    """What one ``update`` produced; every array is shaped like the chunk ``(time, tags)``.

    ``statistic`` is NaN where the sample was skipped. ``signal`` is +1 above the upper limit,
    -1 below the lower, 0 otherwise.
    """

    statistic: FloatArray
    lcl: FloatArray
    ucl: FloatArray
    signal: npt.NDArray[np.int8]
    skipped: npt.NDArray[np.int64]


class Ewma:
    """EWMA chart with limits ``center +/- L * sigma_z``.

    Parameters:
        lam: smoothing weight in (0, 1]; 1 gives a Shewhart individuals chart.
        L: limit width in units of the statistic's standard deviation, > 0.
        limits: ``"exact"`` uses the time-varying variance (narrower at start-up),
            ``"asymptotic"`` the steady-state one.
        min_baseline: fewest usable baseline samples per tag that ``fit`` accepts.
        sigma_method: ``"mr"`` estimates sigma as mean moving range / d2 (robust to slow drift
            in the baseline), ``"std"`` as the sample standard deviation.

    Examples:
        >>> rng = np.random.default_rng(1)
        >>> det = Ewma(lam=0.2, L=4.0).fit(rng.normal(10.0, 1.0, size=(200, 2)))
        >>> shifted = rng.normal(10.0, 1.0, size=(50, 2)) + [0.0, 2.0]
        >>> res = det.update(shifted)
        >>> bool(res.signal[:, 0].any()), bool(res.signal[:, 1].any())
        (False, True)
    """

    def __init__(
        self,
        lam: float = 0.2,
        L: float = 3.0,  # noqa: N803 - the literature's name
        limits: str = "exact",
        min_baseline: int = 20,
        sigma_method: str = "mr",
    ) -> None:
        self.lam = check_float("Ewma", "lam", lam, 0.0, 1.0, low_open=True)
        self.L = check_float("Ewma", "L", L, 0.0, low_open=True)
        self.limits = check_choice("Ewma", "limits", limits, ("exact", "asymptotic"))
        self.min_baseline = check_int("Ewma", "min_baseline", min_baseline, 2)
        self.sigma_method = check_choice("Ewma", "sigma_method", sigma_method, ("mr", "std"))
        self._fitted = False

    # -- Phase I -----------------------------------------------------------------------------

    def fit(self, baseline: npt.ArrayLike, tags: list[str] | None = None) -> Ewma:
        """Learn ``center_`` and ``sigma_`` per tag from an in-control baseline; NaNs ignored."""
        x = as_chunk(baseline, "baseline")
        names = tags or [f"#{j}" for j in range(x.shape[1])]
        n = np.sum(np.isfinite(x), axis=0)
        short = np.flatnonzero(n < self.min_baseline)
        if short.size:
            j = int(short[0])
            raise BaselineError(
                f"EWMA needs at least {self.min_baseline} baseline samples per tag; "
                f"tag {names[j]} has {int(n[j])}"
            )
        center = np.nanmean(x, axis=0)
        if self.sigma_method == "std":
            sigma = np.nanstd(x, axis=0, ddof=1)
        else:
            sigma = robust_sigma(x, "mr")
        flat = np.flatnonzero(~(sigma > 0.0))
        if flat.size:
            j = int(flat[0])
            raise BaselineError(
                f"EWMA needs a baseline that varies; tag {names[j]} has sigma {sigma[j]!r}"
            )
        self.center_: FloatArray = center
        self.sigma_: FloatArray = sigma
        self.n_tags_ = int(x.shape[1])
        self._fitted = True
        self.reset()
        return self

    def fit_known(self, center: npt.ArrayLike, sigma: npt.ArrayLike) -> Ewma:
        """Use a centre and sigma known from earlier studies instead of a baseline."""
        c = np.atleast_1d(np.asarray(center, dtype=np.float64))
        s = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
        if c.shape != s.shape or c.ndim != 1:
            raise ValueError(
                f"center and sigma must be 1-D of one length, got {c.shape}, {s.shape}"
            )
        if not np.all(s > 0.0):
            raise BaselineError(f"sigma must be > 0 for every tag, got {s.tolist()}")
        self.center_ = c
        self.sigma_ = s
        self.n_tags_ = int(c.size)
        self._fitted = True
        self.reset()
        return self

    def reset(self) -> None:
        """Forget Phase II state (the statistic restarts at the centre); keep the fit."""
        if self._fitted:
            self._z = self.center_.copy()
            self._n = np.zeros(self.n_tags_, dtype=np.int64)

    # -- Phase II ----------------------------------------------------------------------------

    def update(self, chunk: npt.ArrayLike) -> EwmaResult:
        """Run the chart over a ``(time, tags)`` chunk, continuing from the previous chunk."""
        if not self._fitted:
            raise NotFittedError("This Ewma is not fitted yet; call fit(baseline) before update.")
        x = as_chunk(chunk, "chunk", self.n_tags_)
        t = x.shape[0]
        ok = np.isfinite(x)
        lam = self.lam
        stat = np.full_like(x, np.nan)
        z = self._z
        # Loop over time (the recurrence), vectorized over tags.
        for i in range(t):
            z = np.where(ok[i], lam * np.where(ok[i], x[i], 0.0) + (1.0 - lam) * z, z)
            stat[i] = np.where(ok[i], z, np.nan)
        n = self._n + np.cumsum(ok, axis=0)
        self._z = z
        self._n = n[-1] if t else self._n
        var = lam / (2.0 - lam)
        if self.limits == "exact":
            width = self.L * self.sigma_ * np.sqrt(var * (1.0 - (1.0 - lam) ** (2 * n)))
        else:
            width = np.broadcast_to(self.L * self.sigma_ * np.sqrt(var), x.shape)
        ucl = self.center_ + width
        lcl = self.center_ - width
        with np.errstate(invalid="ignore"):
            signal = (stat > ucl).astype(np.int8) - (stat < lcl).astype(np.int8)
        return EwmaResult(stat, lcl, ucl, signal, np.sum(~ok, axis=0))

