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

from models.detector import FloatArray, NotFittedError, as_chunk
from models.params import check_choice, check_float, check_int
from models.phase1 import (
    known_center_sigma,
    require_samples,
    require_spread,
    robust_sigma,
    tag_names,
)

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
        names = tag_names(tags, x.shape[1])
        require_samples(x, "EWMA", self.min_baseline, names)
        center = np.nanmean(x, axis=0)
        if self.sigma_method == "std":
            sigma = np.nanstd(x, axis=0, ddof=1)
        else:
            sigma = robust_sigma(x, "mr")
        require_spread(sigma, "EWMA", names)
        self.center_: FloatArray = center
        self.sigma_: FloatArray = sigma
        self.n_tags_ = int(x.shape[1])
        self._fitted = True
        self.reset()
        return self

    def fit_known(self, center: npt.ArrayLike, sigma: npt.ArrayLike) -> Ewma:
        """Use a centre and sigma known from earlier studies instead of a baseline."""
        c, s = known_center_sigma(center, sigma)
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
        t, m = x.shape
        lam = self.lam
        keep = 1.0 - lam
        # One allocation for the three float outputs: a fresh large array costs as much in page
        # faults as the arithmetic that fills it, and one block is recycled by the allocator.
        block = np.empty((3, t, m))
        stat, ucl, lcl = block[0], block[1], block[2]
        # The recursion runs in place in the output, row by row. A NaN or inf sample leaves a
        # non-finite value in its column from then on, so a finite last row proves the column
        # had no sample to skip; only columns that had one are redone, with skipping.
        term = np.empty(m)
        z = self._z
        np.multiply(x, lam, out=stat)
        with np.errstate(invalid="ignore"):
            for i in range(t):
                row = stat[i]
                np.multiply(z, keep, out=term)
                np.add(row, term, out=row)
                z = row
        skipped = np.zeros(m, dtype=np.int64)
        gaps: npt.NDArray[np.intp] = np.empty(0, dtype=np.intp)
        gap_ok: npt.NDArray[np.bool_] = np.empty((t, 0), dtype=bool)
        if t:
            last = stat[-1].copy()
            gaps = np.flatnonzero(~np.isfinite(last))
            if gaps.size:
                last[gaps], gap_ok = self._skip_gaps(x[:, gaps], stat, gaps)
                skipped[gaps] = t - np.count_nonzero(gap_ok, axis=0)
            self._z = last
        n0 = self._n
        self._n = n0 + (t - skipped)
        var = lam / (2.0 - lam)
        scale = self.L * self.sigma_
        with np.errstate(invalid="ignore"):
            if self.limits == "asymptotic":
                upper = self.center_ + scale * np.sqrt(var)
                lower = self.center_ - scale * np.sqrt(var)
                ucl[...] = upper
                lcl[...] = lower
            else:
                steps = np.arange(1, t + 1, dtype=np.int64)
                if not gaps.size and t and n0.min() == n0.max():
                    # Every tag has seen the same number of samples: one factor per row.
                    np.multiply(scale, self._exact_factor(n0[0] + steps)[:, None], out=lcl)
                else:
                    n = n0 + steps[:, None]
                    n[:, gaps] = n0[gaps] + np.cumsum(gap_ok, axis=0)
                    np.multiply(scale, self._exact_factor(n), out=lcl)
                upper = np.add(self.center_, lcl, out=ucl)
                lower = np.subtract(self.center_, lcl, out=lcl)
            signal = np.subtract(
                np.greater(stat, upper).view(np.int8), np.less(stat, lower).view(np.int8)
            )
        return EwmaResult(stat, lcl, ucl, signal, skipped)

    def _skip_gaps(
        self, x: FloatArray, stat: FloatArray, gaps: npt.NDArray[np.intp]
    ) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """Redo the recursion for the ``gaps`` columns of ``stat``, skipping non-finite samples.

        Returns the statistic after the last row and which samples were usable; skipped samples
        become NaN in ``stat``.
        """
        ok: npt.NDArray[np.bool_] = np.isfinite(x)
        miss = ~ok
        holes: npt.NDArray[np.bool_] = np.any(miss, axis=1)
        keep = 1.0 - self.lam
        sub = np.multiply(np.where(ok, x, 0.0), self.lam)
        term = np.empty(gaps.size)
        z = self._z[gaps]
        for i in range(x.shape[0]):
            row = sub[i]
            np.multiply(z, keep, out=term)
            np.add(row, term, out=row)
            if holes[i]:
                np.copyto(row, z, where=miss[i])
            z = row
        last = sub[-1].copy()
        sub[miss] = np.nan
        stat[:, gaps] = sub
        return last, ok

    def _exact_factor(self, n: npt.NDArray[np.int64]) -> FloatArray:
        """``sqrt(lam / (2 - lam) * (1 - (1 - lam)^(2 n)))`` elementwise, each distinct n once."""
        lam = self.lam
        var = lam / (2.0 - lam)
        lo = int(n.min()) if n.size else 0
        hi = int(n.max()) if n.size else 0
        if n.ndim > 1 and hi - lo < n.size // 4:
            table: FloatArray = np.sqrt(var * (1.0 - (1.0 - lam) ** (2 * np.arange(lo, hi + 1))))
            return table[n - lo]
        full: FloatArray = np.sqrt(var * (1.0 - (1.0 - lam) ** (2 * n)))
        return full
