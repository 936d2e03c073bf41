"""Readings and window statistics in columns: the shapes they travel in from source to outbox.

A gateway taking 200,000 values a second cannot afford one Python object per value: a batched
MQTT payload or an OPC UA notification already holds many samples, so a `Batch` keeps them as
numpy columns (time, value, receive time, quality) with one small table of the series they
belong to. Sources emit batches, the framer cuts them into chunks without touching single
samples, and `models.wire` writes a batch's telemetry as one item per series. `Reading` stays
the shape of one sample for code that handles few of them; `Batch.of` and `Batch.readings`
convert both ways without loss.

Absent optional values are NaN in the float columns (``received``, ``server_ts``); the
``quality``, ``server_ts`` and ``backfilled`` columns may be None, meaning all good, none and
none backfilled, which is what nearly every live batch is.

`StatsBatch` is the same idea for the per-window summary of a frame: one object per parameter
and window with a column per statistic, instead of one `Stats` object per series.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.messages import Quality, Reading, SeriesKey, Stats

__all__ = ["BAD", "GOOD", "QUALITIES", "UNCERTAIN", "Batch", "StatsBatch"]

#: Quality codes of the ``quality`` column, indexes into `QUALITIES`.
GOOD = 0
UNCERTAIN = 1
BAD = 2
QUALITIES: tuple[Quality, ...] = (Quality.GOOD, Quality.UNCERTAIN, Quality.BAD)
_CODE = {q: i for i, q in enumerate(QUALITIES)}

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


def _none(x: float) -> float | None:
    return None if math.isnan(x) else x


@dataclass(frozen=True, slots=True, eq=False)
class Batch:
    """Samples of one or more series in columns; ``series[i]`` indexes ``keys`` for sample i.

    Examples:
        >>> k = SeriesKey("l1", "formation", "cab01-ch01", "voltage")
        >>> b = Batch.of([Reading(k, 1.0, 3.7, received_ts=1.5), Reading(k, 2.0, 3.8)])
        >>> len(b), b.keys == (k,), b.value.tolist()
        (2, True, [3.7, 3.8])
        >>> [r.received_ts for r in b.readings()]
        [1.5, None]
    """

    keys: tuple[SeriesKey, ...]
    series: IntArray
    ts: FloatArray
    value: FloatArray
    received: FloatArray
    quality: npt.NDArray[np.uint8] | None = None
    server_ts: FloatArray | None = None
    backfilled: npt.NDArray[np.bool_] | None = None

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @classmethod
    def of(cls, readings: Sequence[Reading]) -> Batch:
        """The readings as one batch, in their order."""
        index: dict[SeriesKey, int] = {}
        series = np.fromiter(
            (index.setdefault(r.key, len(index)) for r in readings), np.intp, len(readings)
        )
        n = len(readings)
        nan = math.nan
        quality = np.fromiter((_CODE[r.quality] for r in readings), np.uint8, n)
        server = np.fromiter(
            (nan if r.server_ts is None else r.server_ts for r in readings), np.float64, n
        )
        filled = np.fromiter((r.backfilled for r in readings), np.bool_, n)
        return cls(
            tuple(index),
            series,
            np.fromiter((r.ts for r in readings), np.float64, n),
            np.fromiter((r.value for r in readings), np.float64, n),
            np.fromiter(
                (nan if r.received_ts is None else r.received_ts for r in readings), np.float64, n
            ),
            quality if quality.any() else None,
            None if np.isnan(server).all() else server,
            filled if filled.any() else None,
        )

    @classmethod
    def empty(cls) -> Batch:
        """A batch without samples."""
        f = np.empty(0, dtype=np.float64)
        return cls((), np.empty(0, dtype=np.intp), f, f, f)

    def quality_codes(self) -> npt.NDArray[np.uint8]:
        """The quality column, zeros (good) when the batch holds none."""
        if self.quality is None:
            return np.zeros(len(self), dtype=np.uint8)
        return self.quality

    def usable(self) -> npt.NDArray[np.bool_]:
        """Per sample: good quality and a finite value, the samples statistics may use."""
        ok = np.isfinite(self.value)
        if self.quality is not None:
            ok &= self.quality == GOOD
        return ok

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> Batch:
        """The samples ``index`` selects (positions or a mask), with the same key table."""

        def opt(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return Batch(
            self.keys,
            self.series[index],
            self.ts[index],
            self.value[index],
            self.received[index],
            opt(self.quality),
            opt(self.server_ts),
            opt(self.backfilled),
        )

    def readings(self) -> Iterator[Reading]:
        """The samples one by one, as `Reading`s."""
        keys = self.keys
        q = self.quality.tolist() if self.quality is not None else None
        srv = self.server_ts.tolist() if self.server_ts is not None else None
        filled = self.backfilled.tolist() if self.backfilled is not None else None
        rows = zip(
            self.series.tolist(),
            self.ts.tolist(),
            self.value.tolist(),
            self.received.tolist(),
            strict=True,
        )
        for i, (s, t, v, rt) in enumerate(rows):
            yield Reading(
                keys[s],
                t,
                v,
                QUALITIES[q[i]] if q is not None else Quality.GOOD,
                _none(rt),
                _none(srv[i]) if srv is not None else None,
                bool(filled[i]) if filled is not None else False,
            )

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        """One batch of all samples in order, with one key table."""
        if len(batches) == 1:
            return batches[0]
        if not batches:
            return Batch.empty()
        index: dict[SeriesKey, int] = {}
        parts: list[IntArray] = []
        for b in batches:
            remap = np.fromiter(
                (index.setdefault(k, len(index)) for k in b.keys), np.intp, len(b.keys)
            )
            parts.append(remap[b.series])

        def cat(name: str, fill: float | int | bool) -> np.ndarray | None:
            cols = [getattr(b, name) for b in batches]
            if all(c is None for c in cols):
                return None
            return np.concatenate(
                [
                    c if c is not None else np.full(len(b), fill, dtype=_DTYPE[name])
                    for b, c in zip(batches, cols, strict=True)
                ]
            )

        return Batch(
            tuple(index),
            np.concatenate(parts),
            np.concatenate([b.ts for b in batches]),
            np.concatenate([b.value for b in batches]),
            np.concatenate([b.received for b in batches]),
            cat("quality", GOOD),
            cat("server_ts", math.nan),
            cat("backfilled", False),
        )


@dataclass(frozen=True, slots=True, eq=False)
class StatsBatch:
    """The window summary of one parameter: element j of every column belongs to
    ``equipment[j]``. NaN in ``statistic``/``lcl``/``ucl`` means none (Phase I), and in
    ``mean``/``minimum``/``maximum`` a series without usable samples.

    Examples:
        >>> sb = StatsBatch("l1", "formation", "voltage", ("a",), *([np.array([1.0])] * 2),
        ...                 np.array([3]), *([np.array([3.7])] * 3), np.array([0]),
        ...                 *([np.array([np.nan])] * 3))
        >>> [s] = sb.items()
        >>> (s.key.equipment, s.count, s.mean, s.statistic)
        ('a', 3, 3.7, None)
    """

    line: str
    station: str
    param: str
    equipment: tuple[str, ...]
    ts_start: FloatArray
    ts_end: FloatArray
    count: npt.NDArray[np.int64]
    mean: FloatArray
    minimum: FloatArray
    maximum: FloatArray
    bad: npt.NDArray[np.int64]
    statistic: FloatArray
    lcl: FloatArray
    ucl: FloatArray

    def __len__(self) -> int:
        return len(self.equipment)

    def items(self) -> list[Stats]:
        """One `Stats` per series."""
        cols = [
            a.tolist()
            for a in (
                self.ts_start,
                self.ts_end,
                self.count,
                self.mean,
                self.minimum,
                self.maximum,
                self.bad,
                self.statistic,
                self.lcl,
                self.ucl,
            )
        ]
        line, station, param = self.line, self.station, self.param
        return [
            Stats(
                SeriesKey(line, station, eq, param),
                t0,
                t1,
                n,
                m,
                lo,
                hi,
                b,
                _none(st),
                _none(lc),
                _none(uc),
            )
            for eq, t0, t1, n, m, lo, hi, b, st, lc, uc in zip(self.equipment, *cols, strict=True)
        ]


_DTYPE = {"quality": np.uint8, "server_ts": np.float64, "backfilled": np.bool_}
