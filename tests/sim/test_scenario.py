"""Scenario files: the shipped ones load, and broken ones list every problem with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.configfile import ConfigError
from sim.fault import CoatingTarget, Fault, FormationTarget
from sim.scenario import parse_scenario

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "config" / "scenarios").glob("*.yaml"))


def test_the_named_scenarios_are_shipped() -> None:
    assert {p.stem for p in SCENARIOS} >= {
        "quiet_shift",
        "coating_drift",
        "formation_calibration",
        "bad_material_lot",
    }


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_every_scenario_file_loads(path: Path) -> None:
    scenario = parse_scenario(path.read_text(), str(path))
    assert scenario.name == path.stem
    assert scenario.description


def test_the_scenarios_script_what_their_names_say() -> None:
    by_name = {p.stem: parse_scenario(p.read_text(), str(p)) for p in SCENARIOS}
    assert by_name["quiet_shift"].faults == ()
    (drift,) = by_name["coating_drift"].faults
    assert drift.kind == "linear_drift" and drift.target == CoatingTarget(3, "A")
    (cal,) = by_name["formation_calibration"].faults
    assert cal.kind == "calibration_offset" and isinstance(cal.target, FormationTarget)
    (lot,) = by_name["bad_material_lot"].faults
    assert lot.kind == "lot_effect" and lot.target is None and lot.magnitude < 0


def test_every_kind_parses_into_its_fault() -> None:
    text = """
name: all_kinds
seed: 3
plant: {lanes: 6}
faults:
  - {kind: mean_shift, start_s: 1, target: {lane: 6, side: B}, shift_sigma: 1.5}
  - {kind: linear_drift, start_s: 1, end_s: 9, target: {lane: 1, side: A}, sigma_per_min: 2}
  - {kind: variance_increase, start_s: 1, target: {lane: 1, side: A}, sigma_factor: 2}
  - {kind: stuck, start_s: 1, target: {cabinet: 1, channel: 1, param: cell_temperature}}
  - {kind: dropout, start_s: 1, target: {cabinet: 2, channel: 4, param: voltage}}
  - {kind: spike, start_s: 1, target: {lane: 2, side: A}, rate_hz: 0.5}
  - {kind: bad_status, start_s: 1, target: {lane: 2, side: B}}
  - {kind: calibration_offset, start_s: 1, target: {cabinet: 1, channel: 2, param: voltage},
     offset: 0.004}
  - {kind: lot_effect, start_s: 1, target: all, shift_pct: -1.5}
  - {kind: clock_skew, start_s: 2, end_s: 5, target: {lane: 3, side: A}, offset_s: 1.5}
  - {kind: clock_skew, start_s: 2, target: {cabinet: 2, channel: 1, param: voltage}, offset_s: -3}
  - {kind: recipe_changeover, start_s: 4, new_nominal: 21.5}
  - {kind: recipe_changeover, start_s: 4, end_s: 8, target: {lane: 2, side: B}, new_nominal: 19}
"""
    s = parse_scenario(text)
    assert (s.seed, s.lanes, s.cabinets, s.channels) == (3, 6, 2, 4)
    assert s.faults[0] == Fault("mean_shift", 1.0, None, CoatingTarget(6, "B"), 1.5)
    assert s.faults[1].end_s == 9.0 and s.faults[1].magnitude == 2.0
    assert s.faults[5].rate_hz == 0.5 and s.faults[5].magnitude == 8.0  # default spike size
    assert s.faults[7].target == FormationTarget(1, 2, "voltage")
    assert s.faults[8] == Fault("lot_effect", 1.0, None, None, -1.5)
    assert s.faults[9] == Fault("clock_skew", 2.0, 5.0, CoatingTarget(3, "A"), 1.5)
    assert s.faults[10] == Fault("clock_skew", 2.0, None, FormationTarget(2, 1, "voltage"), -3.0)
    assert s.faults[11] == Fault("recipe_changeover", 4.0, None, None, 21.5)
    assert s.faults[11].station == "coater" and s.faults[11].param == "areal_weight"
    assert s.faults[12] == Fault("recipe_changeover", 4.0, 8.0, CoatingTarget(2, "B"), 19.0)
    assert [f.kind for f in s.faults] == [
        "mean_shift", "linear_drift", "variance_increase", "stuck", "dropout", "spike",
        "bad_status", "calibration_offset", "lot_effect", "clock_skew", "clock_skew",
        "recipe_changeover", "recipe_changeover",
    ]


@pytest.mark.parametrize(
    ("fault", "problem"),
    [
        ("{kind: clock_skew, start_s: 1, offset_s: 1}",
         "faults[0]: a clock_skew fault needs a coating or formation target, not 'all'"),
        ("{kind: clock_skew, start_s: 1, target: {lane: 1, side: A}}",
         "faults[0].offset_s: is required"),
        ("{kind: recipe_changeover, start_s: 1, new_nominal: 0}",
         "faults[0].new_nominal: input should be greater than 0, got 0"),
        ("{kind: recipe_changeover, start_s: 1, new_nominal: 21,"
         " target: {cabinet: 1, channel: 1, param: voltage}}",
         "faults[0]: recipe_changeover needs a coating target (lane, side) or 'all' coating"
         " lanes"),
    ],
)
def test_the_new_kinds_reject_what_they_cannot_do(fault: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_scenario(f"name: x\nfaults:\n  - {fault}\n", "k.yaml")
    assert [str(p) for p in err.value.problems] == [f"k.yaml:3 {problem}"]


def test_a_broken_scenario_lists_each_problem_with_its_line() -> None:
    text = """name: broken
rate_hz: 0
sed: 4
faults:
  - kind: wobble
    start_s: 1
  - kind: spike
    start_s: 2
    target: {lane: 1, side: A}
  - kind: bad_status
    start_s: 5
    target: {cabinet: 1, channel: 1, param: voltage}
"""
    with pytest.raises(ConfigError) as err:
        parse_scenario(text, "b.yaml")
    lines = [str(p) for p in err.value.problems]
    assert lines[0] == "b.yaml:2 rate_hz: input should be greater than 0, got 0"
    assert lines[1] == "b.yaml:3 sed: is not a known key (a typo, or an option that does not exist)"
    assert lines[2].startswith("b.yaml:5 faults[0].kind: must be one of mean_shift, ")
    assert lines[3] == "b.yaml:7 faults[1].rate_hz: is required"
    assert lines[4] == (
        "b.yaml:10 faults[2]: bad_status needs a coating target (lane, side): only OPC UA has it"
    )
    assert len(lines) == 5


def test_a_target_outside_the_plant_is_a_problem_of_that_key() -> None:
    text = "name: x\nfaults:\n  - kind: stuck\n    start_s: 1\n    target: {lane: 5, side: A}\n"
    with pytest.raises(ConfigError) as err:
        parse_scenario(text, "x.yaml")
    assert [str(p) for p in err.value.problems] == [
        "x.yaml:5 faults[0].target.lane: must be at most plant.lanes (4), got 5"
    ]


@pytest.mark.parametrize("text", ["", "- a list", "name: [unclosed"])
def test_not_a_scenario_at_all(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_scenario(text, "n.yaml")
    assert len(err.value.problems) == 1
