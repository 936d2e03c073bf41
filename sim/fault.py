"""The scripted process faults the simulator injects, and the ground truth they leave behind.

A drift detector can only be judged against a known answer: which series went wrong, when, how
and by how much. ``Fault`` describes one injected fault: its kind (a mean shift, a drift, a stuck
sensor, a lot of weak cells, a device clock running ahead, a product change, ...), its window in
seconds after the simulator start, the series it hits (``CoatingTarget``, ``FormationTarget``,
every formation channel for a material lot, every coating lane for a recipe changeover) and its
size, in multiples of the series' noise sigma where that is how control-chart performance is
quoted, in engineering units where a real fault has them (a calibration offset, a clock offset in
seconds, the new nominal areal weight of a recipe). ``Fault.record``
produces the ground-truth record that evaluation code compares detections with. ``FaultSpec``
is the short form for the most common case, one step shift of one coating lane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

__all__ = [
    "COATING_PARAMS",
    "FAULT_KINDS",
    "FORMATION_PARAMS",
    "MAGNITUDE",
    "CoatingTarget",
    "Fault",
    "FaultKind",
    "FaultSpec",
    "FormationTarget",
    "Target",
]

FaultKind = Literal[
    "mean_shift",
    "linear_drift",
    "variance_increase",
    "stuck",
    "dropout",
    "spike",
    "bad_status",
    "calibration_offset",
    "lot_effect",
    "clock_skew",
    "recipe_changeover",
]
#: Every fault kind, in the order the docs list them.
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
#: Name of the one size parameter of each kind, as scenario files and ground truth spell it:
#: a step in sigma, a slope in sigma per minute, a factor on the noise sigma, a spike height in
#: sigma, an offset in the parameter's unit, a capacity change in percent, a source-timestamp
#: offset in seconds (positive: the device clock is ahead), the new nominal of a recipe.
MAGNITUDE = {
    "mean_shift": "shift_sigma",
    "linear_drift": "sigma_per_min",
    "variance_increase": "sigma_factor",
    "spike": "size_sigma",
    "calibration_offset": "offset",
    "lot_effect": "shift_pct",
    "clock_skew": "offset_s",
    "recipe_changeover": "new_nominal",
}
#: Coating parameters a fault can target (per lane and side).
COATING_PARAMS = ("areal_weight",)
#: Formation parameters a fault can target (per cabinet and channel).
FORMATION_PARAMS = ("voltage", "current", "capacity", "cell_temperature")


@dataclass(frozen=True, slots=True)
class CoatingTarget:
    """One coating series: ``param`` of lane ``lane`` (1-based), side ``side``."""

    lane: int
    side: str
    param: str = "areal_weight"

    def __post_init__(self) -> None:
        if not 1 <= self.lane <= 99:
            raise ValueError(f"lane must be in 1..99, got {self.lane}")
        if self.side not in ("A", "B"):
            raise ValueError(f"side must be 'A' or 'B', got {self.side!r}")
        if self.param not in COATING_PARAMS:
            raise ValueError(f"coating param must be one of {COATING_PARAMS}, got {self.param!r}")

    @property
    def equipment(self) -> str:
        """Equipment id as the plant config names it (``lane03_A``)."""
        return f"lane{self.lane:02d}_{self.side}"


@dataclass(frozen=True, slots=True)
class FormationTarget:
    """One formation series: ``param`` of channel ``channel`` in cabinet ``cabinet`` (1-based)."""

    cabinet: int
    channel: int
    param: str = "capacity"

    def __post_init__(self) -> None:
        if not 1 <= self.cabinet <= 99:
            raise ValueError(f"cabinet must be in 1..99, got {self.cabinet}")
        if not 1 <= self.channel <= 99:
            raise ValueError(f"channel must be in 1..99, got {self.channel}")
        if self.param not in FORMATION_PARAMS:
            raise ValueError(
                f"formation param must be one of {FORMATION_PARAMS}, got {self.param!r}"
            )

    @property
    def equipment(self) -> str:
        """Equipment id as the plant config builds it from the topic (``cab01-ch02``)."""
        return f"cab{self.cabinet:02d}-ch{self.channel:02d}"


#: What a fault hits: one coating series, one formation series, or (None) every formation
#: channel (a lot effect) or every coating lane and side (a recipe changeover).
Target = CoatingTarget | FormationTarget | None


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault, active during [start_s, end_s) seconds after the simulator start.

    ``target=None`` means every formation channel for a material lot effect (its only reading)
    and every coating lane and side for a recipe changeover; no other kind allows it.
    ``magnitude`` is the kind's size parameter (see ``MAGNITUDE``; unused by stuck, dropout and
    bad_status); ``rate_hz`` is the mean spike rate of a spike fault. Which kinds fit which
    targets: bad_status only on coating series (OPC UA carries a status code, the cyclers' JSON
    does not), calibration_offset only on a formation channel, lot_effect only on all channels,
    recipe_changeover only on coating series (one, or all); a dropout or a clock_skew on a
    formation channel hits the whole channel, whose parameters share one timestamp.

    >>> f = Fault("linear_drift", 60.0, 120.0, CoatingTarget(3, "A"), magnitude=0.5)
    >>> f.station, f.active(59.9), f.active(60.0), f.active(120.0)
    ('coater', False, True, False)
    """

    kind: str
    start_s: float
    end_s: float | None = None
    target: Target = None
    magnitude: float = 0.0
    rate_hz: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, got {self.kind!r}")
        if not (math.isfinite(self.start_s) and self.start_s >= 0.0):
            raise ValueError(f"start_s must be >= 0, got {self.start_s}")
        if self.end_s is not None and not self.end_s > self.start_s:
            raise ValueError(f"end_s must be after start_s ({self.start_s}), got {self.end_s}")
        if not math.isfinite(self.magnitude):
            raise ValueError(f"{MAGNITUDE.get(self.kind, 'magnitude')} must be finite")
        kind, target = self.kind, self.target
        if kind == "lot_effect":
            if target is not None:
                raise ValueError("a lot_effect applies to all formation channels: target 'all'")
            if not self.magnitude > -100.0:
                raise ValueError(f"shift_pct must be > -100, got {self.magnitude}")
        elif kind == "recipe_changeover":
            if isinstance(target, FormationTarget):
                raise ValueError(
                    "recipe_changeover needs a coating target (lane, side) or 'all' coating lanes"
                )
            if not self.magnitude > 0.0:
                raise ValueError(f"new_nominal must be > 0, got {self.magnitude}")
        elif target is None:
            raise ValueError(f"a {kind} fault needs a coating or formation target, not 'all'")
        if kind == "bad_status" and not isinstance(target, CoatingTarget):
            raise ValueError("bad_status needs a coating target (lane, side): only OPC UA has it")
        if kind == "calibration_offset" and not isinstance(target, FormationTarget):
            raise ValueError("calibration_offset needs a formation target (cabinet, channel)")
        if kind == "variance_increase" and not self.magnitude > 0.0:
            raise ValueError(f"sigma_factor must be > 0, got {self.magnitude}")
        if kind == "spike" and not (math.isfinite(self.rate_hz) and self.rate_hz > 0.0):
            raise ValueError(f"spike rate_hz must be > 0, got {self.rate_hz}")

    @property
    def station(self) -> str:
        """Station the fault hits: ``coater`` or ``formation``."""
        coater = isinstance(self.target, CoatingTarget) or self.kind == "recipe_changeover"
        return "coater" if coater else "formation"

    @property
    def param(self) -> str:
        """Parameter the fault changes (capacity for a lot effect, areal weight for a recipe
        changeover of all lanes)."""
        if self.target is None:
            return "areal_weight" if self.kind == "recipe_changeover" else "capacity"
        return self.target.param

    def active(self, t_rel: float) -> bool:
        """Whether the fault applies ``t_rel`` seconds after the simulator start."""
        return t_rel >= self.start_s and (self.end_s is None or t_rel < self.end_s)

    def tags(
        self, cabinets: int, channels: int, line: str = "line1", lanes: int = 4
    ) -> list[dict[str, str]]:
        """The series the fault affects, as (line, station, equipment, param) of the plant config.

        A formation dropout or clock skew hits every parameter of its channel; a lot effect
        shifts the capacity of all ``cabinets`` x ``channels`` channels; a recipe changeover
        without a target moves the areal weight of both sides of all ``lanes`` lanes.
        """
        station, target = self.station, self.target
        if target is None and self.kind == "recipe_changeover":
            pairs = [
                (CoatingTarget(lane, side).equipment, "areal_weight")
                for lane in range(1, lanes + 1)
                for side in ("A", "B")
            ]
        elif target is None:
            pairs = [
                (FormationTarget(cab, ch).equipment, "capacity")
                for cab in range(1, cabinets + 1)
                for ch in range(1, channels + 1)
            ]
        elif isinstance(target, FormationTarget) and self.kind in ("dropout", "clock_skew"):
            pairs = [(target.equipment, p) for p in FORMATION_PARAMS]
        else:
            pairs = [(target.equipment, target.param)]
        return [{"line": line, "station": station, "equipment": e, "param": p} for e, p in pairs]

    def record(
        self,
        start_ts: float,
        cabinets: int = 2,
        channels: int = 4,
        sigma: float | None = None,
        unit: str = "",
        line: str = "line1",
        lanes: int = 4,
        mean: float | None = None,
    ) -> dict[str, Any]:
        """Ground-truth record of this fault for a simulator started at epoch ``start_ts``.

        ``sigma``, ``unit`` and ``mean`` are the target parameter's in-control noise, unit and
        nominal; with a sigma, faults sized in sigma also give their size in the unit
        (``shift``, ``slope`` per minute, ``size``). A recipe changeover records the nominal it
        leaves (``old_nominal``, given ``mean``) next to ``new_nominal``; a clock skew's
        ``offset_s`` is in seconds whatever the series' unit. ``end_ts`` is ``None`` for a
        fault that lasts to the end.

        >>> f = Fault("mean_shift", 10.0, None, CoatingTarget(3, "A"), 1.5)
        >>> r = f.record(1000.0, sigma=0.1)
        >>> r["start_ts"], r["tags"][0]["equipment"], round(r["parameters"]["shift"], 3)
        (1010.0, 'lane03_A', 0.15)
        """
        parameters: dict[str, Any] = {}
        name = MAGNITUDE.get(self.kind)
        if name is not None:
            parameters[name] = self.magnitude
        if self.kind == "spike":
            parameters["rate_hz"] = self.rate_hz
        if self.kind == "clock_skew":
            sigma, unit = None, "s"
        if self.kind == "recipe_changeover" and mean is not None:
            parameters["old_nominal"] = mean
        if sigma is not None and self.kind != "lot_effect":
            parameters["sigma"] = sigma
            scaled = {"mean_shift": "shift", "linear_drift": "slope", "spike": "size"}
            if self.kind in scaled:
                parameters[scaled[self.kind]] = self.magnitude * sigma
        if unit:
            parameters["unit"] = unit
        return {
            "kind": self.kind,
            "tags": self.tags(cabinets, channels, line, lanes),
            "start_ts": start_ts + self.start_s,
            "end_ts": None if self.end_s is None else start_ts + self.end_s,
            "parameters": parameters,
        }


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """A step shift of ``shift_sigma`` sigma in one lane/side series during [start_s, end_s).

    The short form of ``Fault("mean_shift", ...)`` on a coating lane, which the demo uses.
    Times are seconds after the simulator start; ``end_s=None`` keeps the shift to the end.

    >>> spec = FaultSpec()
    >>> spec.equipment, spec.tag
    ('lane03_A', 'lane03_A areal weight')
    >>> spec.active(39.9), spec.active(40.0)
    (False, True)
    """

    lane: int = 3
    side: str = "A"
    param: str = "areal_weight"
    shift_sigma: float = 1.5
    start_s: float = 40.0
    end_s: float | None = None

    def __post_init__(self) -> None:
        self.to_fault()  # one set of checks for both forms

    @property
    def equipment(self) -> str:
        """Equipment id of the faulty series, as the plant config names it (``lane03_A``)."""
        return f"lane{self.lane:02d}_{self.side}"

    @property
    def tag(self) -> str:
        """Human-readable name of the faulty series."""
        return f"{self.equipment} {self.param.replace('_', ' ')}"

    def to_fault(self) -> Fault:
        """The same fault in the general form."""
        return Fault(
            "mean_shift",
            self.start_s,
            self.end_s,
            CoatingTarget(self.lane, self.side, self.param),
            magnitude=self.shift_sigma,
        )

    def active(self, t_rel: float) -> bool:
        """Whether the shift applies ``t_rel`` seconds after the simulator start."""
        return self.to_fault().active(t_rel)

    def record(self, start_ts: float, sigma: float, line: str = "line1") -> dict[str, Any]:
        """Ground-truth record of this fault for a simulator started at epoch ``start_ts``.

        >>> FaultSpec(start_s=10.0).record(1000.0, 0.1)["start_ts"]
        1010.0
        """
        return self.to_fault().record(start_ts, sigma=sigma, unit="mg/cm2", line=line)
