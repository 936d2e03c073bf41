"""The monitor: one control chart per parameter, fed one frame per window, with Phase I on the fly.

Every parameter with a detector in the plant file (its own ``detector``, else its station's)
gets one chart per equipment series; `edge.charts` adapts each kind (EWMA, CUSUM, Shewhart
individuals with optional run rules, stuck signal). Phase I happens on the gateway: the first
``baseline`` usable samples of each series are kept, and when a series has them it joins a
cohort. Series that complete their baseline in the same window form one cohort, fitted together
as one vectorized detector over their columns; later windows update each cohort with its column
subset of the frame. With a known ``center`` and ``sigma`` in the config, or for the stuck
check, which needs no baseline, a new series joins a cohort at once. Because every column is
independent, the results of a series do not depend on which cohort it landed in or on how
readings were cut into windows.

A detection is emitted on the rising edge of each signal channel of a series (out of control
now, in control at the series' previous sample; the flag survives across windows), so a
sustained shift gives one detection per rule, not one per sample. Every series also gets one
`Stats` per window. Samples the framer excluded (bad or uncertain quality, non-finite values)
never reach a chart; they are counted per series in `excluded`. Readings of a parameter the
station does not declare are refused by `admit`, counted, and logged once per key.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from edge.charts import Chart, Step, build
from edge.framer import Frame, GroupKey
from models.batch import Batch, StatsBatch
from models.detector import BaselineError
from models.messages import Detection, Reading, SeriesKey, Stats
from models.plant import DetectorConfig, PlantConfig

__all__ = ["Monitor", "Outcome"]

log = logging.getLogger("cellwatch.edge.monitor")

#: Series whose admission is remembered before the memo starts over.
MAX_KEYS = 1_000_000


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one frame produced: its window summary (one row per series) and the new
    detections."""

    summary: StatsBatch | None = None
    detections: tuple[Detection, ...] = ()

    @property
    def stats(self) -> tuple[Stats, ...]:
        """The summary as one `Stats` per series."""
        return () if self.summary is None else tuple(self.summary.items())


@dataclass(slots=True)
class _Cohort:
    """Series fitted together: one chart whose columns are ``equipment``, and per signal
    channel each column's signal at its latest sample (for the rising edges)."""

    chart: Chart
    equipment: list[str]
    signal: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(slots=True)
class _Group:
    """Detector state of one ``(line, station, param)``."""

    cfg: DetectorConfig
    # Phase I samples per equipment, filled from the top: ``(samples, count)``. numpy rather
    # than a list of floats, which costs four times the memory (10,000 series x 100 samples).
    baselines: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)
    member: dict[str, tuple[_Cohort, int]] = field(default_factory=dict)
    cohorts: list[_Cohort] = field(default_factory=list)
    last: dict[str, tuple[float, float, float]] = field(default_factory=dict)


