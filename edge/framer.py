"""Framing: readings grouped per parameter into one numpy chunk per window.

The detectors of `models` work on whole chunks shaped ``(time, tags)``; the framer builds them.
Per ``(line, station, param)`` and window it makes one `Frame` whose columns are the equipment
instances that sent readings in that window (sorted by name, so the layout is stable). Each
column holds that equipment's usable samples in arrival order, top-aligned, padded with NaN below;
the NaN padding is what the detectors skip. Samples of bad or uncertain quality, and samples
whose value is not a finite number, are left out of the chunk and counted per column, so a
sensor fault can neither move a chart nor vanish unseen. A good-quality sample that is not a
number is a device or mapping error rather than a reported fault, so it is also counted on its
own (``nonfinite``) and logged once per series. A reading without a finite time cannot be
placed in any window or sent on: it is refused, counted in ``rejected`` and logged once per
series. The frame also keeps every sample of the window in columns (`Frame.samples`), for
telemetry. Pure logic: no I/O, no clock.

The framer works on `Batch`es end to end: a window's batches are concatenated, sorted once by
series (stably, so arrival order holds within a series) and laid out with a few numpy calls per
parameter, whatever the number of samples. Series get a number the first time they are seen;
their sort order is recomputed only when a new series appears.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.batch import GOOD, Batch
from models.messages import Reading, SeriesKey

__all__ = ["Frame", "Framer", "GroupKey"]

log = logging.getLogger("cellwatch.edge.framer")

GroupKey = tuple[str, str, str]
"""``(line, station, param)``: the readings of one chart."""


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One window of one parameter: a ``(time, equipment)`` chunk and what went into it.

    ``values`` and ``times`` are shaped ``(T, E)`` with ``T`` the largest usable count of any
    column; ``count[j]`` usable samples sit at the top of column ``j``, NaN below. ``bad[j]``
    samples of column ``j`` were excluded. ``ts_start``/``ts_end`` span every reading of the
    column, excluded ones included. ``samples`` holds every sample of the window, excluded
    ones too, sorted by column (its ``series`` is the column index, its ``keys`` the columns'
    series) and in arrival order within a column.
    """

    line: str
    station: str
    param: str
    equipment: tuple[str, ...]
    values: npt.NDArray[np.float64]
    times: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]
    bad: npt.NDArray[np.int64]
    ts_start: npt.NDArray[np.float64]
    ts_end: npt.NDArray[np.float64]
    samples: Batch

    @property
    def group(self) -> GroupKey:
        return (self.line, self.station, self.param)

    @property
    def readings(self) -> tuple[Reading, ...]:
        """The samples one by one (slow; for code that handles few)."""
        return tuple(self.samples.readings())


#: Series the framer numbers before it starts over (a topic pattern that keeps inventing
#: equipment must not grow its tables without bound).
MAX_SERIES = 1_000_000


