"""The monitor: EWMA charts per parameter, fed one frame per window, with Phase I on the fly.

Every parameter with a ``detector`` in the plant file gets one chart per equipment series.
Phase I happens on the gateway: the first ``baseline`` usable samples of each series are kept,
and when a series has them it joins a cohort. Series that complete their baseline in the same
window form one cohort, fitted together as one vectorized `models.ewma.Ewma` over their columns;
later windows update each cohort with its column subset of the frame. With a known ``center``
and ``sigma`` in the config there is no baseline: a new series joins a cohort at once via
``fit_known``. Because every EWMA column is independent, the results of a series do not depend
on which cohort it landed in or on how readings were cut into windows.

A detection is emitted on the rising edge of a series' signal (out of control now, in control
at the series' previous sample; the flag survives across windows), so a sustained shift gives
one detection, not one per sample. Every series also gets one `Stats` per window. Readings of a
parameter the station does not declare are refused by `admit`, counted, and logged once per key.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from edge.framer import Frame, GroupKey
from models.detector import BaselineError
from models.ewma import Ewma
from models.messages import Detection, Reading, SeriesKey, Stats
from models.plant import DetectorConfig, PlantConfig

__all__ = ["Monitor", "Outcome"]

log = logging.getLogger("cellwatch.edge.monitor")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one frame produced: one `Stats` per series and the new detections."""

    stats: tuple[Stats, ...] = ()
    detections: tuple[Detection, ...] = ()


@dataclass(slots=True)
class _Cohort:
    """Series fitted together: one Ewma whose columns are ``equipment``."""

    ewma: Ewma
    equipment: list[str]


@dataclass(slots=True)
class _Chart:
    """Detector state of one ``(line, station, param)``."""

    cfg: DetectorConfig
    baselines: dict[str, list[float]] = field(default_factory=dict)
    member: dict[str, tuple[_Cohort, int]] = field(default_factory=dict)
    cohorts: list[_Cohort] = field(default_factory=list)
    signal: dict[str, int] = field(default_factory=dict)
    last: dict[str, tuple[float, float, float]] = field(default_factory=dict)


def _message(value: float, limit: float, direction: int, center: float, sigma: float) -> str:
    where = "above UCL" if direction > 0 else "below LCL"
    return f"EWMA {value:.2f} {where} {limit:.2f} (center {center:.2f}, sigma {sigma:.3f})"


