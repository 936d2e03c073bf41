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
placed in any window or sent on: `add` refuses it, counted in ``rejected`` and logged once per
series. The frame also keeps every reading of the window, for telemetry. Pure logic: no I/O,
no clock.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.messages import Quality, Reading, SeriesKey

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
    column, excluded ones included. ``readings`` are all readings of the window in arrival order.
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
    readings: tuple[Reading, ...]

    @property
    def group(self) -> GroupKey:
        return (self.line, self.station, self.param)


class Framer:
    """Collects readings with `add` and returns the window's frames with `cut`.

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
        self._groups: dict[GroupKey, list[Reading]] = defaultdict(list)
        self.excluded = 0
        self.nonfinite = 0
        self.rejected = 0
        self._logged: set[tuple[str, SeriesKey]] = set()

    def add(self, reading: Reading) -> None:
        k = reading.key
        if not math.isfinite(reading.ts):
            self.rejected += 1
            self._once(
                "time",
                k,
                "reading with time %r refused (counted; logged once per series)",
                reading.ts,
            )
            return
        self._groups[(k.line, k.station, k.param)].append(reading)

    def __len__(self) -> int:
        """Readings waiting for the next cut."""
        return sum(len(v) for v in self._groups.values())

    def cut(self) -> list[Frame]:
        """Frames of everything added since the last cut, sorted by group; starts a new window."""
        groups, self._groups = self._groups, defaultdict(list)
        frames = [self._frame(g, rs) for g, rs in sorted(groups.items())]
        self.excluded += sum(int(f.bad.sum()) for f in frames)
        return frames

    def _nonfinite(self, readings: list[Reading]) -> None:
        for r in readings:
            if r.quality is Quality.GOOD and not r.usable:
                self.nonfinite += 1
                self._once(
                    "value",
                    r.key,
                    "good-quality sample with value %r left out of the "
                    "statistics (counted; logged once per series)",
                    r.value,
                )

    def _once(self, what: str, key: SeriesKey, msg: str, given: float) -> None:
        if (what, key) not in self._logged:
            self._logged.add((what, key))
            log.warning("%s: " + msg, key, given)

    def _frame(self, group: GroupKey, readings: list[Reading]) -> Frame:
        cols: dict[str, list[Reading]] = defaultdict(list)
        for r in readings:
            cols[r.key.equipment].append(r)
        equipment = tuple(sorted(cols))
        usable = [[r for r in cols[eq] if r.usable] for eq in equipment]
        for eq, u in zip(equipment, usable, strict=True):
            if len(u) < len(cols[eq]):
                self._nonfinite(cols[eq])
        e = len(equipment)
        t = max((len(u) for u in usable), default=0)
        values = np.full((t, e), np.nan)
        times = np.full((t, e), np.nan)
        for j, u in enumerate(usable):
            values[: len(u), j] = [r.value for r in u]
            times[: len(u), j] = [r.ts for r in u]
        count = np.array([len(u) for u in usable], dtype=np.int64)
        bad = np.array([len(cols[eq]) for eq in equipment], dtype=np.int64) - count
        ts_start = np.array([min(r.ts for r in cols[eq]) for eq in equipment], dtype=np.float64)
        ts_end = np.array([max(r.ts for r in cols[eq]) for eq in equipment], dtype=np.float64)
        line, station, param = group
        return Frame(
            line,
            station,
            param,
            equipment,
            values,
            times,
            count,
            bad,
            ts_start,
            ts_end,
            tuple(readings),
        )
