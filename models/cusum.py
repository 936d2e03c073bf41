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
from models.phase1 import require_samples, require_spread, robust_sigma, tag_names

__all__ = ["Cusum", "CusumResult"]


@dataclass(frozen=True, slots=True)
class CusumResult:
    """What one ``update`` produced; every array but ``skipped`` is shaped ``(time, tags)``.

    Fields:
        c_plus, c_minus: the upper and lower CUSUMs in data units (NaN where skipped).
        n_plus, n_minus: consecutive valid samples the statistic has been above zero (N+, N-);
            a skipped sample repeats the carried count. int32, half the memory of int64: a run
            would need 2**31 samples (68 years at one per second) to outgrow it.
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
            its timestamps. A read-only broadcast view of one column (every tag shares its
            row's index), so it costs no memory; copy it before writing to it.
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
    n_plus: npt.NDArray[np.int32]
    n_minus: npt.NDArray[np.int32]
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
        names = tag_names(tags, x.shape[1])
        require_samples(x, "CUSUM", self.min_baseline, names)
        sigma = robust_sigma(x, "mr")
        require_spread(sigma, "CUSUM", names)
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
            self._np = np.zeros(self.n_tags_, dtype=np.int32)
            self._nm = np.zeros(self.n_tags_, dtype=np.int32)
            # Absolute index of the first sample of the current excursion, per side; read only
            # while that side's N is above zero.
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
        first = self._rows
        sp_in, sm_in = self._sp, self._sm
        up_ref = self.center_ + self.reference_
        dn_ref = self.center_ - self.reference_
        # Two allocations for the seven written (time, tags) outputs, each small enough for the
        # allocator to recycle: a fresh large array costs as much in page faults as the
        # arithmetic that fills it. ``sample`` is a broadcast view and needs no memory at all,
        # and N is int32: the outputs are written once, so their bytes set the pace.
        size = t * m
        wide = np.empty(4 * 8 * size, dtype=np.uint8)
        floats = wide[: 3 * 8 * size].view(np.float64).reshape(3, t, m)
        c_plus, c_minus, shift = floats[0], floats[1], floats[2]
        change = wide[3 * 8 * size :].view(np.int64).reshape(t, m)
        narrow = np.empty(2 * 4 * size + size, dtype=np.uint8)
        counts = narrow[: 2 * 4 * size].view(np.int32).reshape(2, t, m)
        n_plus, n_minus = counts[0], counts[1]
        signal = narrow[2 * 4 * size :].view(np.int8).reshape(t, m)
        # The recursion runs in place in the outputs, row by row over all tags. A NaN or inf
        # sample leaves a non-finite C+ or C- in its column from then on, so finite last rows
        # prove a column had no sample to skip; only columns that had one are redone.
        big = self.interval_
        beyond = np.empty((2, t, m), dtype=bool)
        up, dn = beyond[0], beyond[1]
        at_zero = np.empty((2, t, m), dtype=bool)
        sums_in = np.stack([self._cp, self._cm])
        with np.errstate(invalid="ignore"):
            _accumulate(x, up_ref, dn_ref, sums_in, floats[:2], big, beyond, at_zero)
        _run_lengths(at_zero, np.stack([self._np, self._nm]), counts)
        gaps: npt.NDArray[np.intp] = np.empty(0, dtype=np.intp)
        skipped = np.zeros(m, dtype=np.int64)
        if t:
            gaps = np.flatnonzero(~(np.isfinite(c_plus[-1]) & np.isfinite(c_minus[-1])))
            sp = _excursion_start(n_plus, sp_in, first)
            sm = _excursion_start(n_minus, sm_in, first)
        else:
            sp, sm = sp_in.copy(), sm_in.copy()
        ok: npt.NDArray[np.bool_] = np.ones((t, 0), dtype=bool)
        gap_sp = gap_sm = np.empty((t, 0), dtype=np.int64)
        if gaps.size:
            ok, gap_sp, gap_sm = self._skip_gaps(
                x[:, gaps], gaps, first, up_ref, dn_ref, c_plus, c_minus, n_plus, n_minus
            )
            sp[gaps], sm[gaps] = gap_sp[-1], gap_sm[-1]
            skipped[gaps] = t - np.count_nonzero(ok, axis=0)
        if t:
            self._cp, self._cm = c_plus[-1].copy(), c_minus[-1].copy()
            self._np, self._nm = n_plus[-1].copy(), n_minus[-1].copy()
        self._sp, self._sm = sp, sm
        rows_seen = np.arange(first, first + t, dtype=np.int64)[:, None]
        sample: npt.NDArray[np.int64] = np.broadcast_to(rows_seen, (t, m))
        self._rows += t

        if gaps.size:
            with np.errstate(invalid="ignore"):
                up[:, gaps] = ok & np.greater(c_plus[:, gaps], big[gaps])
                dn[:, gaps] = ok & np.greater(c_minus[:, gaps], big[gaps])
        signal.fill(0)
        change.fill(-1)
        shift.fill(np.nan)
        if up.any() or dn.any():
            both = up & dn
            upper = up
            if both.any():
                upper = up & ~(both & np.greater(c_minus, c_plus))
            lower = dn & ~upper
            np.subtract(upper.view(np.int8), lower.view(np.int8), out=signal)
            where_gap = np.full(m, -1, dtype=np.intp)
            where_gap[gaps] = np.arange(gaps.size)
            flat_change, flat_shift = change.reshape(-1), shift.reshape(-1)
            for mask, runs, carried, gap_start, ref, stat, sign in (
                (upper, n_plus, sp_in, gap_sp, up_ref, c_plus, 1.0),
                (lower, n_minus, sm_in, gap_sm, dn_ref, c_minus, -1.0),
            ):
                # The flat positions, then (row, tag): far quicker than a 2-D nonzero.
                at = np.flatnonzero(mask)
                rows, cols = np.divmod(at, m)
                n = runs.reshape(-1)[at]
                begin = np.where(n <= rows + 1, first + rows + 1 - n, carried[cols])
                g = where_gap[cols]
                in_gap = g >= 0
                begin[in_gap] = gap_start[rows[in_gap], g[in_gap]]
                flat_change[at] = begin
                with np.errstate(invalid="ignore", divide="ignore"):
                    step = stat.reshape(-1)[at] / np.maximum(n, 1)
                    flat_shift[at] = ref[cols] + step if sign > 0 else ref[cols] - step
        if gaps.size:
            c_plus[:, gaps] = np.where(ok, c_plus[:, gaps], np.nan)
            c_minus[:, gaps] = np.where(ok, c_minus[:, gaps], np.nan)
        return CusumResult(
            c_plus=c_plus,
            c_minus=c_minus,
            n_plus=n_plus,
            n_minus=n_minus,
            signal=signal,
            change_point=change,
            shift=shift,
            sample=sample,
            skipped=skipped,
        )

    def _skip_gaps(
        self,
        x: FloatArray,
        gaps: npt.NDArray[np.intp],
        first: int,
        up_ref: FloatArray,
        dn_ref: FloatArray,
        c_plus: FloatArray,
        c_minus: FloatArray,
        n_plus: npt.NDArray[np.int32],
        n_minus: npt.NDArray[np.int32],
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Redo the ``gaps`` columns of the outputs, skipping their non-finite samples.

        Returns which samples were usable and, per row, the first sample of each side's current
        excursion (skipped rows repeat the carried state, so it cannot be told from N alone).
        """
        ok: npt.NDArray[np.bool_] = np.isfinite(x)
        miss = ~ok
        holes: npt.NDArray[np.bool_] = np.any(miss, axis=1)
        x0 = np.where(ok, x, 0.0)
        cp = x0 - up_ref[gaps]
        cm = dn_ref[gaps] - x0
        n_p = np.empty(cp.shape, dtype=np.int32)
        n_m = np.empty(cm.shape, dtype=np.int32)
        _recurse(cp, n_p, self._cp[gaps], self._np[gaps], (miss, holes))
        _recurse(cm, n_m, self._cm[gaps], self._nm[gaps], (miss, holes))
        c_plus[:, gaps], c_minus[:, gaps] = cp, cm
        n_plus[:, gaps], n_minus[:, gaps] = n_p, n_m
        here = np.arange(first, first + x.shape[0], dtype=np.int64)[:, None]
        return (
            ok,
            _latest(ok & (n_p == 1), here, self._sp[gaps]),
            _latest(ok & (n_m == 1), here, self._sm[gaps]),
        )


