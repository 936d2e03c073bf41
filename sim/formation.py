"""The numeric model of the formation cabinets: voltage, current, capacity and cell temperature.

Real formation runs a CC-CV charge over many hours; a demo needs to show whole cycles within
minutes. The model therefore compresses one cycle into ``CYCLE_S`` seconds of wall time, while
keeping its shape and its bookkeeping honest: constant current at 0.2C while the voltage climbs
from 3.0 V to 4.2 V, then constant voltage while the current decays exponentially, capacity as
the integral of the current over the uncompressed time, then a reset for the next cell. Channels
are offset in phase so that they do not all switch at once. The cell temperature is stationary
(the monitored, detector-driven parameter); all signals carry independent seeded Gaussian
noise, and, as in ``sim.coating``, the model is a pure function of injected times. ``speed``
compresses the cycle further (a cycle takes ``CYCLE_S / speed`` seconds) while every value
along the cycle, and so every statistic of the results, stays the same. Scripted formation
faults (``sim.fault``) are applied by ``sim.injector`` after the noise; a clock skew leaves the
values alone and shifts the channel's timestamps (``FormationSample.skew``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sim.fault import Fault, FormationTarget
from sim.injector import Injector
from sim.nominal import Nominal

__all__ = [
    "CAPACITY",
    "CELL_TEMPERATURE",
    "CURRENT",
    "CYCLE_S",
    "VOLTAGE",
    "FormationModel",
    "FormationSample",
]

#: Nominal capacity of the simulated cell in Ah.
CELL_AH = 10.0
#: Constant-current charge rate: 0.2C.
CC_AMPS = 0.2 * CELL_AH
#: Wall-time length of one compressed cycle, and of its constant-current part, in seconds.
CYCLE_S = 120.0
CC_S = 72.0
#: Time constant of the current decay in the constant-voltage part, in wall-time seconds.
CV_TAU_S = 10.0
#: Real seconds one wall-time second stands for; sets how much charge a cycle moves.
COMPRESSION = 200.0
V_START, V_END = 3.0, 4.2

VOLTAGE = Nominal(mean=3.7, sigma=0.002, unit="V", low=0.0, high=5.0)
CURRENT = Nominal(mean=CC_AMPS, sigma=0.005, unit="A", low=-20.0, high=20.0)
CAPACITY = Nominal(mean=CELL_AH / 2, sigma=0.0005, unit="Ah", low=0.0, high=2 * CELL_AH)
CELL_TEMPERATURE = Nominal(mean=25.0, sigma=0.3, unit="degC", low=-20.0, high=80.0)


@dataclass(frozen=True, slots=True)
class FormationSample:
    """One sample of every formation channel at epoch ``ts``; arrays are (cabinets, channels).

    NaN marks a channel that published nothing at this time (a dropout). ``skew`` (same shape,
    or None for none) holds the seconds each channel's clock runs ahead of ``ts``."""

    ts: float
    voltage: npt.NDArray[np.float64]
    current: npt.NDArray[np.float64]
    capacity: npt.NDArray[np.float64]
    temperature: npt.NDArray[np.float64]
    skew: npt.NDArray[np.float64] | None = None


def _cc_voltage(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Open-circuit-like charge curve over the CC part, x in [0, 1]: a quick rise, a sloped
    plateau and a knee at the end, reaching exactly ``V_END`` at x = 1."""
    shape = 0.45 * (1.0 - np.exp(-x / 0.05)) / (1.0 - math.exp(-20.0)) + 0.35 * x + 0.20 * x**8
    return V_START + (V_END - V_START) * shape


class FormationModel:
    """Seeded generator of ``FormationSample`` values for ``cabinets`` x ``channels`` cells.

    ``start_ts`` is the epoch time at which channel (1, 1) starts its first cycle; ``speed``
    runs the cycles that many times faster; the formation ones of ``faults`` are injected.
    """

    def __init__(
        self,
        seed: int | np.random.SeedSequence = 1,
        cabinets: int = 2,
        channels: int = 4,
        start_ts: float = 0.0,
        faults: Sequence[Fault] = (),
        speed: float = 1.0,
    ) -> None:
        if not 1 <= cabinets <= 99:
            raise ValueError(f"cabinets must be in 1..99, got {cabinets}")
        if not 1 <= channels <= 99:
            raise ValueError(f"channels must be in 1..99, got {channels}")
        if not (math.isfinite(speed) and speed > 0.0):
            raise ValueError(f"speed must be > 0, got {speed}")
        for f in faults:
            t = f.target
            if isinstance(t, FormationTarget) and (t.cabinet > cabinets or t.channel > channels):
                raise ValueError(
                    f"fault channel cab{t.cabinet:02d}/ch{t.channel:02d} does not exist with "
                    f"{cabinets} cabinets of {channels} channels"
                )
        self.cabinets = cabinets
        self.channels = channels
        self.start_ts = start_ts
        self.speed = speed
        self._rng = np.random.default_rng(seed)
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        sigmas = {
            "voltage": VOLTAGE.sigma,
            "current": CURRENT.sigma,
            "capacity": CAPACITY.sigma,
            "cell_temperature": CELL_TEMPERATURE.sigma,
        }
        self._injector = Injector(
            faults, "formation", sigmas, (cabinets, channels), ss.spawn(1)[0], start_ts
        )
        n = cabinets * channels
        self._phase = (np.arange(n) * (CYCLE_S / n)).reshape(cabinets, channels)

    def ideal(self, ts: float) -> tuple[npt.NDArray[np.float64], ...]:
        """Noise-free voltage, current and capacity of every channel at epoch ``ts``."""
        tau = np.mod((ts - self.start_ts) * self.speed + self._phase, CYCLE_S)
        cc = tau < CC_S
        cv_t = np.maximum(tau - CC_S, 0.0)
        decay = np.exp(-cv_t / CV_TAU_S)
        voltage = np.where(cc, _cc_voltage(np.minimum(tau, CC_S) / CC_S), V_END)
        current = np.where(cc, CC_AMPS, CC_AMPS * decay)
        ah_per_amp_s = COMPRESSION / 3600.0
        capacity = np.where(
            cc,
            CC_AMPS * tau * ah_per_amp_s,
            CC_AMPS * (CC_S + CV_TAU_S * (1.0 - decay)) * ah_per_amp_s,
        )
        return voltage, current, capacity

    def sample(self, ts: float) -> FormationSample:
        """Draw the sample taken at epoch ``ts`` (call with increasing times for a run)."""
        voltage, current, capacity = self.ideal(ts)
        shape = voltage.shape
        rng = self._rng
        values = {
            "voltage": voltage + rng.normal(0.0, VOLTAGE.sigma, shape),
            "current": current + rng.normal(0.0, CURRENT.sigma, shape),
            "capacity": np.maximum(capacity + rng.normal(0.0, CAPACITY.sigma, shape), 0.0),
            "cell_temperature": rng.normal(CELL_TEMPERATURE.mean, CELL_TEMPERATURE.sigma, shape),
        }
        if self._injector.faults:
            centers = {
                "voltage": voltage,
                "current": current,
                "capacity": capacity,
                "cell_temperature": CELL_TEMPERATURE.mean,
            }
            self._injector.apply(ts, values, centers)
        skew = self._injector.clock_offsets(ts) if self._injector.faults else None
        return FormationSample(
            ts=ts,
            voltage=values["voltage"],
            current=values["current"],
            capacity=values["capacity"],
            temperature=values["cell_temperature"],
            skew=skew,
        )
