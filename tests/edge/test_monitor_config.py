"""Detector configuration: every mistake names its key path, what is allowed and what was given."""

from __future__ import annotations

import typing

import pytest

from models.configfile import ConfigError, parse_plant
from models.plant import DETECTOR_KEYS, DetectorConfig, RunRule
from models.runrules import RunRules

PLANT = """\
site: {id: p}
lines:
  - id: l1
    area: a
    stations:
      - id: coater
        params:
          - id: weight
            detector: %s
"""
WHERE = "x.yaml:9 lines[0].stations[0].params[0].detector"


@pytest.mark.parametrize(
    ("detector", "problem"),
    [
        (
            "{kind: cusum, lam: 0.2}",
            ".lam: is not a key of a cusum detector (its keys: k, h, head_start, baseline, center, "
            "sigma), got 0.2",
        ),
        (
            "{kind: stuck, baseline: 20}",
            ".baseline: is not a key of a stuck detector (its keys: n, tolerance), got 20",
        ),
        (
            "{kind: ewma, rules: [we1]}",
            ".rules: is not a key of a ewma detector (its keys: lam, "
            "L, limits, baseline, center, sigma), got ('we1',)",
        ),
        (
            "{kind: xbar}",
            ".kind: must be one of 'ewma', 'cusum', 'shewhart' or 'stuck', got 'xbar'",
        ),
        (
            "{kind: shewhart, rules: [we2, we9]}",
            ".rules[1]: must be one of 'we1', 'we2', 'we3', "
            "'we4', 'nelson1', 'nelson2', 'nelson3', 'nelson4', 'nelson5', 'nelson6', 'nelson7' "
            "or 'nelson8', got 'we9'",
        ),
        (
            "{kind: shewhart, rules: [we2, we2]}",
            ".rules: must name each rule once, got ['we2', 'we2']",
        ),
        (
            "{kind: shewhart, max_gap_s: 30}",
            ".max_gap_s: applies to run rules only; give rules too, got 30.0",
        ),
        ("{kind: shewhart, rules: [we4], max_gap_s: 0}", ".max_gap_s: must be > 0.0, got 0"),
        ("{kind: cusum, h: 0}", ".h: must be > 0.0, got 0"),
        ("{kind: cusum, k: -0.5}", ".k: must be >= 0.0, got -0.5"),
        ("{kind: cusum, h: 4, head_start: 4}", ".head_start: must be below h (4.0), got 4.0"),
        ("{kind: shewhart, L: .inf}", ".L: must be a number, got inf"),
        ("{kind: cusum, center: .nan, sigma: 1}", ".center: must be a number, got nan"),
        ("{kind: stuck, n: 0}", ".n: must be >= 1, got 0"),
        ("{kind: stuck, tolerance: -1}", ".tolerance: must be >= 0.0, got -1"),
        ("{kind: cusum, baseline: 1}", ".baseline: must be >= 2, got 1"),
    ],
)
def test_a_bad_detector_is_reported_with_its_key_path(detector: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_plant(PLANT % detector, "x.yaml")
    assert [str(p) for p in info.value.problems] == [WHERE + problem]


def test_the_config_knows_exactly_the_run_rules_of_the_detector() -> None:
    assert typing.get_args(RunRule) == RunRules.RULES


def test_each_kind_takes_its_documented_keys_and_defaults() -> None:
    assert set(DETECTOR_KEYS) == set(
        typing.get_args(DetectorConfig.model_fields["kind"].annotation)
    )
    every = {k for keys in DETECTOR_KEYS.values() for k in keys} | {"kind"}
    assert every == set(DetectorConfig.model_fields)
    one = DetectorConfig.model_validate({"kind": "shewhart", "rules": "we1"})
    assert (one.rules, one.L, one.baseline, one.needs_baseline) == (("we1",), 3.0, 30, True)
    stuck = DetectorConfig.model_validate({"kind": "stuck"})
    assert (stuck.n, stuck.tolerance, stuck.needs_baseline) == (10, 0.0, False)
    cusum = DetectorConfig.model_validate({"kind": "cusum", "center": 1.0, "sigma": 0.1})
    assert (cusum.k, cusum.h, cusum.head_start, cusum.needs_baseline) == (0.5, 5.0, 0.0, False)