#: Tags from which a row is long enough to be worth two more calls per row on cached data.
_WIDE_ROW = 2048


def _accumulate(
    x: FloatArray,
    up_ref: FloatArray,
    dn_ref: FloatArray,
    carried: FloatArray,
    stat: FloatArray,
    big: FloatArray,
    above: npt.NDArray[np.bool_],
    at_zero: npt.NDArray[np.bool_],
) -> None:
    """Both sides of a gap-free CUSUM into ``stat`` ``(2, time, tags)``, row by row.

    C+_t = max(0, x_t - up_ref + C+_(t-1)) and C-_t = max(0, dn_ref - x_t + C-_(t-1)) from the
    ``carried`` (C+, C-); ``above`` receives C > ``big`` and ``at_zero`` C <= 0, both shaped
    like ``stat``. Both sides share one pass over ``x``, so each sample row is read once. On
    wide rows the marks are taken row by row, so each statistic row is read back while still in
    cache; on narrow ones a call per row costs more than the data, so
    they are taken over the whole chunk at once. ``maximum`` against an array of zeros takes
    the vectorized loop that a scalar 0.0 does not, with the same result bit for bit (NaN and
    signed zeros included).
    """
    zero = np.zeros(up_ref.shape)
    inline = up_ref.size >= _WIDE_ROW
    cp, cm = carried
    ups, dns = stat
    up_above, dn_above = above
    up_zero, dn_zero = at_zero
    for i, (sample, row_p, row_m) in enumerate(zip(x, ups, dns, strict=True)):
        np.subtract(sample, up_ref, out=row_p)
        np.add(row_p, cp, out=row_p)
        np.maximum(zero, row_p, out=row_p)
        np.subtract(dn_ref, sample, out=row_m)
        np.add(row_m, cm, out=row_m)
        np.maximum(zero, row_m, out=row_m)
        if inline:
            np.greater(row_p, big, out=up_above[i])
            np.less_equal(row_p, 0.0, out=up_zero[i])
            np.greater(row_m, big, out=dn_above[i])
            np.less_equal(row_m, 0.0, out=dn_zero[i])
        cp, cm = row_p, row_m
    if not inline:
        np.greater(stat, big, out=above)
        np.less_equal(stat, 0.0, out=at_zero)


