"""The numeric model of the coating line: areal weight per lane and side, web speed, dryer zones.

The model is a pure function of the sample time plus a seeded noise stream, with no clock and no
I/O, so the same seed and the same times give the same numbers. That is what makes detector
tests and demo runs repeatable, and it lets tests inject times instead of waiting for them.
Every sample is independent Gaussian noise around the nominal value (an in-control process),
except the areal-weight series hit by scripted faults (``sim.fault``), which ``sim.injector``
changes while each fault is active (a recipe changeover moves their nominal; a clock skew
leaves them alone and moves their source timestamps, carried in ``CoatingSample.skew``).

Two signals follow the process rather than being independent noise, so that a drift upstream
shows where a plant would see it. The NMP left in the dryer exhaust after recovery scales with
the solvent the dryer has to evaporate, that is with coat weight times web speed; the electrical
power of a dryer zone is its fans plus a heater that keeps the make-up air at the zone
temperature, so it grows with the zone's temperature above ambient. The web position (roll id
and machine-direction metre) comes from ``sim.web`` in closed form. The noise of these signals
comes from child streams of their own, so adding them left every earlier draw unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sim.fault import CoatingTarget, Fault, FaultSpec
from sim.injector import Injector
from sim.nominal import Nominal
from sim.web import WebModel, WebPosition

__all__ = [
    "AMBIENT_C",
    "AREAL_WEIGHT",
    "DRYER_POWER",
    "DRYER_ZONES",
    "NMP_EXHAUST",
    "SIDES",
    "WEB_SPEED",
    "CoatingModel",
    "CoatingSample",
    "dryer_power_kw",
    "nmp_exhaust",
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

#: NMP in the dryer exhaust after recovery, at the nominal coat weight and web speed. DOMAIN.md
#: 1.1 "NMP exhaust limit (one Chinese case)" gives <100 mg/m3; a line in control runs well
#: under it. ``sigma`` is the analyser and flow noise around the value the process implies.
NMP_EXHAUST = Nominal(mean=40.0, sigma=1.0, unit="mg/m3", low=0.0, high=500.0)
#: Temperature of the coating hall air the dryer draws in, in degC.
AMBIENT_C = 25.0
#: Circulation-fan power of one dryer zone in kW, drawn whatever the temperature.
DRYER_FAN_KW = 15.0
#: Heater power of one zone per kelvin of zone temperature above ambient, in kW/K: heating about
#: 1 kg/s of make-up air (c_p of air 1.006 kJ/(kg K)), which with the fans puts a four-zone
#: dryer at about 440 kW, the few hundred kW an industrial NMP coater's dryer draws.
DRYER_KW_PER_K = 1.0
#: Noise of a zone's power around the value its temperature implies (heater duty cycling), kW.
DRYER_POWER_SIGMA_KW = 0.5


def dryer_power_kw(zone_temp_c: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Electrical power of dryer zones at air temperatures ``zone_temp_c`` (degC), in kW.

    >>> dryer_power_kw([100.0, 20.0]).tolist()
    [90.0, 15.0]
    """
    above = np.maximum(np.asarray(zone_temp_c, dtype=np.float64) - AMBIENT_C, 0.0)
    return DRYER_FAN_KW + DRYER_KW_PER_K * above


def nmp_exhaust(areal_weight: float, web_speed: float) -> float:
    """NMP exhaust concentration (mg/m3) expected at a mean coat weight (mg/cm2, per side) and
    web speed (m/min): proportional to both, since the NMP entering the dryer is the wet film's
    solvent, a fixed fraction of the coat weight, times the area coated per minute, and recovery
    takes out a fixed share of it while the exhaust air flow stays constant.

    >>> nmp_exhaust(20.0, 60.0)
    40.0
    >>> nmp_exhaust(22.0, 60.0)
    44.0
    """
    return NMP_EXHAUST.mean * (areal_weight / AREAL_WEIGHT.mean) * (web_speed / WEB_SPEED.mean)


