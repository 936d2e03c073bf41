"""The injector: applies a station's scripted faults to each freshly drawn sample.

The coating and formation models draw in-control values; the injector then changes the ones a
fault hits, at the sample's time, so the effect is in the numbers every transport publishes and
nowhere else. It keeps what a fault needs between samples (the frozen value of a stuck sensor,
the previous sample time for a spike rate) and draws spikes from streams of its own, one per
fault, so scripting a fault never changes the noise of the series it does not touch.

A recipe changeover is applied first: it moves the noise-free value itself (every cell of the
parameter, or the target cell, from its nominal to ``magnitude``), so the faults below act around
the new product's nominal. The other effects follow in scenario order, on the target cell:
mean_shift adds ``magnitude`` sigma; linear_drift adds ``magnitude`` sigma per minute since the
start; variance_increase scales the deviation from the noise-free value by ``magnitude``; stuck
repeats the first value of the window; dropout makes the value NaN (not published; a formation
channel goes silent as a whole); spike adds ``magnitude`` sigma at Poisson times of rate
``rate_hz``; calibration_offset adds ``magnitude`` units; lot_effect scales every capacity by
``1 + magnitude / 100``; bad_status leaves the value and marks it in the returned mask.
clock_skew leaves the value too: ``clock_offsets`` gives the seconds the target's source
timestamp is ahead of the sample time, which the transports add to the time they publish.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from sim.fault import CoatingTarget, Fault

__all__ = ["Injector"]

_Arrays = dict[str, npt.NDArray[np.float64]]


class Injector:
    """Applies the faults of one ``station`` to (rows, columns) arrays of its parameters.

    ``sigmas`` maps each parameter to its in-control noise sigma; ``seed`` feeds the spike
    streams; ``start_ts`` is the epoch the fault windows count from.
    """

    def __init__(
        self,
        faults: Sequence[Fault],
        station: str,
        sigmas: Mapping[str, float],
        shape: tuple[int, int],
        seed: int | np.random.SeedSequence = 0,
        start_ts: float = 0.0,
    ) -> None:
        self.faults = tuple(f for f in faults if f.station == station)
        self.shape = shape
        self.start_ts = start_ts
        self._sigmas = dict(sigmas)
        for f in self.faults:
            row, col = self._index(f)
            if row is not None and not (row < shape[0] and col < shape[1]):
                raise ValueError(f"fault target {f.target} is outside a {shape} {station}")
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self._rngs = [np.random.default_rng(s) for s in ss.spawn(len(self.faults))]
        self._stuck: dict[int, float] = {}
        self._last_ts: float | None = None

    @staticmethod
    def _index(fault: Fault) -> tuple[int | None, int]:
        target = fault.target
        if target is None:
            return None, 0
        if isinstance(target, CoatingTarget):
            return target.lane - 1, "AB".index(target.side)
        return target.cabinet - 1, target.channel - 1

    def apply(
        self, ts: float, values: _Arrays, centers: Mapping[str, npt.ArrayLike]
    ) -> npt.NDArray[np.bool_]:
        """Change ``values`` in place for the faults active at epoch ``ts``; return the mask of
        cells whose status is bad. ``centers`` holds each parameter's noise-free value (an array
        or a scalar), which variance_increase scales the deviation from."""
        bad = np.zeros(self.shape, dtype=bool)
        t_rel = ts - self.start_ts
        dt = 0.0 if self._last_ts is None else max(ts - self._last_ts, 0.0)
        self._last_ts = ts
        centers = dict(centers)
        for fault in self.faults:
            if fault.kind == "recipe_changeover" and fault.active(t_rel):
                param = fault.param
                center = np.array(np.broadcast_to(centers[param], self.shape), dtype=np.float64)
                row, col = self._index(fault)
                cells = np.s_[:, :] if row is None else np.s_[row, col]
                values[param][cells] += fault.magnitude - center[cells]
                center[cells] = fault.magnitude
                centers[param] = center
        for n, fault in enumerate(self.faults):
            if fault.kind in ("recipe_changeover", "clock_skew") or not fault.active(t_rel):
                continue
            row, col = self._index(fault)
            kind, param, m = fault.kind, fault.param, fault.magnitude
            if kind == "lot_effect":
                values[param] *= 1.0 + m / 100.0
                continue
            assert row is not None
            x = values[param]
            sigma = self._sigmas[param]
            if kind == "mean_shift":
                x[row, col] += m * sigma
            elif kind == "linear_drift":
                x[row, col] += m * sigma * (t_rel - fault.start_s) / 60.0
            elif kind == "variance_increase":
                c = float(np.broadcast_to(centers[param], self.shape)[row, col])
                x[row, col] = c + (x[row, col] - c) * m
            elif kind == "stuck":
                x[row, col] = self._stuck.setdefault(n, float(x[row, col]))
            elif kind == "dropout":
                arrays = values.values() if fault.station == "formation" else (x,)
                for arr in arrays:
                    arr[row, col] = math.nan
            elif kind == "spike":
                if self._rngs[n].random() < -math.expm1(-fault.rate_hz * dt):
                    x[row, col] += m * sigma
            elif kind == "calibration_offset":
                x[row, col] += m
            elif kind == "bad_status":
                bad[row, col] = True
        return bad

    def clock_offsets(self, ts: float) -> npt.NDArray[np.float64] | None:
        """Seconds each cell's source timestamp runs ahead of epoch ``ts`` (the clock skews
        active then, summed), or None when no clock is off."""
        t_rel = ts - self.start_ts
        offsets: npt.NDArray[np.float64] | None = None
        for fault in self.faults:
            if fault.kind == "clock_skew" and fault.active(t_rel):
                row, col = self._index(fault)
                assert row is not None
                if offsets is None:
                    offsets = np.zeros(self.shape)
                offsets[row, col] += fault.magnitude
        return offsets
