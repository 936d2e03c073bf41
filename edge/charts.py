"""Charts: each detector kind of `models` behind one interface the monitor can drive.

The monitor fits one chart per cohort of series and feeds it ``(time, columns)`` chunks. The
detectors differ in what they signal and what an engineer needs to read in an alert, so each
kind gets a small adapter here: `build` fits it (Phase I from a baseline, or from a known
centre and sigma), `Chart.update` runs it and returns its signal *channels* (one per rule that
can fire: ``ewma``, ``cusum``, ``shewhart``, ``stuck``, or a run rule such as ``we2``), and
`Chart.finding` turns one signalling sample into the detection's value, limit and message.
Each channel is edge-triggered by the monitor, so a rule that stays violated is one detection.

What each kind does over a gap (missing, bad-quality or non-finite samples, which the framer
leaves out; a line stop): EWMA and CUSUM skip it, carrying their statistic to the next usable
sample; the individuals chart judges each sample alone, so a gap changes nothing; run rules
count usable samples only, and with ``max_gap_s`` restart their windows when a series' usable
samples are further apart than that, so a run never spans a stop; the stuck check compares
each sample with the previous usable one, so a value unchanged across a gap extends the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from models.cusum import Cusum, CusumResult
from models.ewma import Ewma, EwmaResult
from models.plant import DetectorConfig
from models.runrules import RunRules, RunRulesResult
from models.shewhart import Individuals, IndividualsResult
from models.stuck import Stuck, StuckResult

__all__ = ["RULE_TEXT", "Chart", "Finding", "Step", "build"]

FloatArray = npt.NDArray[np.float64]
SignalArray = npt.NDArray[np.int8]

#: What each run rule found, for messages, and where its zone starts (in sigma from centre).
RULE_TEXT: dict[str, tuple[str, float]] = {
    "we1": ("1 point beyond 3 sigma", 3.0),
    "we2": ("2 of 3 points beyond 2 sigma on one side", 2.0),
    "we3": ("4 of 5 points beyond 1 sigma on one side", 1.0),
    "we4": ("8 points in a row on one side of the centre", 0.0),
    "nelson1": ("1 point beyond 3 sigma", 3.0),
    "nelson2": ("9 points in a row on one side of the centre", 0.0),
    "nelson3": ("6 points in a row steadily increasing or decreasing", 0.0),
    "nelson4": ("14 points in a row alternating up and down", 0.0),
    "nelson5": ("2 of 3 points beyond 2 sigma on one side", 2.0),
    "nelson6": ("4 of 5 points beyond 1 sigma on one side", 1.0),
    "nelson7": ("15 points in a row within 1 sigma", 1.0),
    "nelson8": ("8 points in a row beyond 1 sigma on either side", 1.0),
}


@dataclass(frozen=True, slots=True)
class Finding:
    """What a detection says about one signalling sample (see `models.messages.Detection`)."""

    value: float
    limit: float
    direction: int
    center: float
    sigma: float
    message: str


@dataclass(frozen=True, slots=True, eq=False)
class Step:
    """One update over a ``(time, columns)`` chunk.

    ``channels`` pairs each rule name with its signal (+1 / -1 by side, 0 quiet), shaped like
    the chunk. ``statistic``, ``lcl`` and ``ucl`` are what `Stats` reports for the series
    (NaN where a sample was skipped). ``raw`` holds the detector's own results for `finding`.
    """

    channels: tuple[tuple[str, SignalArray], ...]
    statistic: FloatArray
    lcl: FloatArray
    ucl: FloatArray
    raw: tuple[Any, ...]


class Chart(Protocol):
    """A fitted detector over the columns of one cohort."""

    def update(self, x: FloatArray, t: FloatArray) -> Step:
        """Chart ``x`` (NaN = no sample) taken at times ``t`` (epoch seconds), same shape."""
        ...

    def finding(self, step: Step, rule: str, i: int, k: int) -> Finding:
        """Describe the signal of channel ``rule`` at row ``i``, column ``k`` of ``step``."""
        ...

    def summary(self) -> str:
        """Centre and sigma per column, for the log line when a cohort starts."""
        ...


def build(cfg: DetectorConfig, names: list[str], baseline: FloatArray | None) -> Chart:
    """Fit a chart for ``names`` on ``baseline`` (``(samples, columns)``), or from the known
    centre and sigma of ``cfg`` when ``baseline`` is None. Raises `BaselineError`."""
    if cfg.kind == "cusum":
        return _CusumChart(cfg, names, baseline)
    if cfg.kind == "shewhart":
        return _ShewhartChart(cfg, names, baseline)
    if cfg.kind == "stuck":
        return _StuckChart(cfg, len(names))
    return _EwmaChart(cfg, names, baseline)


def _fit(det: Any, cfg: DetectorConfig, names: list[str], baseline: FloatArray | None) -> Any:
    if baseline is not None:
        return det.fit(baseline, names)
    assert cfg.center is not None and cfg.sigma is not None
    n = len(names)
    return det.fit_known([cfg.center] * n, [cfg.sigma] * n)


def _where(direction: int) -> str:
    return "above UCL" if direction > 0 else "below LCL"


def _summary(center: FloatArray, sigma: FloatArray) -> str:
    c = np.array2string(center, precision=3)
    return f"center {c}, sigma {np.array2string(sigma, precision=4)}"


class _EwmaChart:
    def __init__(self, cfg: DetectorConfig, names: list[str], base: FloatArray | None) -> None:
        det = Ewma(lam=cfg.lam, L=cfg.L, limits=cfg.limits, min_baseline=cfg.baseline)
        self.det: Ewma = _fit(det, cfg, names, base)

    def update(self, x: FloatArray, t: FloatArray) -> Step:
        res = self.det.update(x)
        return Step((("ewma", res.signal),), res.statistic, res.lcl, res.ucl, (res,))

    def finding(self, step: Step, rule: str, i: int, k: int) -> Finding:
        res: EwmaResult = step.raw[0]
        d = int(res.signal[i, k])
        value = float(res.statistic[i, k])
        limit = float(res.ucl[i, k] if d > 0 else res.lcl[i, k])
        c, s = float(self.det.center_[k]), float(self.det.sigma_[k])
        msg = f"EWMA {value:.2f} {_where(d)} {limit:.2f} (center {c:.2f}, sigma {s:.3f})"
        return Finding(value, limit, d, c, s, msg)

    def summary(self) -> str:
        return _summary(self.det.center_, self.det.sigma_)


class _CusumChart:
    """Statistic for `Stats`: C+ when it leads, else -C-, against limits -H and +H."""

    def __init__(self, cfg: DetectorConfig, names: list[str], base: FloatArray | None) -> None:
        det = Cusum(k=cfg.k, h=cfg.h, min_baseline=cfg.baseline, head_start=cfg.head_start)
        self.det: Cusum = _fit(det, cfg, names, base)

    def update(self, x: FloatArray, t: FloatArray) -> Step:
        res = self.det.update(x)
        stat = np.where(res.c_plus >= res.c_minus, res.c_plus, -res.c_minus)
        h = np.broadcast_to(self.det.interval_, stat.shape)
        return Step((("cusum", res.signal),), stat, -h, h, (res,))

    def finding(self, step: Step, rule: str, i: int, k: int) -> Finding:
        res: CusumResult = step.raw[0]
        d = int(res.signal[i, k])
        up = d > 0
        value = float(res.c_plus[i, k] if up else res.c_minus[i, k])
        limit = float(self.det.interval_[k])
        run = int(res.n_plus[i, k] if up else res.n_minus[i, k])
        c, s = float(self.det.center_[k]), float(self.det.sigma_[k])
        side = "C+" if up else "C-"
        msg = (
            f"CUSUM {side} {value:.3g} above H {limit:.3g}: mean moved to about "
            f"{float(res.shift[i, k]):.2f} over the last {run} samples "
            f"(center {c:.2f}, sigma {s:.3f})"
        )
        return Finding(value, limit, d, c, s, msg)

    def summary(self) -> str:
        return _summary(self.det.center_, self.det.sigma_)


class _ShewhartChart:
    """Individuals chart; with ``rules``, the run rules on the same centre and sigma."""

    def __init__(self, cfg: DetectorConfig, names: list[str], base: FloatArray | None) -> None:
        det = Individuals(L=cfg.L, min_baseline=cfg.baseline)
        self.det: Individuals = _fit(det, cfg, names, base)
        self.rules: RunRules | None = None
        self.max_gap_s = cfg.max_gap_s
        if cfg.rules:
            rr = RunRules(rules=cfg.rules, min_baseline=cfg.baseline, max_gap_s=cfg.max_gap_s)
            self.rules = rr.fit_known(self.det.center_, self.det.sigma_)
            self._bits = [(r, np.uint16(1 << RunRules.RULES.index(r))) for r in cfg.rules]

    def update(self, x: FloatArray, t: FloatArray) -> Step:
        res = self.det.update(x)
        channels: list[tuple[str, SignalArray]] = [("shewhart", res.signal)]
        raw: tuple[Any, ...] = (res,)
        if self.rules is not None:
            times = t if self.max_gap_s is not None else None
            rr = self.rules.update(x, times)
            side = np.where(rr.z < 0.0, -1, 1).astype(np.int8)
            for name, bit in self._bits:
                channels.append((name, np.where((rr.fired & bit) != 0, side, 0).astype(np.int8)))
            raw = (res, rr)
        return Step(tuple(channels), res.x, res.lcl, res.ucl, raw)

    def finding(self, step: Step, rule: str, i: int, k: int) -> Finding:
        res: IndividualsResult = step.raw[0]
        c, s = float(self.det.center_[k]), float(self.det.sigma_[k])
        value = float(res.x[i, k])
        if rule == "shewhart":
            d = int(res.signal[i, k])
            limit = float(res.ucl[i, k] if d > 0 else res.lcl[i, k])
            msg = f"Individual {value:.2f} {_where(d)} {limit:.2f} (center {c:.2f}, sigma {s:.3f})"
            return Finding(value, limit, d, c, s, msg)
        rr: RunRulesResult = step.raw[1]
        z = float(rr.z[i, k])
        d = -1 if z < 0.0 else 1
        text, zone = RULE_TEXT[rule]
        msg = (
            f"{rule.upper()}: {text}; value {value:.2f} (z {z:+.2f}; center {c:.2f}, sigma {s:.3f})"
        )
        return Finding(value, c + d * zone * s, d, c, s, msg)

    def summary(self) -> str:
        return _summary(self.det.center_, self.det.sigma_)


class _StuckChart:
    """Statistic for `Stats`: the run of unchanged samples, against limits 0 and ``n``.

    A detection's ``center`` is the frozen value and its ``sigma`` the tolerance."""

    def __init__(self, cfg: DetectorConfig, columns: int) -> None:
        self.det = Stuck(n=cfg.n, tolerance=cfg.tolerance).fit_known(np.zeros(columns))

    def update(self, x: FloatArray, t: FloatArray) -> Step:
        res = self.det.update(x)
        run = res.run_length.astype(np.float64)
        run[~np.isfinite(x)] = np.nan
        lcl = np.zeros(run.shape)
        ucl = np.full(run.shape, float(self.det.n))
        return Step((("stuck", res.signal),), run, lcl, ucl, (res, x))

    def finding(self, step: Step, rule: str, i: int, k: int) -> Finding:
        res: StuckResult = step.raw[0]
        x: FloatArray = step.raw[1]
        run, frozen, tol = int(res.run_length[i, k]), float(x[i, k]), self.det.tolerance
        msg = f"stuck at {frozen:.6g}: {run} samples in a row unchanged (tolerance {tol:g})"
        return Finding(float(run), float(self.det.n), 1, frozen, tol, msg)

    def summary(self) -> str:
        return f"stuck after {self.det.n} unchanged samples (tolerance {self.det.tolerance:g})"