class Framer:
    """Collects readings with `add` or `add_batch` and returns the window's frames with `cut`.

    Examples:
        >>> from models.messages import Quality, SeriesKey
        >>> k = lambda eq: SeriesKey("l1", "coater", eq, "areal_weight")
        >>> f = Framer()
        >>> for r in [Reading(k("a"), 1.0, 20.0), Reading(k("b"), 1.0, 21.0),
        ...           Reading(k("a"), 2.0, 20.2), Reading(k("b"), 2.0, 0.0, Quality.BAD)]:
        ...     f.add(r)
        >>> [fr] = f.cut()
        >>> fr.equipment, fr.values.tolist(), fr.bad.tolist()
        (('a', 'b'), [[20.0, 21.0], [20.2, nan]], [0, 1])
    """

    def __init__(self) -> None:
        self.excluded = 0
        self.nonfinite = 0
        self.rejected = 0
        self._logged: set[tuple[str, SeriesKey]] = set()
        self._pending: list[Reading] = []
        self._parts: list[tuple[npt.NDArray[np.intp], Batch]] = []
        self._count = 0
        self._reset_series()

    def _reset_series(self) -> None:
        self._ids: dict[SeriesKey, int] = {}
        self._keys: list[SeriesKey] = []
        self._group_of: list[int] = []
        self._group_ids: dict[GroupKey, int] = {}
        self._groups: list[GroupKey] = []
        self._rank: npt.NDArray[np.intp] | None = None

    def add(self, reading: Reading) -> None:
        """Add one reading (packed with the others into a batch at the cut)."""
        self._pending.append(reading)
        self._count += 1

    def add_batch(self, batch: Batch) -> None:
        """Add a batch of readings; samples without a finite time are refused and counted."""
        ok = np.isfinite(batch.ts)
        if not ok.all():
            for i in np.flatnonzero(~ok).tolist():
                self.rejected += 1
                self._once(
                    "time",
                    batch.keys[int(batch.series[i])],
                    "reading with time %r refused (counted; logged once per series)",
                    float(batch.ts[i]),
                )
            batch = batch.take(ok)
        if not len(batch):
            return
        ids = self._ids
        remap = np.fromiter(
            (ids[k] if k in ids else self._new_series(k) for k in batch.keys),
            np.intp,
            len(batch.keys),
        )
        self._parts.append((remap[batch.series], batch))
        self._count += len(batch)

    def _new_series(self, key: SeriesKey) -> int:
        group = (key.line, key.station, key.param)
        g = self._group_ids.get(group)
        if g is None:
            g = self._group_ids[group] = len(self._groups)
            self._groups.append(group)
        i = self._ids[key] = len(self._keys)
        self._keys.append(key)
        self._group_of.append(g)
        self._rank = None
        return i

    def _ranks(self) -> npt.NDArray[np.intp]:
        """Each series' place in (line, station, param, equipment) order."""
        if self._rank is None:
            keys = self._keys
            order = sorted(
                range(len(keys)),
                key=lambda i: (keys[i].line, keys[i].station, keys[i].param, keys[i].equipment),
            )
            rank = np.empty(len(keys), dtype=np.intp)
            rank[np.array(order, dtype=np.intp)] = np.arange(len(keys))
            self._rank = rank
        return self._rank

    def __len__(self) -> int:
        """Readings waiting for the next cut."""
        return self._count

    def cut(self) -> list[Frame]:
        """Frames of everything added since the last cut, sorted by group; starts a new window."""
        if self._pending:
            pending, self._pending = self._pending, []
            self._count -= len(pending)
            self.add_batch(Batch.of(pending))
        parts, self._parts = self._parts, []
        self._count = 0
        if not parts:
            return []
        frames = self._frames(parts)
        self.excluded += sum(int(f.bad.sum()) for f in frames)
        if len(self._keys) > MAX_SERIES:
            self._reset_series()
        return frames

    def _frames(self, parts: list[tuple[npt.NDArray[np.intp], Batch]]) -> list[Frame]:
        batches = [b for _, b in parts]
        sid = np.concatenate([s for s, _ in parts])
        r = self._ranks()[sid]
        order = np.argsort(r, kind="stable")
        r, sid = r[order], sid[order]
        whole = Batch.concat(batches)
        ts, value, received = whole.ts[order], whole.value[order], whole.received[order]
        quality = None if whole.quality is None else whole.quality[order]
        server = None if whole.server_ts is None else whole.server_ts[order]
        filled = None if whole.backfilled is None else whole.backfilled[order]
        finite = np.isfinite(value)
        usable = finite if quality is None else finite & (quality == GOOD)
        self._count_nonfinite(sid, finite, quality, value)
        n = r.shape[0]
        starts = np.flatnonzero(r[1:] != r[:-1]) + 1
        starts = np.concatenate(([0], starts))
        ends = np.concatenate((starts[1:], [n]))
        run_sid = sid[starts]
        run_group = np.asarray(self._group_of, dtype=np.intp)[run_sid]
        g_starts = np.concatenate(([0], np.flatnonzero(run_group[1:] != run_group[:-1]) + 1))
        g_ends = np.concatenate((g_starts[1:], [run_sid.shape[0]]))
        frames: list[Frame] = []
        keys = self._keys
        for a, b in zip(g_starts.tolist(), g_ends.tolist(), strict=True):
            s0, s1 = int(starts[a]), int(ends[b - 1])
            run_len = ends[a:b] - starts[a:b]
            e = b - a
            col = np.repeat(np.arange(e), run_len)
            u = usable[s0:s1]
            cu = col[u]
            count = np.bincount(cu, minlength=e).astype(np.int64)
            t_len = int(count.max()) if e else 0
            first = np.cumsum(count) - count
            pos = np.arange(cu.shape[0]) - first[cu]
            values = np.full((t_len, e), np.nan)
            times = np.full((t_len, e), np.nan)
            values[pos, cu] = value[s0:s1][u]
            times[pos, cu] = ts[s0:s1][u]
            offsets = starts[a:b] - s0
            t = ts[s0:s1]
            series_keys = tuple(keys[i] for i in run_sid[a:b].tolist())
            line, station, param = self._groups[int(run_group[a])]
            frames.append(
                Frame(
                    line,
                    station,
                    param,
                    tuple(k.equipment for k in series_keys),
                    values,
                    times,
                    count,
                    run_len.astype(np.int64) - count,
                    np.minimum.reduceat(t, offsets),
                    np.maximum.reduceat(t, offsets),
                    Batch(
                        series_keys,
                        col,
                        t,
                        value[s0:s1],
                        received[s0:s1],
                        None if quality is None else quality[s0:s1],
                        None if server is None else server[s0:s1],
                        None if filled is None else filled[s0:s1],
                    ),
                )
            )
        return frames

    def _count_nonfinite(
        self,
        sid: npt.NDArray[np.intp],
        finite: npt.NDArray[np.bool_],
        quality: npt.NDArray[np.uint8] | None,
        value: npt.NDArray[np.float64],
    ) -> None:
        wrong = ~finite if quality is None else ~finite & (quality == GOOD)
        if not wrong.any():
            return
        idx = np.flatnonzero(wrong)
        self.nonfinite += int(idx.shape[0])
        # One log line per series: the first such sample of each.
        _, first = np.unique(sid[idx], return_index=True)
        for i in idx[first].tolist():
            self._once(
                "value",
                self._keys[int(sid[i])],
                "good-quality sample with value %r left out of the "
                "statistics (counted; logged once per series)",
                float(value[i]),
            )

    def _once(self, what: str, key: SeriesKey, msg: str, given: float) -> None:
        if (what, key) not in self._logged:
            self._logged.add((what, key))
            log.warning("%s: " + msg, key, given)
