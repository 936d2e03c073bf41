"""Electrode loading to cell capacity: how a coating fault reaches the cells cut from its web.

A cathode-limited cell holds capacity in proportion to the active material on its electrode,
so a lane coated 1 % heavy gives cells with about 1 % more capacity, and a drift on the coater
shows up days later in grading. That link is what makes genealogy worth having, and the
simulator keeps it: ``ElectrodeLoading.scale(n)`` is the capacity factor of cell ``n``, the
mean areal weight of its electrode cut (both sides of its lane, over the cut's stretch of web)
over the nominal one. Only faults that move the coated mean count: a mean shift, a linear
drift and a recipe changeover. Noise, a variance increase and measurement faults (stuck,
dropout, spike, bad status, clock skew) leave the true loading alone.

The factor is computed in closed form from the fault schedule, not from the noisy samples, so
it is the same whatever the sample rate and whether or not the coater's samples were drawn.

>>> from sim.fault import CoatingTarget, Fault
>>> from sim.genealogy import Genealogy
>>> shift = Fault("mean_shift", 0.0, None, CoatingTarget(1, "A"), magnitude=2.0)
>>> loading = ElectrodeLoading([shift], Genealogy(lanes=2))
>>> round(loading.scale(0), 6), loading.scale(1)  # cell 0 is cut from lane 1, cell 1 lane 2
(1.005, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence

from sim.coating import AREAL_WEIGHT, SIDES
from sim.fault import CoatingTarget, Fault
from sim.genealogy import Genealogy

__all__ = ["ElectrodeLoading", "LOADING_KINDS"]

#: Fault kinds that move the true coated mean (and so the capacity of the cells).
LOADING_KINDS = ("mean_shift", "linear_drift", "recipe_changeover")
#: Points along a cut at which the loading is evaluated (midpoints of equal parts).
_POINTS = 8


class ElectrodeLoading:
    """Capacity factors of cells from the coating faults in ``faults`` and ``genealogy``."""

    def __init__(self, faults: Sequence[Fault], genealogy: Genealogy) -> None:
        self.genealogy = genealogy
        self.faults = tuple(f for f in faults if f.kind in LOADING_KINDS and f.station == "coater")

    def offset(self, lane: int, side: str, t_rel: float) -> float:
        """True areal-weight offset (mg/cm2) from nominal of one lane and side at ``t_rel``."""
        offset = 0.0
        for f in self.faults:
            target = f.target
            if isinstance(target, CoatingTarget) and (target.lane, target.side) != (lane, side):
                continue
            if not f.active(t_rel):
                continue
            if f.kind == "recipe_changeover":
                offset += f.magnitude - AREAL_WEIGHT.mean
            elif f.kind == "mean_shift":
                offset += f.magnitude * AREAL_WEIGHT.sigma
            else:  # linear_drift, sigma per minute since its start
                offset += f.magnitude * AREAL_WEIGHT.sigma * (t_rel - f.start_s) / 60.0
        return offset

    def scale(self, n: int) -> float:
        """Capacity factor of cell ``n``: its electrode's mean loading over the nominal."""
        if not self.faults:
            return 1.0
        cut = self.genealogy.electrode(n)
        web = self.genealogy.web
        t0, t1 = web.time_at(cut.total_from_m), web.time_at(cut.total_to_m)
        times = [t0 + (k + 0.5) * (t1 - t0) / _POINTS for k in range(_POINTS)]
        total = sum(self.offset(cut.lane, side, t) for side in SIDES for t in times)
        mean = total / (len(SIDES) * _POINTS)
        return (AREAL_WEIGHT.mean + mean) / AREAL_WEIGHT.mean
