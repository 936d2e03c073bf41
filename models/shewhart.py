"""Shewhart individuals and moving-range (I-MR) chart, vectorized over tags.

Many cell-line quantities arrive one value at a time (a weight, a formation capacity, a slurry
viscosity per batch), so there is no subgroup to estimate short-term variation from. The I-MR
chart takes it from the moving range of consecutive values: sigma = MRbar / d2 with d2 = 1.128.
That estimate ignores slow drift in the baseline, which a plain standard deviation would absorb
and so widen the limits. The individuals chart catches large shifts (beyond
center +/- L sigma); the MR chart catches bursts of short-term variation. NaN samples are skipped
per tag; the next usable sample's moving range is taken against the last usable one, also
across chunk boundaries, so chunking and gaps never change the result.

References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., section 6.4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.constants import d2
from models.detector import FloatArray, NotFittedError, as_chunk
from models.params import check_float, check_int
from models.phase1 import known_center_sigma, require_samples, require_spread, tag_names

__all__ = ["Individuals", "IndividualsResult"]

#: d2 for a moving range of two consecutive values (Montgomery, Appendix VI).
D2 = d2(2)
#: D4 for n = 2: the MR chart's upper limit is D4 * MRbar (its lower limit is 0).
D4 = 3.267
#: Samples (rows x tags) charted per block in ``update``: small enough to stay in cache.
_BLOCK = 1 << 16


@dataclass(frozen=True, slots=True)
class IndividualsResult:
    """What one ``update`` produced; arrays are shaped ``(time, tags)``, ``skipped`` ``(tags,)``.

    ``x`` is the chunk (NaN where skipped); ``mr`` is NaN where the sample was skipped or has no
    earlier usable sample since the last ``reset``. ``signal`` is +1 above ``ucl``, -1 below
    ``lcl``, 0 otherwise; ``mr_signal`` is +1 where ``mr`` exceeds ``mr_ucl``, else 0.
    """

    x: FloatArray
    mr: FloatArray
    lcl: FloatArray
    ucl: FloatArray
    mr_ucl: FloatArray
    signal: npt.NDArray[np.int8]
    mr_signal: npt.NDArray[np.int8]
    skipped: npt.NDArray[np.int64]


class Individuals:
    """Individuals chart with limits ``center +/- L * sigma`` and a moving-range chart.

    Parameters:
        L: limit width in process sigmas, > 0 (3 gives the classic ARL0 of 370.4).
        min_baseline: fewest usable baseline samples per tag that ``fit`` accepts.

    Fitted attributes (one entry per tag): ``center_``, ``sigma_`` (MRbar / 1.128),
    ``mr_bar_``, ``lcl_``, ``ucl_``, ``mr_ucl_`` (3.267 * MRbar, the usual 3-sigma limit of the
    MR chart; it does not scale with ``L``).

    Examples:
        >>> rng = np.random.default_rng(7)
        >>> det = Individuals().fit(rng.normal(5.0, 0.1, size=(100, 2)))
        >>> x = rng.normal(5.0, 0.1, size=(20, 2))
        >>> x[12, 1] += 0.6
        >>> res = det.update(x)
        >>> np.flatnonzero(res.signal[:, 1]).tolist(), bool(res.signal[:, 0].any())
        ([12], False)

    References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., 6.4.
    """

    def __init__(
        self,
        L: float = 3.0,  # noqa: N803 - the literature's name
        min_baseline: int = 20,
    ) -> None:
        self.L = check_float("Individuals", "L", L, 0.0, low_open=True)
        self.min_baseline = check_int("Individuals", "min_baseline", min_baseline, 2)
        self._fitted = False

    # -- Phase I -----------------------------------------------------------------------------

    def fit(self, baseline: npt.ArrayLike, tags: list[str] | None = None) -> Individuals:
        """Learn centre and MR-based sigma per tag from an in-control baseline; NaNs skipped.

        A moving range across a gap pairs the values either side of it, as if the missing
        samples had been removed from the series.
        """
        x = as_chunk(baseline, "baseline")
        names = tag_names(tags, x.shape[1])
        require_samples(x, "Individuals", self.min_baseline, names)
        mr, _ = _moving_range(x, np.full(x.shape[1], np.nan))
        mr_bar = np.nanmean(mr, axis=0)
        require_spread(mr_bar, "Individuals", names, "MRbar")
        self._set(np.nanmean(x, axis=0), mr_bar / D2)
        return self

    def fit_known(self, center: npt.ArrayLike, sigma: npt.ArrayLike) -> Individuals:
        """Use a centre and process sigma known from earlier studies instead of a baseline."""
        c, s = known_center_sigma(center, sigma)
        self._set(c, s)
        return self

    def _set(self, center: FloatArray, sigma: FloatArray) -> None:
        self.center_: FloatArray = center
        self.sigma_: FloatArray = sigma
        self.mr_bar_: FloatArray = D2 * sigma
        self.lcl_: FloatArray = center - self.L * sigma
        self.ucl_: FloatArray = center + self.L * sigma
        self.mr_ucl_: FloatArray = D4 * self.mr_bar_
        self.n_tags_ = int(center.size)
        self._fitted = True
        self.reset()

    def reset(self) -> None:
        """Forget the last usable sample (the next one has no moving range); keep the fit."""
        if self._fitted:
            self._last = np.full(self.n_tags_, np.nan)

    # -- Phase II ----------------------------------------------------------------------------

    def update(self, chunk: npt.ArrayLike) -> IndividualsResult:
        """Chart a ``(time, tags)`` chunk, continuing the moving range from the last chunk."""
        if not self._fitted:
            raise NotFittedError(
                "This Individuals is not fitted yet; call fit(baseline) before update."
            )
        x = as_chunk(chunk, "chunk", self.n_tags_)
        shape = t_len, n_tags = x.shape
        xs = np.empty(shape)
        mr = np.empty(shape)
        lcl = np.empty(shape)
        ucl = np.empty(shape)
        mr_ucl = np.empty(shape)
        signal = np.empty(shape, dtype=np.int8)
        mr_signal = np.empty(shape, dtype=np.int8)
        skipped = np.zeros(n_tags, dtype=np.int64)
        step = max(1, _BLOCK // max(n_tags, 1))
        below = np.empty((min(t_len, step), n_tags), dtype=np.bool_)
        total = np.zeros(n_tags)
        # Tags without a skipped sample take the plain path: the moving range is the step
        # between consecutive rows. Rows go in cache-sized blocks so that every output is
        # computed while its block of the chunk is still in cache.
        for r0 in range(0, t_len, step):
            r1 = min(t_len, r0 + step)
            xb = xs[r0:r1]
            np.copyto(xb, x[r0:r1])
            with np.errstate(over="ignore", invalid="ignore"):
                total += np.add.reduce(xb, axis=0)  # a NaN or inf poisons the sum
            with np.errstate(invalid="ignore"):
                if r0 == 0:
                    np.subtract(xb[0], self._last, out=mr[0])
                    np.subtract(xb[1:], xb[:-1], out=mr[1:r1])
                else:
                    np.subtract(xb, xs[r0 - 1 : r1 - 1], out=mr[r0:r1])
            mb = mr[r0:r1]
            np.absolute(mb, out=mb)
            lcl[r0:r1] = self.lcl_
            ucl[r0:r1] = self.ucl_
            mr_ucl[r0:r1] = self.mr_ucl_
            sb = signal[r0:r1]
            np.greater(xb, self.ucl_, out=sb.view(np.bool_))
            lt = below[: r1 - r0]
            np.less(xb, self.lcl_, out=lt)
            np.subtract(sb, lt.view(np.int8), out=sb)
            np.greater(mb, self.mr_ucl_, out=mr_signal[r0:r1].view(np.bool_))
        if t_len:
            rough = np.flatnonzero(~np.isfinite(total))
            last = xs[-1].copy()
            if rough.size:
                # Tags with skipped samples: the moving range pairs usable samples only.
                sub = xs[:, rough]
                mr_s, last[rough] = _moving_range(sub, self._last[rough])
                mr[:, rough] = mr_s
                mr_signal[:, rough] = mr_s > self.mr_ucl_[rough]
                skipped[rough] = np.sum(~np.isfinite(sub), axis=0)
            self._last = last
        return IndividualsResult(xs, mr, lcl, ucl, mr_ucl, signal, mr_signal, skipped)


def _moving_range(x: FloatArray, last: FloatArray) -> tuple[FloatArray, FloatArray]:
    """|x_t - previous usable x| per tag, with ``last`` the usable value before the chunk.

    Returns the moving ranges (NaN where x_t is unusable or has no predecessor) and the last
    usable value after the chunk. Vectorized: the index of the latest usable row is carried
    forward with a cumulative maximum instead of a loop over samples.
    """
    t, k = x.shape
    ok = np.isfinite(x)
    rows = np.where(ok, np.arange(t)[:, None], -1)
    latest = np.maximum.accumulate(rows, axis=0) if t else rows
    before = np.concatenate([np.full((1, k), -1), latest])[:t]
    cols = np.arange(k)
    prev = np.where(before >= 0, x[np.maximum(before, 0), cols], last)
    mr = np.where(ok, np.abs(x - prev), np.nan)
    if t:
        end = latest[-1]
        last = np.where(end >= 0, x[np.maximum(end, 0), cols], last)
    return mr, last
