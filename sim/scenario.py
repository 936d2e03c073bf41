"""Scenario files: a named, seeded run of the simulated plant with its scripted faults.

A detector evaluation, a demo or a benchmark is only repeatable if what the plant does is
written down: which seed, how fast it samples, which faults start when, on which series and how
big. A scenario is a small YAML file holding exactly that, validated here with pydantic so a
typo in a key or a fault aimed at a lane the plant does not have stops the run with one line per
problem (``file:line key.path: what is wrong``), the way plant files are checked, instead of
silently running a different experiment. ``parse_scenario`` turns the text into a frozen
``Scenario`` whose faults are ``sim.fault.Fault`` values; it does no I/O.

A file looks like::

    name: coating_drift
    description: lane 3 side A drifts upwards
    seed: 7
    rate_hz: 4.0
    faults:
      - kind: linear_drift
        start_s: 60
        target: {lane: 3, side: A, param: areal_weight}
        sigma_per_min: 0.5
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.configfile import ConfigError, Loc, Problem, key_path, line_of, load_yaml
from sim.fault import (
    FAULT_KINDS,
    FORMATION_PARAMS,
    MAGNITUDE,
    CoatingTarget,
    Fault,
    FormationTarget,
    Target,
)

__all__ = ["Scenario", "parse_scenario"]

_Loc = Loc


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario: plant size, sampling, seed and the faults to inject."""

    name: str
    description: str
    seed: int
    rate_hz: float
    duration_s: float | None
    speed: float
    lanes: int
    cabinets: int
    channels: int
    faults: tuple[Fault, ...]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _TargetSpec(_Strict):
    """A lane and side (coating), a cabinet and channel (formation), or the string 'all'."""

    lane: int | None = Field(default=None, ge=1, le=99)
    side: Literal["A", "B"] | None = None
    cabinet: int | None = Field(default=None, ge=1, le=99)
    channel: int | None = Field(default=None, ge=1, le=99)
    param: str | None = None
    all_channels: bool = False

    @model_validator(mode="before")
    @classmethod
    def _all(cls, data: Any) -> Any:
        if data == "all":
            return {"all_channels": True}
        if isinstance(data, dict) and "all_channels" in data:
            raise ValueError("all_channels is not a key; write target: all")
        if isinstance(data, str):
            raise ValueError("must be a mapping (lane/side or cabinet/channel) or 'all'")
        return data

    def to_target(self) -> Target:
        coating = self.lane is not None or self.side is not None
        formation = self.cabinet is not None or self.channel is not None
        if self.all_channels:
            return None
        if coating == formation:
            raise ValueError(
                "must name either lane and side (coating) or cabinet and channel (formation)"
            )
        if coating:
            if self.lane is None or self.side is None:
                raise ValueError("a coating target needs both lane and side")
            return CoatingTarget(self.lane, self.side, self.param or "areal_weight")
        if self.cabinet is None or self.channel is None:
            raise ValueError("a formation target needs both cabinet and channel")
        if self.param is None:
            raise ValueError(f"a formation target needs param, one of {FORMATION_PARAMS}")
        return FormationTarget(self.cabinet, self.channel, self.param)


class _FaultBase(_Strict):
    kind: str
    start_s: float = Field(ge=0.0)
    end_s: float | None = None
    target: _TargetSpec | None = None

    def to_fault(self) -> Fault:
        kind = self.kind
        target = _TargetSpec.model_validate("all") if self.target is None else self.target
        return Fault(
            kind,
            self.start_s,
            self.end_s,
            target.to_target(),
            magnitude=float(getattr(self, MAGNITUDE.get(kind, ""), 0.0)),
            rate_hz=float(getattr(self, "rate_hz", 0.0)),
        )

    @model_validator(mode="after")
    def _consistent(self) -> _FaultBase:
        self.to_fault()  # the runtime checks: target fits the kind, end after start
        return self


class _MeanShift(_FaultBase):
    kind: Literal["mean_shift"]
    shift_sigma: float


class _LinearDrift(_FaultBase):
    kind: Literal["linear_drift"]
    sigma_per_min: float


class _VarianceIncrease(_FaultBase):
    kind: Literal["variance_increase"]
    sigma_factor: float = Field(gt=0.0)


class _Stuck(_FaultBase):
    kind: Literal["stuck"]


class _Dropout(_FaultBase):
    kind: Literal["dropout"]


class _Spike(_FaultBase):
    kind: Literal["spike"]
    rate_hz: float = Field(gt=0.0)
    size_sigma: float = 8.0


class _BadStatus(_FaultBase):
    kind: Literal["bad_status"]


class _CalibrationOffset(_FaultBase):
    kind: Literal["calibration_offset"]
    offset: float


