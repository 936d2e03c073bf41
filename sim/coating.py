"""The numeric model of the coating line: areal weight per lane and side, web speed, dryer zones.

The model is a pure function of the sample time plus a seeded noise stream, with no clock and no
I/O, so the same seed and the same times give the same numbers. That is what makes detector
tests and demo runs repeatable, and it lets tests inject times instead of waiting for them.
Every sample is independent Gaussian noise around the nominal value (an in-control process),
except the areal-weight series hit by scripted faults (``sim.fault``), which ``sim.injector``
changes while each fault is active (a recipe changeover moves their nominal; a clock skew
leaves them alone and moves their source timestamps, carried in ``CoatingSample.skew``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sim.fault import CoatingTarget, Fault, FaultSpec
from sim.injector import Injector
from sim.nominal import Nominal

__all__ = [
    "AREAL_WEIGHT",
    "DRYER_ZONES",
    "SIDES",
    "WEB_SPEED",
    "CoatingModel",
    "CoatingSample",
]

#: Net coating weight per side of one lane (a cathode at 20 mg/cm2, ±3 % spec in the config).
AREAL_WEIGHT = Nominal(mean=20.0, sigma=0.1, unit="mg/cm2", low=0.0, high=50.0)
#: Web (line) speed of the coater.
WEB_SPEED = Nominal(mean=60.0, sigma=0.2, unit="m/min", low=0.0, high=150.0)
#: Air temperature of the four dryer zones, rising then falling along the web path.
DRYER_ZONES = tuple(
    Nominal(mean=m, sigma=0.5, unit="degC", low=0.0, high=250.0)
    for m in (100.0, 120.0, 140.0, 120.0)
)
#: Coated sides of the foil, in column order of ``CoatingSample.areal_weight``.
SIDES = ("A", "B")


@dataclass(frozen=True, slots=True)
class CoatingSample:
    """One sample of every coating signal at epoch time ``ts``.

    ``areal_weight`` has shape ``(lanes, 2)``: row ``k`` is lane ``k + 1``, columns are sides
    A and B; NaN marks a value that is not published (a dropout). ``dryer`` has one
    temperature per zone. ``bad`` (same shape as ``areal_weight``, or None for none) marks
    values to be served with a Bad status code. ``skew`` (same shape, or None for none) holds
    the seconds each areal weight's source timestamp runs ahead of ``ts`` (a device clock off).
    """

    ts: float
    areal_weight: npt.NDArray[np.float64]
    web_speed: float
    dryer: npt.NDArray[np.float64]
    bad: npt.NDArray[np.bool_] | None = None
    skew: npt.NDArray[np.float64] | None = None


class CoatingModel:
    """Seeded generator of ``CoatingSample`` values for a coater with ``lanes`` lanes.

    ``start_ts`` is the epoch time the fault schedules count from; ``fault`` (the short form)
    and ``faults`` are injected, the coating ones only; none keeps every series in control.
    """

    def __init__(
        self,
        seed: int | np.random.SeedSequence = 1,
        lanes: int = 4,
        fault: FaultSpec | None = None,
        start_ts: float = 0.0,
        faults: Sequence[Fault] = (),
    ) -> None:
        if not 1 <= lanes <= 99:
            raise ValueError(f"lanes must be in 1..99, got {lanes}")
        all_faults = ([] if fault is None else [fault.to_fault()]) + list(faults)
        for f in all_faults:
            if isinstance(f.target, CoatingTarget) and f.target.lane > lanes:
                raise ValueError(
                    f"fault lane {f.target.lane} does not exist on a {lanes}-lane coater"
                )
        self.lanes = lanes
        self.fault = fault
        self.start_ts = start_ts
        self._rng = np.random.default_rng(seed)
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self._injector = Injector(
            all_faults,
            "coater",
            {"areal_weight": AREAL_WEIGHT.sigma},
            (lanes, len(SIDES)),
            ss.spawn(1)[0],
            start_ts,
        )
        self._dryer_mean = np.array([z.mean for z in DRYER_ZONES])
        self._dryer_sigma = np.array([z.sigma for z in DRYER_ZONES])

    def sample(self, ts: float) -> CoatingSample:
        """Draw the sample taken at epoch ``ts`` (call with increasing times for a run)."""
        weight = self._rng.normal(AREAL_WEIGHT.mean, AREAL_WEIGHT.sigma, (self.lanes, len(SIDES)))
        speed = float(self._rng.normal(WEB_SPEED.mean, WEB_SPEED.sigma))
        dryer = self._rng.normal(self._dryer_mean, self._dryer_sigma)
        bad = skew = None
        if self._injector.faults:
            values = {"areal_weight": weight}
            mask = self._injector.apply(ts, values, {"areal_weight": AREAL_WEIGHT.mean})
            bad = mask if mask.any() else None
            skew = self._injector.clock_offsets(ts)
        return CoatingSample(
            ts=ts, areal_weight=weight, web_speed=speed, dryer=dryer, bad=bad, skew=skew
        )
