"""The calender: electrode thickness after compaction, and the coating density the plant derives.

After drying, the electrode is pressed between rolls to its target compaction density (DOMAIN.md
1.1 "Compaction density": NMC 3.4-3.7 g/cm3). An online dual-laser gauge then measures the
total thickness, T = L - A - B (DOMAIN.md 1.3 "Dual laser thickness"), to the 1 um precision
MIIT asks of online calendered thickness (DOMAIN.md 1.2 "Calendered thickness, online"), and
the plant computes the coating density from the beta-gauge coat weight and that thickness,
rho = m / T, net of the foil. The model follows that chain, so the reported density carries the
thickness gauge's error the way a plant's does::

    T_true = foil + (m_A + m_B) / rho_true      rho_true ~ N(rho_nominal, density_sigma)
    T      = T_true + e                         e ~ N(0, thickness_sigma_um)
    rho    = (m_A + m_B) / (T - foil)

with m in mg/cm2 and rho in g/cm3, whose ratio is a thickness in units of 10 um. rho_true varies
per lane and sample (the roll gap and the material). The model maps coat weights to thickness
and density; which stretch of coated web reaches the calender when is the caller's business.

>>> model = CalenderModel(lanes=1, seed=1, density_sigma=0.0, thickness_sigma_um=0.0)
>>> s = model.sample(0.0, np.array([[20.0, 20.0]]))
>>> round(float(s.thickness_um[0]), 2), round(float(s.density_g_cm3[0]), 2)
(120.68, 3.55)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sim.coating import AREAL_WEIGHT, SIDES
from sim.nominal import Nominal, check_range

__all__ = [
    "COMPACTION_DENSITY",
    "DENSITY",
    "FOIL_UM",
    "THICKNESS",
    "THICKNESS_GAUGE_SIGMA_UM",
    "CalenderModel",
    "CalenderSample",
]

#: Aluminium current-collector foil of the cathode, in um (DOMAIN.md 1.1 "Foil thickness":
#: Al 6-8 um in current practice).
FOIL_UM = 8.0
#: True compaction density of the calendered coating: the middle of NMC's 3.4-3.7 g/cm3
#: (DOMAIN.md 1.1), varying by 0.02 g/cm3 with roll gap and material.
COMPACTION_DENSITY = Nominal(mean=3.55, sigma=0.02, unit="g/cm3", low=0.0, high=10.0)
#: Noise of the online thickness gauge, in um (DOMAIN.md 1.2: 1 um online precision).
THICKNESS_GAUGE_SIGMA_UM = 1.0
#: um of coating per (mg/cm2) / (g/cm3).
_UM_PER_UNIT = 10.0

_M = len(SIDES) * AREAL_WEIGHT.mean  # both sides' nominal coat weight, mg/cm2
_RHO = COMPACTION_DENSITY.mean
_COATING_UM = _UM_PER_UNIT * _M / _RHO
#: Measured electrode thickness, foil and both coatings. Its sigma propagates, to first order,
#: the gauge noise, the density variation (dT/drho = -T_c / rho) and the coat-weight variation
#: of both sides (dT/dm = 10 / rho per side).
THICKNESS = Nominal(
    mean=FOIL_UM + _COATING_UM,
    sigma=math.sqrt(
        THICKNESS_GAUGE_SIGMA_UM**2
        + (_COATING_UM / _RHO * COMPACTION_DENSITY.sigma) ** 2
        + len(SIDES) * (_UM_PER_UNIT / _RHO * AREAL_WEIGHT.sigma) ** 2
    ),
    unit="um",
    low=0.0,
    high=500.0,
)
#: Coating density as the plant computes it. To first order the coat weight cancels from
#: m / (T - foil), leaving the true density's spread and the gauge noise scaled by rho / T_c.
DENSITY = Nominal(
    mean=_RHO,
    sigma=math.sqrt(
        COMPACTION_DENSITY.sigma**2 + (_RHO / _COATING_UM * THICKNESS_GAUGE_SIGMA_UM) ** 2
    ),
    unit="g/cm3",
    low=0.0,
    high=10.0,
)


@dataclass(frozen=True, slots=True)
class CalenderSample:
    """Thickness (um, foil included) and coating density (g/cm3) of every lane at epoch ``ts``;
    NaN for a lane whose coat weight was not known (a gauge dropout)."""

    ts: float
    thickness_um: npt.NDArray[np.float64]
    density_g_cm3: npt.NDArray[np.float64]


class CalenderModel:
    """Seeded calender of a ``lanes``-lane electrode on ``foil_um`` of foil, pressed to
    ``density`` (g/cm3, sigma ``density_sigma``), with a thickness gauge of noise
    ``thickness_sigma_um``."""

    def __init__(
        self,
        lanes: int,
        seed: int | np.random.SeedSequence = 1,
        foil_um: float = FOIL_UM,
        density: float = COMPACTION_DENSITY.mean,
        density_sigma: float = COMPACTION_DENSITY.sigma,
        thickness_sigma_um: float = THICKNESS_GAUGE_SIGMA_UM,
    ) -> None:
        if not 1 <= lanes <= 99:
            raise ValueError(f"lanes must be in 1..99, got {lanes}")
        check_range("foil_um", foil_um, 0.0, 100.0, low_open=True)
        check_range("density", density, 0.0, 10.0, low_open=True)
        check_range("density_sigma", density_sigma, 0.0, 1.0)
        check_range("thickness_sigma_um", thickness_sigma_um, 0.0, 50.0)
        self.lanes = lanes
        self.foil_um = foil_um
        self.density = density
        self.density_sigma = density_sigma
        self.thickness_sigma_um = thickness_sigma_um
        self._rng = np.random.default_rng(seed)

    def sample(self, ts: float, areal_weight: npt.ArrayLike) -> CalenderSample:
        """Thickness and density at epoch ``ts`` of web coated with ``areal_weight``, a
        (lanes, 2) array of net coat weight per lane and side in mg/cm2 (as
        ``CoatingSample.areal_weight``)."""
        weight = np.asarray(areal_weight, dtype=np.float64)
        if weight.shape != (self.lanes, len(SIDES)):
            raise ValueError(
                f"areal_weight must have shape ({self.lanes}, {len(SIDES)}), "
                f"got {tuple(weight.shape)}"
            )
        rho_true = self._rng.normal(self.density, self.density_sigma, self.lanes)
        gauge = self._rng.normal(0.0, self.thickness_sigma_um, self.lanes)
        mass = weight.sum(axis=1)  # NaN for a lane with a side unknown
        thickness = self.foil_um + _UM_PER_UNIT * mass / rho_true + gauge
        density = _UM_PER_UNIT * mass / (thickness - self.foil_um)
        return CalenderSample(ts=ts, thickness_um=thickness, density_g_cm3=density)