class Monitor:
    """Runs the configured detectors over frames; see the module docstring.

    Counters: ``rejected`` readings refused by `admit`, ``detections`` emitted, ``fit_errors``
    baselines that could not be fitted (flat signal), after which that series starts over.
    """

    def __init__(self, plant: PlantConfig) -> None:
        self._declared: dict[tuple[str, str], set[str]] = {}
        self._charts: dict[GroupKey, _Chart] = {}
        for line in plant.lines:
            for st in line.stations:
                self._declared[(line.id, st.id)] = {p.id for p in st.params}
                for p in st.params:
                    if p.detector is not None:
                        self._charts[(line.id, st.id, p.id)] = _Chart(p.detector)
        self._refused: set[SeriesKey] = set()
        self.rejected = 0
        self.detections = 0
        self.fit_errors = 0

    def admit(self, reading: Reading) -> bool:
        """True when the reading's station declares its parameter; counts and logs refusals."""
        k = reading.key
        params = self._declared.get((k.line, k.station))
        if params is not None and k.param in params:
            return True
        self.rejected += 1
        if k not in self._refused:
            self._refused.add(k)
            where = "station" if params is None else "parameter"
            log.warning("reading of %s refused: the plant file does not declare this %s", k, where)
        return False

    def cohorts(self, line: str, station: str, param: str) -> list[tuple[str, ...]]:
        """The equipment of each cohort of a chart, in the order they were fitted."""
        chart = self._charts.get((line, station, param))
        return [] if chart is None else [tuple(c.equipment) for c in chart.cohorts]

    def process(self, frame: Frame) -> Outcome:
        """Stats for every series of the frame and detections of the charted ones."""
        chart = self._charts.get(frame.group)
        detections: list[Detection] = []
        if chart is not None:
            detections = self._run(chart, frame)
            self.detections += len(detections)
        return Outcome(tuple(self._stats(frame, chart)), tuple(detections))

    # -- detection --------------------------------------------------------------------------

    def _run(self, chart: _Chart, frame: Frame) -> list[Detection]:
        # Per equipment: the samples (and times) of this window that go to Phase II.
        feed: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        joining: list[tuple[str, np.ndarray, np.ndarray]] = []
        known = chart.cfg.center is not None
        for j, eq in enumerate(frame.equipment):
            n = int(frame.count[j])
            x, t = frame.values[:n, j], frame.times[:n, j]
            if eq in chart.member:
                feed[eq] = (x, t)
            elif known:
                joining.append((eq, x, t))
            else:
                buf = chart.baselines.setdefault(eq, [])
                need = chart.cfg.baseline - len(buf)
                buf.extend(x[:need].tolist())
                if len(buf) == chart.cfg.baseline:
                    joining.append((eq, x[need:], t[need:]))
        if joining:
            for eq, x, t in self._join(chart, frame, joining):
                feed[eq] = (x, t)
        out: list[Detection] = []
        for cohort in chart.cohorts:
            cols = [(k, eq) for k, eq in enumerate(cohort.equipment) if eq in feed]
            if cols:
                out.extend(self._update(chart, frame, cohort, cols, feed))
        return out

    def _join(
        self, chart: _Chart, frame: Frame, joining: list[tuple[str, np.ndarray, np.ndarray]]
    ) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
        """Fit the series that became ready into one new cohort; yields those that joined."""
        cfg = chart.cfg
        names = [eq for eq, _, _ in joining]

        def make() -> Ewma:
            return Ewma(lam=cfg.lam, L=cfg.L, limits=cfg.limits, min_baseline=cfg.baseline)

        if cfg.center is not None and cfg.sigma is not None:
            k = len(names)
            cohort = _Cohort(make().fit_known([cfg.center] * k, [cfg.sigma] * k), names)
            ok = joining
        else:
            base = np.array([chart.baselines[eq] for eq in names]).T
            try:
                cohort = _Cohort(make().fit(base, names), names)
                ok = joining
            except BaselineError:
                # Fit one by one so that one flat series does not hold back the others.
                ok = []
                for i, (eq, x, t) in enumerate(joining):
                    try:
                        make().fit(base[:, i : i + 1], [eq])
                    except BaselineError as e:
                        self.fit_errors += 1
                        del chart.baselines[eq]
                        log.error("%s/%s/%s/%s: baseline rejected, collecting a new one: %s",
                                  frame.line, frame.station, eq, frame.param, e)
                    else:
                        ok.append((eq, x, t))
                if not ok:
                    return []
                names = [eq for eq, _, _ in ok]
                base = np.array([chart.baselines[eq] for eq in names]).T
                cohort = _Cohort(make().fit(base, names), names)
        chart.cohorts.append(cohort)
        for k, eq in enumerate(names):
            chart.member[eq] = (cohort, k)
            chart.baselines.pop(eq, None)
            chart.signal[eq] = 0
        log.info("%s/%s/%s: monitoring %s (center %s, sigma %s)", frame.line, frame.station,
                 frame.param, ", ".join(names),
                 np.array2string(cohort.ewma.center_, precision=3),
                 np.array2string(cohort.ewma.sigma_, precision=4))
        return ok

    def _update(
        self,
        chart: _Chart,
        frame: Frame,
        cohort: _Cohort,
        cols: list[tuple[int, str]],
        feed: dict[str, tuple[np.ndarray, np.ndarray]],
    ) -> list[Detection]:
        width = len(cohort.equipment)
        t_len = max(len(feed[eq][0]) for _, eq in cols)
        chunk = np.full((t_len, width), np.nan)
        for k, eq in cols:
            x = feed[eq][0]
            chunk[: len(x), k] = x
        res = cohort.ewma.update(chunk)
        center, sigma = cohort.ewma.center_, cohort.ewma.sigma_
        out: list[Detection] = []
        for k, eq in cols:
            x, t = feed[eq]
            n = len(x)
            if n == 0:
                continue
            sig = res.signal[:n, k]
            prev = np.concatenate(([chart.signal[eq]], sig[:-1]))
            for i in np.flatnonzero((sig != 0) & (prev == 0)):
                d = int(sig[i])
                value = float(res.statistic[i, k])
                limit = float(res.ucl[i, k] if d > 0 else res.lcl[i, k])
                c, s = float(center[k]), float(sigma[k])
                out.append(Detection(
                    SeriesKey(frame.line, frame.station, eq, frame.param), float(t[i]), "ewma",
                    value, limit, d, c, s, _message(value, limit, d, c, s),
                ))
            chart.signal[eq] = int(sig[-1])
            chart.last[eq] = (
                float(res.statistic[n - 1, k]), float(res.lcl[n - 1, k]), float(res.ucl[n - 1, k])
            )
        return out

    # -- statistics -------------------------------------------------------------------------

    @staticmethod
    def _stats(frame: Frame, chart: _Chart | None) -> list[Stats]:
        out: list[Stats] = []
        for j, eq in enumerate(frame.equipment):
            n = int(frame.count[j])
            x = frame.values[:n, j]
            mean, lo, hi = (float(x.mean()), float(x.min()), float(x.max())) if n else (
                float("nan"), float("nan"), float("nan"))
            stat = lcl = ucl = None
            if chart is not None and eq in chart.member and eq in chart.last:
                stat, lcl, ucl = chart.last[eq]
            out.append(Stats(
                SeriesKey(frame.line, frame.station, eq, frame.param),
                float(frame.ts_start[j]), float(frame.ts_end[j]), n, mean, lo, hi,
                int(frame.bad[j]), stat, lcl, ucl,
            ))
        return out