class Monitor:
    """Runs the configured detectors over frames; see the module docstring.

    Counters: ``rejected`` readings refused by `admit`, ``detections`` emitted (and per rule in
    ``by_rule``), ``fit_errors`` baselines that could not be fitted (flat signal), after which
    that series starts over, and ``excluded`` samples per series that the framer left out of
    the statistics (bad or uncertain quality, or a value that is not a finite number).
    """

    def __init__(self, plant: PlantConfig) -> None:
        self._declared: dict[tuple[str, str], set[str]] = {}
        self._groups: dict[GroupKey, _Group] = {}
        for line in plant.lines:
            for st in line.stations:
                self._declared[(line.id, st.id)] = {p.id for p in st.params}
                for p in st.params:
                    cfg = st.detector_of(p)
                    if cfg is not None:
                        self._groups[(line.id, st.id, p.id)] = _Group(cfg)
        self._refused: set[SeriesKey] = set()
        self._admitted: dict[SeriesKey, bool] = {}
        self.rejected = 0
        self.detections = 0
        self.by_rule: Counter[str] = Counter()
        self.fit_errors = 0
        self.excluded: Counter[SeriesKey] = Counter()

    def admit_batch(self, batch: Batch) -> Batch:
        """The batch without the samples of series whose parameter the station does not declare
        (counted and logged as `admit` does)."""
        known = self._admitted
        ok = [known[k] if k in known else self._admit_key(k) for k in batch.keys]
        if all(ok):
            return batch
        keep = np.asarray(ok, dtype=np.bool_)[batch.series]
        self.rejected += int(keep.shape[0] - np.count_nonzero(keep))
        return batch.take(keep)

    def _admit_key(self, k: SeriesKey) -> bool:
        """Whether the station declares the key's parameter, remembered; a refusal is logged
        once per key (the caller counts the readings)."""
        params = self._declared.get((k.line, k.station))
        ok = params is not None and k.param in params
        if len(self._admitted) >= MAX_KEYS:
            self._admitted.clear()
        self._admitted[k] = ok
        if not ok and k not in self._refused:
            self._refused.add(k)
            where = "station" if params is None else "parameter"
            log.warning("reading of %s refused: the plant file does not declare this %s", k, where)
        return ok

    def admit(self, reading: Reading) -> bool:
        """True when the reading's station declares its parameter; counts and logs refusals."""
        k = reading.key
        ok = self._admitted[k] if k in self._admitted else self._admit_key(k)
        if not ok:
            self.rejected += 1
        return ok

    def detector(self, line: str, station: str, param: str) -> DetectorConfig | None:
        """The detector configured for a parameter, None when it is telemetry only."""
        group = self._groups.get((line, station, param))
        return None if group is None else group.cfg

    def cohorts(self, line: str, station: str, param: str) -> list[tuple[str, ...]]:
        """The equipment of each cohort of a chart, in the order they were fitted."""
        group = self._groups.get((line, station, param))
        return [] if group is None else [tuple(c.equipment) for c in group.cohorts]

    def process(self, frame: Frame) -> Outcome:
        """Stats for every series of the frame and detections of the charted ones."""
        group = self._groups.get(frame.group)
        for j in np.flatnonzero(frame.bad):
            key = SeriesKey(frame.line, frame.station, frame.equipment[j], frame.param)
            self.excluded[key] += int(frame.bad[j])
        detections: list[Detection] = []
        if group is not None:
            detections = self._run(group, frame)
            self.detections += len(detections)
            self.by_rule.update(d.rule for d in detections)
        return Outcome(self._stats(frame, group), tuple(detections))

    # -- detection --------------------------------------------------------------------------

    def _run(self, group: _Group, frame: Frame) -> list[Detection]:
        # Per equipment: the samples (and times) of this window that go to Phase II.
        feed: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        joining: list[tuple[str, np.ndarray, np.ndarray]] = []
        phase1 = group.cfg.needs_baseline
        size = group.cfg.baseline
        for j, eq in enumerate(frame.equipment):
            n = int(frame.count[j])
            x, t = frame.values[:n, j], frame.times[:n, j]
            if eq in group.member:
                feed[eq] = (x, t)
            elif not phase1:
                joining.append((eq, x, t))
            else:
                buf, have = group.baselines.get(eq) or (np.empty(size), 0)
                take = x[: size - have]
                buf[have : have + take.shape[0]] = take
                have += take.shape[0]
                group.baselines[eq] = (buf, have)
                need = take.shape[0]
                if have == size:
                    joining.append((eq, x[need:], t[need:]))
        if joining:
            for eq, x, t in self._join(group, frame, joining):
                feed[eq] = (x, t)
        out: list[Detection] = []
        for cohort in group.cohorts:
            cols = [(k, eq) for k, eq in enumerate(cohort.equipment) if eq in feed]
            if cols:
                out.extend(self._update(group, frame, cohort, cols, feed))
        return out

    def _join(
        self, group: _Group, frame: Frame, joining: list[tuple[str, np.ndarray, np.ndarray]]
    ) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
        """Fit the series that became ready into one new cohort; yields those that joined."""
        cfg = group.cfg
        names = [eq for eq, _, _ in joining]
        ok = joining
        if not cfg.needs_baseline:
            chart = build(cfg, names, None)
        else:
            base = np.array([group.baselines[eq][0] for eq in names]).T
            try:
                chart = build(cfg, names, base)
            except BaselineError:
                # Fit one by one so that one flat series does not hold back the others.
                ok = []
                for i, (eq, x, t) in enumerate(joining):
                    try:
                        build(cfg, [eq], base[:, i : i + 1])
                    except BaselineError as e:
                        self.fit_errors += 1
                        del group.baselines[eq]
                        log.error(
                            "%s/%s/%s/%s: baseline rejected, collecting a new one: %s",
                            frame.line,
                            frame.station,
                            eq,
                            frame.param,
                            e,
                        )
                    else:
                        ok.append((eq, x, t))
                if not ok:
                    return []
                names = [eq for eq, _, _ in ok]
                chart = build(cfg, names, np.array([group.baselines[eq][0] for eq in names]).T)
        cohort = _Cohort(chart, names)
        group.cohorts.append(cohort)
        for k, eq in enumerate(names):
            group.member[eq] = (cohort, k)
            group.baselines.pop(eq, None)
        log.info(
            "%s/%s/%s: %s monitoring %s (%s)",
            frame.line,
            frame.station,
            frame.param,
            cfg.kind,
            ", ".join(names),
            chart.summary(),
        )
        return ok

    def _update(
        self,
        group: _Group,
        frame: Frame,
        cohort: _Cohort,
        cols: list[tuple[int, str]],
        feed: dict[str, tuple[np.ndarray, np.ndarray]],
    ) -> list[Detection]:
        width = len(cohort.equipment)
        t_len = max(len(feed[eq][0]) for _, eq in cols)
        chunk = np.full((t_len, width), np.nan)
        times = np.full((t_len, width), np.nan)
        for k, eq in cols:
            x, t = feed[eq]
            chunk[: len(x), k] = x
            times[: len(t), k] = t
        step = cohort.chart.update(chunk, times)
        ks = np.array([k for k, _ in cols])
        n = np.array([len(feed[eq][0]) for _, eq in cols])
        live = n > 0
        ks, n = ks[live], n[live]
        out: list[Detection] = []
        if not ks.size:
            return out
        # Rows below a column's count are padding, where every chart signals 0; so the
        # rising edges of all columns come from one comparison with the row above.
        for rule, signal in step.channels:
            sig = signal[:, ks]
            last = cohort.signal.setdefault(rule, np.zeros(width, dtype=np.int8))
            prev = np.vstack([last[ks][None, :], sig[:-1]])
            for i, c in zip(*np.nonzero((sig != 0) & (prev == 0)), strict=True):
                k = int(ks[c])
                eq = cohort.equipment[k]
                key = SeriesKey(frame.line, frame.station, eq, frame.param)
                ts = float(feed[eq][1][i])
                out.append(self._detection(cohort.chart, step, rule, key, ts, int(i), k))
            last[ks] = sig[n - 1, np.arange(ks.size)]
        rows = n - 1
        stat, lcl, ucl = (a[rows, ks].tolist() for a in (step.statistic, step.lcl, step.ucl))
        for c, k in enumerate(ks.tolist()):
            group.last[cohort.equipment[k]] = (stat[c], lcl[c], ucl[c])
        out.sort(key=lambda d: (d.ts, d.key.equipment))
        return out

    @staticmethod
    def _detection(
        chart: Chart, step: Step, rule: str, key: SeriesKey, ts: float, i: int, k: int
    ) -> Detection:
        f = chart.finding(step, rule, i, k)
        return Detection(key, ts, rule, f.value, f.limit, f.direction, f.center, f.sigma, f.message)

    # -- statistics -------------------------------------------------------------------------

    @staticmethod
    def _stats(frame: Frame, group: _Group | None) -> StatsBatch:
        """The window's count, mean, min and max per column, computed for all columns at once,
        with the detector's last statistic and limits of the charted ones."""
        values, count = frame.values, frame.count
        e = len(frame.equipment)
        nan = np.full(e, np.nan)
        if values.shape[0] == 0:
            mean, lo, hi = nan, nan, nan.copy()
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                total = np.where(np.isnan(values), 0.0, values).sum(axis=0)
                mean = np.where(count > 0, total / count, np.nan)
            lo = np.fmin.reduce(values, axis=0)
            hi = np.fmax.reduce(values, axis=0)
        stat, lcl, ucl = nan.copy(), nan.copy(), nan.copy()
        if group is not None and group.last:
            last, member = group.last, group.member
            for j, eq in enumerate(frame.equipment):
                if eq in member:
                    got = last.get(eq)
                    if got is not None:
                        stat[j], lcl[j], ucl[j] = (np.nan if x is None else x for x in got)
        return StatsBatch(
            frame.line,
            frame.station,
            frame.param,
            frame.equipment,
            frame.ts_start,
            frame.ts_end,
            count,
            mean,
            lo,
            hi,
            frame.bad,
            stat,
            lcl,
            ucl,
        )