class _LotEffect(_FaultBase):
    kind: Literal["lot_effect"]
    shift_pct: float = Field(gt=-100.0)


class _ClockSkew(_FaultBase):
    kind: Literal["clock_skew"]
    offset_s: float


class _RecipeChangeover(_FaultBase):
    kind: Literal["recipe_changeover"]
    new_nominal: float = Field(gt=0.0)


_AnyFault = Annotated[
    _MeanShift
    | _LinearDrift
    | _VarianceIncrease
    | _Stuck
    | _Dropout
    | _Spike
    | _BadStatus
    | _CalibrationOffset
    | _LotEffect
    | _ClockSkew
    | _RecipeChangeover,
    Field(discriminator="kind"),
]


class _PlantSize(_Strict):
    lanes: int = Field(default=4, ge=1, le=99)
    cabinets: int = Field(default=2, ge=1, le=99)
    channels: int = Field(default=4, ge=1, le=99)


class _ScenarioFile(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = 1
    rate_hz: float = Field(default=2.0, gt=0.0, le=100.0)
    duration_s: float | None = Field(default=None, gt=0.0)
    speed: float = Field(default=1.0, gt=0.0)
    plant: _PlantSize = _PlantSize()
    faults: list[_AnyFault] = []


def _problem(err: Any, name: str, lines: dict[_Loc, int]) -> Problem:
    # Drop the pydantic-internal parts of a location: the fault kind a discriminated union
    # inserts after the list index, and the function name of a model validator.
    loc: _Loc = tuple(
        p
        for i, p in enumerate(err["loc"])
        if not (p in FAULT_KINDS and i > 0 and isinstance(err["loc"][i - 1], int))
        and not (isinstance(p, str) and p.startswith("function-"))
    )
    typ, given = err["type"], err.get("input")
    if typ == "missing":
        msg = "is required"
    elif typ == "extra_forbidden":
        msg = "is not a known key (a typo, or an option that does not exist)"
    elif typ == "union_tag_invalid":
        loc += ("kind",)
        msg = f"must be one of {', '.join(FAULT_KINDS)}; got {err['ctx']['tag']!r}"
    elif typ == "union_tag_not_found":
        msg = f"needs a kind, one of {', '.join(FAULT_KINDS)}"
    elif typ == "value_error":
        msg = str(err["ctx"]["error"])
    else:
        msg = f"{err['msg'].lower()}, got {given!r}"
    return Problem(name, line_of(loc, lines), key_path(loc), msg)


def parse_scenario(text: str, name: str = "<scenario>") -> Scenario:
    """Validate a scenario file's text; raises ``ConfigError`` listing every problem.

    >>> parse_scenario("name: quiet").faults
    ()
    >>> try:
    ...     parse_scenario("name: x\\nfaults:\\n  - {kind: stuck, start_s: 5, lane: 3}", "s.yaml")
    ... except ConfigError as e:
    ...     print(e)
    s.yaml:3 faults[0].lane: is not a known key (a typo, or an option that does not exist)
    """
    data, lines, _ = load_yaml(text, name, "a name")
    try:
        spec = _ScenarioFile.model_validate(data)
    except ValidationError as e:
        problems = [_problem(err, name, lines) for err in e.errors()]
        raise ConfigError(sorted(problems, key=lambda p: p.line)) from None
    faults = tuple(f.to_fault() for f in spec.faults)
    size = spec.plant
    problems = []
    for i, f in enumerate(faults):
        t = f.target
        if isinstance(t, CoatingTarget) and t.lane > size.lanes:
            loc: _Loc = ("faults", i, "target", "lane")
            msg = f"must be at most plant.lanes ({size.lanes}), got {t.lane}"
        elif isinstance(t, FormationTarget) and t.cabinet > size.cabinets:
            loc, msg = (
                ("faults", i, "target", "cabinet"),
                (f"must be at most plant.cabinets ({size.cabinets}), got {t.cabinet}"),
            )
        elif isinstance(t, FormationTarget) and t.channel > size.channels:
            loc, msg = (
                ("faults", i, "target", "channel"),
                (f"must be at most plant.channels ({size.channels}), got {t.channel}"),
            )
        else:
            continue
        problems.append(Problem(name, line_of(loc, lines), key_path(loc), msg))
    if problems:
        raise ConfigError(problems)
    return Scenario(
        name=spec.name,
        description=spec.description,
        seed=spec.seed,
        rate_hz=spec.rate_hz,
        duration_s=spec.duration_s,
        speed=spec.speed,
        lanes=size.lanes,
        cabinets=size.cabinets,
        channels=size.channels,
        faults=faults,
    )