def _run_lengths(
    at_zero: npt.NDArray[np.bool_], carried: npt.NDArray[np.int32], counts: npt.NDArray[np.int32]
) -> None:
    """N per sample of a gap-free chunk (``(sides, time, tags)``): samples since the last zero.

    Rows at zero mark their own index (offset by 2**31), rows above zero mark 0; a running
    maximum down the rows then holds the latest zero, and N is the distance to it. The carried
    count ``(sides, tags)`` enters as a zero ``carried + 1`` rows before the chunk. Whole-array
    steps and one maximum per row replace the three dependent steps per row of a count carried
    row by row.
    """
    t = at_zero.shape[1]
    if t == 0:
        return
    offset = np.uint32(2**31)
    here = np.arange(t, dtype=np.uint32)[:, None] + offset
    marks = counts.view(np.uint32)
    np.multiply(at_zero, here, out=marks)
    np.maximum(marks[:, 0], offset - np.uint32(1) - carried.view(np.uint32), out=marks[:, 0])
    for i in range(1, t):
        np.maximum(marks[:, i - 1], marks[:, i], out=marks[:, i])
    np.subtract(here, marks, out=marks)


def _recurse(
    stat: FloatArray,
    counts: npt.NDArray[np.int32],
    c: FloatArray,
    n: npt.NDArray[np.int32],
    skip: tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]],
) -> None:
    """One side of the CUSUM in place for columns with samples to skip (NaN or inf).

    ``stat`` holds the increments and becomes the statistic, ``counts`` receives N; ``c`` and
    ``n`` are the carried statistic and count. ``skip`` = (per-sample mask, per-row any) marks
    samples that leave the state unchanged.
    """
    zero = np.zeros(c.shape)
    pos = np.empty(c.shape, dtype=bool)
    for i, (row, k) in enumerate(zip(stat, counts, strict=True)):
        np.add(row, c, out=row)
        np.maximum(zero, row, out=row)
        np.greater(row, 0.0, out=pos)
        np.add(n, 1, out=k)
        np.multiply(k, pos, out=k)
        if skip[1][i]:
            np.copyto(row, c, where=skip[0][i])
            np.copyto(k, n, where=skip[0][i])
        c, n = row, k


def _excursion_start(
    counts: npt.NDArray[np.int32], carried: npt.NDArray[np.int64], first: int
) -> npt.NDArray[np.int64]:
    """Absolute index of the first sample of each tag's current excursion after a gap-free chunk.

    A run of N = n ending at the last row began at row t - n; a run longer than the rows seen so
    far began in an earlier chunk (``carried``). Tags whose N ended at 0 keep ``carried``: no
    later result reads it, since an excursion that starts later is dated from its own N.
    """
    t = counts.shape[0]
    last = counts[-1].astype(np.int64)
    base = np.int64(first)  # int64 arithmetic: the absolute index can outgrow the counts
    return np.where((last >= 1) & (last <= t), base + t - last, carried)


def _latest(
    mark: npt.NDArray[np.bool_], here: npt.NDArray[np.int64], carried: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Per row and tag, the latest absolute row index up to it where ``mark`` held, else
    ``carried``."""
    idx = np.where(mark, here, np.int64(-1))
    np.maximum.accumulate(idx, axis=0, out=idx)
    return np.where(idx >= 0, idx, carried)
