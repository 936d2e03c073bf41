"""Station-level multivariate detection on the gateway: rows of several series, scored with numpy.

Drift often shows first in how signals move together (dryer zones, web speed and NMP exhaust)
before any one of them leaves its limits. A station with a ``multivariate`` block in the plant
file gets one `MvDetector`: it loads the artifact ``cellwatch fit`` wrote (numpy only, no
scikit-learn on the gateway), builds rows from the window's readings, scores them with
`models.mvmonitor.MvMonitor` and turns alarms into detections naming the variables that
contributed most.

Rows: series of one station are sampled separately and their readings carry their own times,
so a row is every variable's latest reading whose time falls in one ``align_s`` slot. The
newest slot of a window is held back to the next one, because its other readings may still be
on their way. A variable without a reading in a slot, or with a bad or uncertain one, leaves
the row incomplete: the row is skipped (no state moves) and counted in ``skipped`` and per
variable in ``missing``. A detection is emitted on the rising edge of each statistic (T2, SPE,
isolation score), like the univariate charts do, under the series key
``(line, station, "multivariate", "t2"|"spe"|"iso")``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edge.framer import Frame
from models.batch import GOOD
from models.messages import Detection, SeriesKey
from models.mvartifact import ArtifactError, load_model
from models.mvmonitor import MvAlarm, MvMonitor
from models.plant import MultivariateConfig, PlantConfig

__all__ = ["MvDetector", "MvSetupError", "build_detectors"]

log = logging.getLogger("cellwatch.edge.multivariate")

#: Statistic name in an alarm -> (param of the detection key, rule, MvMonitor signal bit).
_STATISTICS = {
    "T2": ("t2", "mv_t2", MvMonitor.T2),
    "SPE": ("spe", "mv_spe", MvMonitor.SPE),
    "ISO": ("iso", "mv_iso", MvMonitor.ISO),
}


class MvSetupError(ValueError):
    """A station's multivariate block cannot be used; the message names its key path."""


class MvDetector:
    """The multivariate detector of one station; see the module docstring."""

    def __init__(self, line: str, station: str, cfg: MultivariateConfig, where: str) -> None:
        try:
            model = load_model(cfg.model)
        except (ArtifactError, OSError) as e:
            raise MvSetupError(f"{where}.model: cannot load {cfg.model!r}: {e}") from None
        series: list[tuple[str, str]] = []
        for name in model.variables:
            mapped = cfg.variables.get(name, name)
            equipment, _, param = mapped.partition("/")
            if not equipment or not param:
                raise MvSetupError(
                    f"{where}.variables: the model's variable {name!r} needs an entry "
                    "'equipment/param' (its name is not in that form)"
                )
            series.append((equipment, param))
        unknown = sorted(set(cfg.variables) - set(model.variables))
        if unknown:
            raise MvSetupError(
                f"{where}.variables: {', '.join(unknown)} are not variables of the model "
                f"(it has {', '.join(model.variables)})"
            )
        self.line, self.station, self.cfg = line, station, cfg
        self.model = model
        self.monitor = MvMonitor(model)
        self.series = tuple(series)
        self._index = {s: j for j, s in enumerate(series)}
        self._pending: dict[int, dict[int, float]] = {}
        self._active: dict[str, bool] = {}
        self.rows = 0
        self.skipped = 0
        self.missing = np.zeros(len(series), dtype=np.int64)
        self.alarms = 0

    def wants(self, frame: Frame) -> bool:
        """Whether the frame holds one of this detector's series."""
        return (frame.line, frame.station) == (self.line, self.station)

    def _add(self, frame: Frame) -> None:
        """Put the frame's samples of this detector's series into their time slots."""
        b = frame.samples
        cols = [self._index.get((k.equipment, k.param)) for k in b.keys]
        if all(j is None for j in cols):
            return
        col = np.array([-1 if j is None else j for j in cols], dtype=np.intp)[b.series]
        keep = (col >= 0) & np.isfinite(b.ts)
        value = b.value if b.quality is None else np.where(b.quality == GOOD, b.value, np.nan)
        slots = np.floor(b.ts[keep] / self.cfg.align_s).astype(np.int64)
        pending = self._pending
        for slot, j, v in zip(
            slots.tolist(), col[keep].tolist(), value[keep].tolist(), strict=True
        ):
            pending.setdefault(slot, {})[j] = v

    def process(self, frames: Iterable[Frame]) -> list[Detection]:
        """Add the window's readings to their slots, score every complete slot but the newest."""
        slot_s = self.cfg.align_s
        for frame in frames:
            if not self.wants(frame):
                continue
            self._add(frame)
        if len(self._pending) < 2:
            return []
        slots = sorted(self._pending)[:-1]
        rows = np.full((len(slots), len(self.series)), np.nan)
        for i, slot in enumerate(slots):
            for j, value in self._pending.pop(slot).items():
                rows[i, j] = value
        result = self.monitor.update(rows)
        self.rows += len(slots)
        self.skipped += result.skipped
        self.missing += np.isnan(rows).sum(axis=0)
        times = [(slot + 1) * slot_s for slot in slots]
        return self._detections(
            result.signal, self.monitor.alarms(result, self.cfg.top), result, times
        )

    def _detections(
        self, signal: np.ndarray, alarms: list[MvAlarm], result: object, times: list[float]
    ) -> list[Detection]:
        by_row = {a.row: a for a in alarms}
        out: list[Detection] = []
        for name, (param, rule, bit) in _STATISTICS.items():
            values = getattr(result, param)
            limit = {
                "t2": self.model.t2_limit,
                "spe": self.model.spe_limit,
                "iso": self.model.iso_limit,
            }[param]
            for i in range(len(signal)):
                if math.isnan(float(values[i])):
                    continue  # a skipped row leaves the edge state as it was
                on = bool(signal[i] & bit)
                if on and not self._active.get(name, False):
                    alarm = by_row.get(i)
                    top = (
                        ()
                        if alarm is None
                        else (
                            alarm.t2_top if name == "T2" else alarm.spe_top if name == "SPE" else ()
                        )
                    )
                    names = ", ".join(f"{c.variable} {100 * c.share:.0f}%" for c in top)
                    message = f"{name} {float(values[i]):.4g} > {limit:.4g}" + (
                        f"; top: {names}" if names else ""
                    )
                    out.append(
                        Detection(
                            key=SeriesKey(self.line, self.station, "multivariate", param),
                            ts=times[i],
                            rule=rule,
                            value=float(values[i]),
                            limit=float(limit),
                            direction=1,
                            center=0.0,
                            sigma=math.nan,
                            message=message,
                        )
                    )
                    self.alarms += 1
                self._active[name] = on
        return out


def build_detectors(plant: PlantConfig, base: Path | None = None) -> list[MvDetector]:
    """One detector per station with a ``multivariate`` block; errors name the key path."""
    out = []
    for i, line in enumerate(plant.lines):
        for j, station in enumerate(line.stations):
            mv = station.multivariate
            if mv is None:
                continue
            where = f"lines[{i}].stations[{j}].multivariate"
            declared = {p.id for p in station.params}
            if base is not None and not Path(mv.model).is_absolute():
                mv = mv.model_copy(update={"model": str(base / mv.model)})
            det = MvDetector(line.id, station.id, mv, where)
            absent = sorted({p for _, p in det.series} - declared)
            if absent:
                raise MvSetupError(
                    f"{where}.variables: params {', '.join(absent)} are not declared by station "
                    f"{station.id!r}"
                )
            out.append(det)
    log.info("%d station-level multivariate detector(s)", len(out))
    return out
