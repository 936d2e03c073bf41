"""Two-sided tabular CUSUM chart for individual observations, vectorized over tags.

The cumulative sum accumulates deviations beyond a reference value K = k * sigma on each side,

    C+_t = max(0, x_t - (mu0 + K) + C+_{t-1}),    C-_t = max(0, (mu0 - K) - x_t + C-_{t-1}),

and signals when either exceeds the decision interval H = h * sigma. Tuned with k = 1/2 it is
the quickest chart to find a sustained one-sigma shift, and its bookkeeping says more than "out
of control": N+ / N- (how many consecutive samples the statistic has been above zero) date the
change, and mu0 + K + C+/N+ estimates the new mean, which is what an engineer wants to read in an
alert. The statistics are kept in data units (Montgomery's tabular form) so they can be plotted
against H next to the raw signal, and a textbook table can be checked line by line.

After a signal the statistic is *not* reset: it keeps accumulating (and keeps signalling while
the shift lasts). Whether to restart after an alert is the monitor's decision (``reset()``), not
the chart's. NaN samples are skipped per tag and leave the state untouched.

References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., section 9.1
(9.1.2 tabular CUSUM, eqs. 9.2-9.5; 9.1.3 design, Table 9.3 ARLs; 9.1.4 fast initial response);
Lucas & Crosier (1982), Technometrics 24(3), 199-205; Page (1954), Biometrika 41.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.detector import BaselineError, FloatArray, NotFittedError, as_chunk
from models.params import check_float, check_int
from models.phase1 import robust_sigma

__all__ = ["Cusum", "CusumResult"]


@dataclass(frozen=True, slots=True)
class CusumResult:
    """What one ``update`` produced; every array but ``skipped`` is shaped ``(time, tags)``.

    Fields:
        c_plus, c_minus: the upper and lower CUSUMs in data units (NaN where skipped).
        n_plus, n_minus: consecutive valid samples the statistic has been above zero (N+, N-);
            a skipped sample repeats the carried count.
        signal: +1 where C+ > H, -1 where C- > H, 0 otherwise (and where skipped). Should both
            exceed H at once, the larger statistic wins.
        change_point: on a signalling sample, the absolute ``sample`` index of the first sample
            of the current excursion, i.e. the estimated first sample after the change
            (Montgomery's "the shift occurred after period t - N"); -1 elsewhere.
        shift: on a signalling sample, the estimated new process mean
            mu0 + K + C+/N+ (upper) or mu0 - K - C-/N- (lower), Montgomery eqs. 9.4-9.5;
            NaN elsewhere.
        sample: the absolute row index of each row, counted from 0 since ``fit`` or ``reset``
            over all rows (skipped ones included), so a caller can map ``change_point`` back to
            its timestamps.
        skipped: per tag ``(tags,)``, how many samples of this chunk were NaN and skipped.

    Examples:
        >>> res = Cusum(k=0.5, h=2.0).fit_known([0.0], [1.0]).update([2.0, np.nan, 2.0])
        >>> res.c_plus[:, 0].tolist(), res.n_plus[:, 0].tolist(), res.signal[:, 0].tolist()
        ([1.5, nan, 3.0], [1, 1, 2], [0, 0, 1])
        >>> int(res.change_point[2, 0]), float(res.shift[2, 0]), res.skipped.tolist()
        (0, 2.0, [1])

    References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., 9.1.2.
    """

    c_plus: FloatArray
    c_minus: FloatArray
    n_plus: npt.NDArray[np.int64]
    n_minus: npt.NDArray[np.int64]
    signal: npt.NDArray[np.int8]
    change_point: npt.NDArray[np.int64]
    shift: FloatArray
    sample: npt.NDArray[np.int64]
    skipped: npt.NDArray[np.int64]


class Cusum:
    """Two-sided tabular CUSUM with reference value ``k`` and decision interval ``h`` in sigmas.

    Parameters:
        k: reference value in sigma units, >= 0 (half the shift to detect quickest; 0.5 for a
            one-sigma shift).
        h: decision interval in sigma units, > 0 (4 or 5 are usual: zero-state ARL0 168 / 465).
        min_baseline: fewest usable baseline samples per tag that ``fit`` accepts.
        head_start: fast initial response, in sigma units in [0, h): both statistics start (and
            restart on ``reset``) at ``head_start * sigma``; h/2 is the usual choice. With a head
            start, N+ / N- count from the first sample and the shift estimate includes it.

    Learned attributes: ``center_`` (mu0), ``sigma_`` (mean moving range / d2, or as given to
    ``fit_known``), ``reference_`` (K = k * sigma_) and ``interval_`` (H = h * sigma_), all per
    tag in data units, and ``n_tags_``.

    Examples:
        >>> rng = np.random.default_rng(3)
        >>> det = Cusum(k=0.5, h=5.0).fit(rng.normal(50.0, 2.0, size=(100, 2)))
        >>> after = rng.normal(50.0, 2.0, size=(60, 2)) + [0.0, 2.0]  # +1 sigma on tag 1
        >>> res = det.update(after)
        >>> bool(res.signal[:, 0].any()), bool((res.signal[:, 1] == 1).any())
        (False, True)
        >>> first = int(np.argmax(res.signal[:, 1] != 0))
        >>> bool(50.5 < res.shift[first, 1] < 54.0), int(res.change_point[first, 1]) <= first
        (True, True)

    References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., 9.1.2-9.1.4;
    Lucas & Crosier (1982), Technometrics 24(3).
    """

    def __init__(
        self,
        k: float = 0.5,
        h: float = 5.0,
        min_baseline: int = 20,
        head_start: float = 0.0,
    ) -> None:
        self.k = check_float("Cusum", "k", k, 0.0)
        self.h = check_float("Cusum", "h", h, 0.0, low_open=True)
        self.min_baseline = check_int("Cusum", "min_baseline", min_baseline, 2)
        self.head_start = check_float(
            "Cusum", "head_start", head_start, 0.0, self.h, high_open=True
        )
        self._fitted = False

    # -- Phase I -----------------------------------------------------------------------------

    def fit(self, baseline: npt.ArrayLike, tags: list[str] | None = None) -> Cusum:
        """Learn ``center_`` (mean) and ``sigma_`` (MR-bar / d2) per tag; NaNs ignored."""
        x = as_chunk(baseline, "baseline")
        names = tags or [f"#{j}" for j in range(x.shape[1])]
        n = np.sum(np.isfinite(x), axis=0)
        short = np.flatnonzero(n < self.min_baseline)
        if short.size:
            j = int(short[0])
            raise BaselineError(
                f"CUSUM needs at least {self.min_baseline} baseline samples per tag; "
                f"tag {names[j]} has {int(n[j])}"
            )
        sigma = robust_sigma(x, "mr")
        flat = np.flatnonzero(~(sigma > 0.0))
        if flat.size:
            j = int(flat[0])
            raise BaselineError(
                f"CUSUM needs a baseline that varies; tag {names[j]} has sigma {float(sigma[j])!r}"
            )
        return self._set(np.nanmean(x, axis=0), sigma)

    def fit_known(self, center: npt.ArrayLike, sigma: npt.ArrayLike) -> Cusum:
        """Use a target mean mu0 and sigma known from earlier studies instead of a baseline."""
        c = np.atleast_1d(np.asarray(center, dtype=np.float64))
        s = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
        if c.shape != s.shape or c.ndim != 1:
            raise ValueError(
                f"center and sigma must be 1-D of one length, got {c.shape}, {s.shape}"
            )
        if not np.all(s > 0.0) or not np.all(np.isfinite(c)):
            raise BaselineError(
                f"sigma must be > 0 and center finite for every tag, got {c.tolist()}, {s.tolist()}"
            )
        return self._set(c, s)

    def _set(self, center: FloatArray, sigma: FloatArray) -> Cusum:
        self.center_: FloatArray = center
        self.sigma_: FloatArray = sigma
        self.reference_: FloatArray = self.k * sigma
        self.interval_: FloatArray = self.h * sigma
        self.n_tags_ = int(center.size)
        self._fitted = True
        self.reset()
        return self

    def reset(self) -> None:
        """Restart both statistics at the head start (0 by default) and the sample count at 0."""
        if self._fitted:
            start = self.head_start * self.sigma_
            self._cp = start.copy()
            self._cm = start.copy()
            self._np = np.zeros(self.n_tags_, dtype=np.int64)
            self._nm = np.zeros(self.n_tags_, dtype=np.int64)
            # Absolute index of the first sample of the current excursion, per side.
            self._sp = np.zeros(self.n_tags_, dtype=np.int64)
            self._sm = np.zeros(self.n_tags_, dtype=np.int64)
            self._rows = 0

    # -- Phase II ----------------------------------------------------------------------------

    def update(self, chunk: npt.ArrayLike) -> CusumResult:
        """Run the chart over a ``(time, tags)`` chunk, continuing from the previous chunk."""
        if not self._fitted:
            raise NotFittedError("This Cusum is not fitted yet; call fit(baseline) before update.")
        x = as_chunk(chunk, "chunk", self.n_tags_)
        t, m = x.shape
        ok = np.isfinite(x)
        up_ref = self.center_ + self.reference_
        dn_ref = self.center_ - self.reference_
        cp_out = np.empty((t, m))
        cm_out = np.empty((t, m))
        np_out = np.empty((t, m), dtype=np.int64)
        nm_out = np.empty((t, m), dtype=np.int64)
        sp_out = np.empty((t, m), dtype=np.int64)
        sm_out = np.empty((t, m), dtype=np.int64)
        cp, cm, n_p, n_m, sp, sm = self._cp, self._cm, self._np, self._nm, self._sp, self._sm
        # Loop over time (the recursion), vectorized over tags.
        for i in range(t):
            v = ok[i]
            xi = np.where(v, x[i], 0.0)
            cp = np.where(v, np.maximum(0.0, xi - up_ref + cp), cp)
            cm = np.where(v, np.maximum(0.0, dn_ref - xi + cm), cm)
            n_p = np.where(v, np.where(cp > 0.0, n_p + 1, 0), n_p)
            n_m = np.where(v, np.where(cm > 0.0, n_m + 1, 0), n_m)
            here = self._rows + i
            sp = np.where(v & (n_p == 1), here, sp)
            sm = np.where(v & (n_m == 1), here, sm)
            cp_out[i], cm_out[i], np_out[i], nm_out[i] = cp, cm, n_p, n_m
            sp_out[i], sm_out[i] = sp, sm
        self._cp, self._cm, self._np, self._nm, self._sp, self._sm = cp, cm, n_p, n_m, sp, sm
        sample = np.repeat(np.arange(self._rows, self._rows + t, dtype=np.int64)[:, None], m, 1)
        self._rows += t

        big = self.interval_
        up = ok & (cp_out > big)
        dn = ok & (cm_out > big)
        upper = up & ~(dn & (cm_out > cp_out))
        lower = dn & ~upper
        signal = upper.astype(np.int8) - lower.astype(np.int8)
        change = np.where(upper, sp_out, np.where(lower, sm_out, -1))
        with np.errstate(invalid="ignore", divide="ignore"):
            shift = np.where(
                upper,
                up_ref + cp_out / np.maximum(np_out, 1),
                np.where(lower, dn_ref - cm_out / np.maximum(nm_out, 1), np.nan),
            )
        return CusumResult(
            c_plus=np.where(ok, cp_out, np.nan),
            c_minus=np.where(ok, cm_out, np.nan),
            n_plus=np_out,
            n_minus=nm_out,
            signal=signal,
            change_point=change.astype(np.int64),
            shift=shift,
            sample=sample,
            skipped=np.sum(~ok, axis=0).astype(np.int64),
        )