#: Power of each dryer zone at its nominal temperature; ``sigma`` is the duty-cycling noise.
DRYER_POWER = tuple(
    Nominal(
        mean=float(dryer_power_kw(z.mean)),
        sigma=DRYER_POWER_SIGMA_KW,
        unit="kW",
        low=0.0,
        high=500.0,
    )
    for z in DRYER_ZONES
)
#: The web model used when none is given (nominal speed, default roll length).
_DEFAULT_WEB = WebModel(speed_m_per_min=WEB_SPEED.mean)


@dataclass(frozen=True, slots=True)
class CoatingSample:
    """One sample of every coating signal at epoch time ``ts``.

    ``areal_weight`` has shape ``(lanes, 2)``: row ``k`` is lane ``k + 1``, columns are sides
    A and B; NaN marks a value that is not published (a dropout). ``dryer`` has one
    temperature per zone. ``bad`` (same shape as ``areal_weight``, or None for none) marks
    values to be served with a Bad status code. ``skew`` (same shape, or None for none) holds
    the seconds each areal weight's source timestamp runs ahead of ``ts`` (a device clock off).
    ``nmp_exhaust`` is the NMP concentration in the dryer exhaust (mg/m3, NaN for none),
    ``dryer_power_kw`` the true electrical power of each zone (or None), and ``web`` the roll
    and MD metre under the coating head (or None).
    """

    ts: float
    areal_weight: npt.NDArray[np.float64]
    web_speed: float
    dryer: npt.NDArray[np.float64]
    bad: npt.NDArray[np.bool_] | None = None
    skew: npt.NDArray[np.float64] | None = None
    nmp_exhaust: float = math.nan
    dryer_power_kw: npt.NDArray[np.float64] | None = None
    web: WebPosition | None = None


class CoatingModel:
    """Seeded generator of ``CoatingSample`` values for a coater with ``lanes`` lanes.

    ``start_ts`` is the epoch time the fault schedules count from; ``fault`` (the short form)
    and ``faults`` are injected, the coating ones only; none keeps every series in control.
    ``web`` places each sample on the coated web, counting from ``start_ts``.
    """

    def __init__(
        self,
        seed: int | np.random.SeedSequence = 1,
        lanes: int = 4,
        fault: FaultSpec | None = None,
        start_ts: float = 0.0,
        faults: Sequence[Fault] = (),
        web: WebModel = _DEFAULT_WEB,
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
        self.web = web
        # Child 0 of the seed feeds the injector; the signals added later draw from children 1
        # and 2, so the draws above stay what they were for every seed.
        self._nmp_rng = _child_rng(ss, 1)
        self._power_rng = _child_rng(ss, 2)

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
        published = weight[~np.isnan(weight)]
        mean_weight = float(published.mean()) if published.size else AREAL_WEIGHT.mean
        nmp = nmp_exhaust(mean_weight, speed) + self._nmp_rng.normal(0.0, NMP_EXHAUST.sigma)
        power = dryer_power_kw(dryer) + self._power_rng.normal(
            0.0, DRYER_POWER_SIGMA_KW, len(DRYER_ZONES)
        )
        return CoatingSample(
            ts=ts,
            areal_weight=weight,
            web_speed=speed,
            dryer=dryer,
            bad=bad,
            skew=skew,
            nmp_exhaust=float(nmp),
            dryer_power_kw=power,
            web=self.web.position(ts - self.start_ts),
        )


def _child_rng(ss: np.random.SeedSequence, key: int) -> np.random.Generator:
    """Generator on child ``key`` of ``ss``, the same one ``ss.spawn`` hands out as that child,
    however many children were spawned from ``ss`` before."""
    child = np.random.SeedSequence(
        ss.entropy, spawn_key=(*ss.spawn_key, key), pool_size=ss.pool_size
    )
    return np.random.default_rng(child)
