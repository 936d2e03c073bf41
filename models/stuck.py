"""Frozen-sensor detector: a tag whose value stops changing, vectorized over tags.

A transmitter that hangs, a PLC tag that is no longer written or an OPC UA server serving a
cached value all report a perfectly "in control" value, so every control chart stays quiet while
the line runs blind. Real measurements of a running process always jitter in their last digits;
a value that repeats for many consecutive samples is itself the alarm. The detector needs no
baseline (``fit`` only records how many tags there are) and carries the last usable value and
the run length per tag between chunks. NaN samples are skipped: they neither break nor extend a
run.

References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., section 5.3
(patterns on control charts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.detector import FloatArray, NotFittedError, as_chunk
from models.params import check_float, check_int

__all__ = ["Stuck", "StuckResult"]


@dataclass(frozen=True, slots=True)
class StuckResult:
    """What one ``update`` produced; arrays are shaped like the chunk ``(time, tags)``.

    ``run_length`` counts the consecutive usable samples (ending here) that did not change from
    their predecessor; at a skipped sample it repeats the carried count. ``signal`` is +1 on
    every usable sample while ``run_length >= n`` (a level, not an edge: the sensor is stuck for
    as long as it repeats), 0 otherwise and at skipped samples. ``skipped`` counts NaN samples
    per tag.
    """

    run_length: npt.NDArray[np.int64]
    signal: npt.NDArray[np.int8]
    skipped: npt.NDArray[np.int64]


class Stuck:
    """Signal when a tag has not changed for ``n`` consecutive usable samples.

    Sample ``x_t`` is "unchanged" when ``|x_t - x_prev| <= tolerance``, ``x_prev`` being the
    tag's previous usable sample; ``n`` unchanged samples in a row (``n + 1`` equal readings)
    make the tag stuck. Each step is compared with its predecessor, so with a tolerance a ramp
    in steps smaller than the tolerance also counts as stuck: set the tolerance to the
    resolution of the transmitter, not to the process noise.

    Parameters:
        n: unchanged samples in a row that make a tag stuck, >= 1.
        tolerance: largest change still counted as "unchanged", >= 0 (0 means exactly equal).

    Examples:
        >>> rng = np.random.default_rng(3)
        >>> det = Stuck(n=5).fit(rng.normal(size=(50, 2)))
        >>> x = rng.normal(size=(20, 2))
        >>> x[8:, 1] = x[8, 1]  # tag 1 freezes at sample 8
        >>> res = det.update(x)
        >>> bool(res.signal[:, 0].any()), int(np.flatnonzero(res.signal[:, 1])[0])
        (False, 13)
        >>> res.run_length[-1].tolist()
        [0, 11]

    References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed.,
    section 5.3.
    """

    def __init__(self, n: int = 10, tolerance: float = 0.0) -> None:
        self.n = check_int("Stuck", "n", n, 1)
        self.tolerance = check_float("Stuck", "tolerance", tolerance, 0.0)
        self._fitted = False

    def fit(self, baseline: npt.ArrayLike, tags: list[str] | None = None) -> Stuck:
        """Record the number of tags; a frozen value needs no in-control reference."""
        x = as_chunk(baseline, "baseline")
        self.n_tags_ = int(x.shape[1])
        self._fitted = True
        self.reset()
        return self

    def fit_known(self, center: npt.ArrayLike, sigma: npt.ArrayLike | None = None) -> Stuck:
        """Same as ``fit`` for detectors set up from known values: only the tag count is used."""
        self.n_tags_ = int(np.atleast_1d(np.asarray(center, dtype=np.float64)).size)
        self._fitted = True
        self.reset()
        return self

    def reset(self) -> None:
        """Forget the last values and runs; keep the fit."""
        if self._fitted:
            self._last: FloatArray = np.full(self.n_tags_, np.nan)
            self._run = np.zeros(self.n_tags_, dtype=np.int64)

    def update(self, chunk: npt.ArrayLike) -> StuckResult:
        """Count unchanged samples over a ``(time, tags)`` chunk, continuing earlier runs."""
        if not self._fitted:
            raise NotFittedError("This Stuck is not fitted yet; call fit(baseline) before update.")
        x = as_chunk(chunk, "chunk", self.n_tags_)
        t_len, n_tags = x.shape
        ok = np.isfinite(x)
        rows = np.arange(t_len)[:, None]
        latest = np.maximum.accumulate(np.where(ok, rows, -1), axis=0)
        before = np.concatenate([np.full((1, n_tags), -1), latest])[:-1]
        prev = np.where(
            before >= 0, np.take_along_axis(x, np.maximum(before, 0), axis=0), self._last
        )
        with np.errstate(over="ignore", invalid="ignore"):
            same = ok & (np.abs(x - prev) <= self.tolerance)
        # Run length = unchanged samples since the last changed one; the carried run enters as
        # a negative base so that a chunk without any change simply extends it.
        count = np.cumsum(same, axis=0)
        base = np.maximum.accumulate(np.where(ok & ~same, count, -self._run[None, :]), axis=0)
        run: npt.NDArray[np.int64] = count - base
        signal = (ok & (run >= self.n)).astype(np.int8)
        if t_len:
            newest = np.take_along_axis(x, np.maximum(latest[-1:], 0), axis=0)[0]
            self._last = np.where(latest[-1] >= 0, newest, self._last)
            self._run = run[-1].copy()
        return StuckResult(run, signal, np.sum(~ok, axis=0))
