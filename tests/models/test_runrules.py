"""Run rules: the contract, each rule on a handcrafted pattern, a slow reference, and ARLs.

Every rule is checked on a short sequence built to complete its pattern at a known sample and
nowhere before. The vectorized evaluation is compared with a plain per-sample reference written
straight from the rule definitions (NaN skips and line-stop restarts included). The in-control
average run lengths are checked against published values: 370.4 for rule 1 alone and 91.75 for
Western Electric rules 1-4 together (Champ & Woodall 1987), within four Monte-Carlo standard
errors of the mean run length.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import runrules
from models.detector import BaselineError, Detector, NotFittedError, ParameterError
from models.runrules import RunRules, RunRulesResult

ALL = RunRules.RULES
REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "spc_reference.json"
FIELDS = ("z", "fired", "signal")


def _known(rules: Any = ALL, tags: int = 1, **kwargs: Any) -> RunRules:
    return RunRules(rules=rules, **kwargs).fit_known(np.zeros(tags), np.ones(tags))


def _reference_data() -> dict[str, Any]:
    if not REFERENCE.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"reference data missing: {REFERENCE}")
        pytest.skip(f"reference data missing: {REFERENCE}")
    data: dict[str, Any] = json.loads(REFERENCE.read_text())
    return data


# -- contract --------------------------------------------------------------------------------


def test_follows_the_detector_contract() -> None:
    det = RunRules()
    assert isinstance(det, Detector)
    assert det.fit(np.random.default_rng(0).normal(size=(50, 2))) is det
    assert det.center_.shape == (2,) and det.sigma_.shape == (2,)
    assert RunRules.RULES == (
        "we1", "we2", "we3", "we4",
        "nelson1", "nelson2", "nelson3", "nelson4",
        "nelson5", "nelson6", "nelson7", "nelson8",
    )  # fmt: skip


def test_sigma_is_the_mean_moving_range_over_d2() -> None:
    x = np.tile([10.0, 12.0], 15)  # every moving range is 2
    x[3:5] = np.nan  # skipped samples do not break the moving ranges: 10, nan, nan, 12
    det = RunRules().fit(x)
    assert det.sigma_[0] == pytest.approx(2.0 / 1.128)
    assert det.center_[0] == pytest.approx(np.nanmean(x))


def test_update_before_fit_is_a_clear_error() -> None:
    with pytest.raises(
        NotFittedError,
        match=r"This RunRules is not fitted yet; call fit\(baseline\) before update.",
    ):
        RunRules().update(np.zeros((3, 1)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"rules": ("we1", "we9")},
            r"The 'rules' parameter of RunRules must be one of 'we1', 'we2', .*'nelson8'. "
            r"Got 'we9' instead.",
        ),
        ({"rules": "nelson9"}, r"'rules' parameter of RunRules must be .* Got 'nelson9' instead"),
        ({"rules": 4}, r"'rules' parameter of RunRules must be one of .* Got 4 instead"),
        ({"rules": ()}, r"'number of rules' parameter of RunRules must be an int >= 1. Got 0"),
        ({"min_baseline": 1}, r"'min_baseline' parameter of RunRules must be an int >= 2"),
        ({"max_gap_s": 0.0}, r"'max_gap_s' parameter of RunRules must be a float > 0. Got 0.0"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        RunRules(**kwargs)


def test_short_baseline_names_the_tag() -> None:
    x = np.random.default_rng(0).normal(size=(30, 2))
    x[7:, 1] = np.nan
    with pytest.raises(
        BaselineError, match="RunRules needs at least 20 baseline samples per tag; tag B2 has 7"
    ):
        RunRules().fit(x, tags=["B1", "B2"])


def test_flat_baseline_and_bad_known_sigma_are_rejected() -> None:
    with pytest.raises(BaselineError, match="baseline that varies; tag #0"):
        RunRules().fit(np.ones((30, 1)))
    with pytest.raises(BaselineError, match="sigma finite and > 0"):
        RunRules().fit_known([0.0, 0.0], [1.0, 0.0])


def test_parameters_unchanged_by_use_and_pickle_round_trip() -> None:
    det = RunRules(rules=["we1", "nelson4"], max_gap_s=5.0).fit(
        np.random.default_rng(1).normal(size=(40, 3))
    )
    before = (list(det.rules), det.min_baseline, det.max_gap_s)
    det.update(np.random.default_rng(2).normal(size=(10, 3)), times=np.arange(10.0))
    assert (det.rules, det.min_baseline, det.max_gap_s) == before
    clone = pickle.loads(pickle.dumps(det))
    nxt = np.random.default_rng(3).normal(size=(30, 3))
    t = 10.0 + np.arange(30.0)
    a, b = clone.update(nxt, times=t), det.update(nxt, times=t)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_reset_empties_the_windows_but_keeps_the_fit() -> None:
    det = _known(("we4",))
    run = np.full((5, 1), 0.5)
    assert not det.update(run).fired.any()
    assert det.update(run).fired[2, 0]  # 5 + 3 = 8 in a row
    det.reset()
    assert not det.update(run).fired.any()
    assert det.center_.tolist() == [0.0]


def test_names_reads_a_bitmask() -> None:
    det = RunRules()
    assert det.names(0) == []
    assert det.names(np.uint16(0b1001)) == ["we1", "we4"]
    assert det.names(1 << 11) == ["nelson8"]


# -- each rule on a handcrafted pattern ------------------------------------------------------

PATTERNS = [
    # rule, sequence of z values, index where it completes, all rules fired there, signal
    ("we1", [0.5, -0.5, 0.2, 3.5], 3, ["we1", "nelson1"], 1),
    ("nelson1", [0.5, -0.5, 0.2, -3.5], 3, ["we1", "nelson1"], -1),
    ("we2", [0.5, 2.5, -0.3, 2.5], 3, ["we2", "nelson5"], 1),
    ("nelson5", [-2.5, 0.0, -2.1], 2, ["we2", "nelson5"], -1),
    ("we3", [1.5, 0.2, 1.5, 1.5, 1.5], 4, ["we3", "nelson6"], 1),
    ("nelson6", [-1.5, -1.5, 0.9, -1.5, -1.5], 4, ["we3", "nelson6"], -1),
    ("we4", [-0.5, -0.6] * 4, 7, ["we4"], -1),
    ("nelson2", [0.5, 0.6] * 4 + [0.5], 8, ["we4", "nelson2"], 1),
    ("nelson3", [-0.9, -0.5, -0.1, 0.1, 0.5, 0.9], 5, ["nelson3"], 1),
    ("nelson3", [0.9, 0.5, 0.1, -0.1, -0.5, -0.9], 5, ["nelson3"], 1),
    ("nelson4", [0.3, -0.3] * 7, 13, ["nelson4"], 1),
    ("nelson7", [0.2, 0.4, -0.2, -0.4] * 3 + [0.2, 0.4, -0.2], 14, ["nelson7"], 1),
    ("nelson8", [1.5, -1.5] * 4, 7, ["nelson8"], 1),
]


@pytest.mark.parametrize(("rule", "seq", "index", "names", "side"), PATTERNS)
def test_each_rule_fires_where_its_pattern_completes(
    rule: str, seq: list[float], index: int, names: list[str], side: int
) -> None:
    x = np.array(seq)[:, None]
    alone = _known((rule,)).update(x)
    assert np.flatnonzero(alone.fired[:, 0]).tolist() == [index]
    assert alone.fired[index, 0] == 1 << ALL.index(rule)
    assert alone.signal[:, 0].tolist() == [0] * index + [side]
    det = _known()
    every = det.update(x)
    assert det.names(int(every.fired[index, 0])) == names
    # With every rule enabled, nothing but the expected rules fires up to there.
    assert all(set(det.names(int(b))) <= set(names) for b in every.fired[: index + 1, 0])


def test_a_continued_pattern_keeps_firing_and_a_broken_one_stops() -> None:
    x = np.array([0.5] * 10 + [-0.5] + [0.5] * 3)[:, None]
    res = _known(("we4",)).update(x)
    assert np.flatnonzero(res.fired[:, 0]).tolist() == [7, 8, 9]


def test_k_of_m_rules_fire_only_on_points_of_the_pattern() -> None:
    # The window at index 2 still holds two points beyond 2 sigma, but index 2 is not one.
    res = _known(("we2",)).update(np.array([2.5, 2.5, 0.0, 0.0])[:, None])
    assert np.flatnonzero(res.fired[:, 0]).tolist() == [1]


def test_repeated_values_break_trends_and_alternations() -> None:
    trend = np.array([-0.9, -0.5, -0.1, -0.1, 0.5, 0.9, 0.95])[:, None]
    assert not _known(("nelson3",)).update(trend).fired.any()
    saw = np.array([0.3, -0.3] * 3 + [-0.3] + [0.3, -0.3] * 4)[:, None]
    assert not _known(("nelson4",)).update(saw).fired.any()


# -- NaN and line stops ----------------------------------------------------------------------


def test_nan_samples_are_skipped_without_breaking_a_run() -> None:
    x = np.array([0.5, 0.6, np.nan, 0.5, 0.6, np.nan, np.nan, 0.5, 0.6, 0.5, 0.6])[:, None]
    res = _known(("we4",)).update(x)
    assert res.skipped.tolist() == [3]
    assert np.flatnonzero(res.fired[:, 0]).tolist() == [10]
    assert np.isnan(res.z[[2, 5, 6], 0]).all() and not res.signal[[2, 5, 6], 0].any()


def test_a_gap_longer_than_max_gap_restarts_the_windows() -> None:
    x = np.full((12, 2), 0.5)
    t = np.arange(12.0)
    t[4:] += 100.0  # the line stopped between samples 3 and 4
    stopped = _known(("we4",), tags=2, max_gap_s=30.0).update(x, times=t)
    assert np.flatnonzero(stopped.fired[:, 0]).tolist() == [11]  # 4..11 is the first 8-run
    no_gap_rule = _known(("we4",), tags=2).update(x, times=t)
    assert np.flatnonzero(no_gap_rule.fired[:, 0]).tolist() == [7, 8, 9, 10, 11]
    short = _known(("we4",), tags=2, max_gap_s=200.0).update(x, times=t)
    assert np.flatnonzero(short.fired[:, 0]).tolist() == [7, 8, 9, 10, 11]


def test_gaps_are_per_tag_and_count_from_the_last_usable_sample() -> None:
    x = np.full((10, 2), -0.5)
    x[1:8, 0] = np.nan  # tag 0 is silent for 7 samples, tag 1 reports throughout
    t = np.arange(10.0) * 10.0
    res = _known(("we2", "we4"), tags=2, max_gap_s=25.0).update(x, times=t)
    # Tag 0: 70 s between its usable samples 0 and 8 restarts it, so no run can form.
    assert not res.fired[:, 0].any() and res.skipped.tolist() == [7, 0]
    assert np.flatnonzero(res.fired[:, 1]).tolist() == [7, 8, 9]


def test_a_sample_without_a_usable_time_is_skipped() -> None:
    t = np.arange(8.0)
    t[3] = np.nan
    res = _known(("we4",), max_gap_s=5.0).update(np.full(8, 0.5), times=t)
    assert res.skipped.tolist() == [1] and np.isnan(res.z[3, 0])
    assert not res.fired.any()  # only 7 usable samples


def test_times_must_match_the_chunk() -> None:
    with pytest.raises(ValueError, match="times must be shaped like the chunk"):
        _known(tags=2, max_gap_s=5.0).update(np.zeros((4, 2)), times=np.zeros((3, 2)))


# -- the vectorized rules against a per-sample reference ---------------------------------------

_KIND = {
    "we1": ("beyond", 1, 3.0, 1), "nelson1": ("beyond", 1, 3.0, 1),
    "we2": ("beyond", 3, 2.0, 2), "nelson5": ("beyond", 3, 2.0, 2),
    "we3": ("beyond", 5, 1.0, 4), "nelson6": ("beyond", 5, 1.0, 4),
    "we4": ("side", 8), "nelson2": ("side", 9), "nelson3": ("trend", 6),
    "nelson4": ("alternate", 14), "nelson7": ("within", 15), "nelson8": ("outside", 8),
}  # fmt: skip


def _holds(rule: str, w: list[float]) -> int:
    """The side (+1/-1, or +1 without a side) if ``rule`` fires on the last value of ``w``."""
    kind, n, *rest = _KIND[rule]
    cur, last = w[-1], w[-n:]
    if kind == "beyond":
        a, k = rest
        if cur > a and sum(v > a for v in last) >= k:
            return 1
        return -1 if cur < -a and sum(v < -a for v in last) >= k else 0
    if len(w) < n:
        return 0
    steps = [b - a for a, b in zip(last, last[1:], strict=False)]
    if kind == "side":
        return 1 if all(v > 0 for v in last) else -1 if all(v < 0 for v in last) else 0
    if kind == "trend":
        return int(all(d > 0 for d in steps) or all(d < 0 for d in steps))
    if kind == "alternate":
        return int(all(a * b < 0 for a, b in zip(steps, steps[1:], strict=False)))
    if kind == "within":
        return int(all(abs(v) <= 1.0 for v in last))
    return int(all(abs(v) > 1.0 for v in last))


def _slow(z: np.ndarray, t: np.ndarray, gap: float, rules: tuple[str, ...]) -> tuple:
    fired = np.zeros(z.shape, dtype=np.uint16)
    signal = np.zeros(z.shape, dtype=np.int8)
    for j in range(z.shape[1]):
        window: list[float] = []
        prev_t = np.nan
        for i in range(z.shape[0]):
            if not (np.isfinite(z[i, j]) and np.isfinite(t[i, j])):
                continue
            if t[i, j] - prev_t > gap:
                window = []
            prev_t = t[i, j]
            window.append(float(z[i, j]))
            sides = {r: _holds(r, window) for r in rules}
            for r, s in sides.items():
                if s:
                    fired[i, j] |= 1 << ALL.index(r)
            sided = [s for r, s in sides.items() if s and _KIND[r][0] in ("beyond", "side")]
            signal[i, j] = sided[0] if sided else int(any(sides.values()))
    return fired, signal


def _patterned(seed: int, steps: int, tags: int) -> tuple[np.ndarray, np.ndarray]:
    """Data rich in patterns: drifts, sawtooth, quiet spells, ramps, ties, NaNs, stops."""
    rng = np.random.default_rng(seed)
    drift = np.cumsum(rng.normal(0.0, 0.4, size=(steps, tags)), axis=0) * 0.5
    saw = np.where(np.arange(steps)[:, None] % 2 == 0, 1.0, -1.0) * rng.uniform(
        0.2, 1.8, size=(steps, tags)
    )
    quiet = rng.normal(0.0, 0.4, size=(steps, tags))
    ramp = (np.arange(steps)[:, None] % 20 - 10) * 0.15 * rng.choice([-1.0, 1.0], size=tags)
    ramp = ramp + rng.normal(0.0, 0.06, size=(steps, tags))
    pick = rng.integers(0, 4, size=(steps // 20 + 1, tags)).repeat(20, axis=0)[:steps]
    z = np.choose(pick, [drift, saw, quiet, ramp])
    z = np.round(z * 20.0) / 20.0  # repeated values exercise the strict trend rules
    z[rng.random(z.shape) < 0.08] = np.nan
    t = np.cumsum(np.where(rng.random(z.shape) < 0.03, 50.0, 1.0), axis=0)
    t[rng.random(z.shape) < 0.01] = np.nan
    return z, t


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorized_rules_match_a_per_sample_reference(seed: int) -> None:
    z, t = _patterned(seed, steps=400, tags=5)
    fired, signal = _slow(z, t, 20.0, ALL)
    det = _known(ALL, tags=5, max_gap_s=20.0)
    res = det.update(z[:150], times=t[:150])
    rest = det.update(z[150:], times=t[150:])
    np.testing.assert_array_equal(np.vstack([res.fired, rest.fired]), fired)
    np.testing.assert_array_equal(np.vstack([res.signal, rest.signal]), signal)
    for rule in ALL:  # the data really exercises every rule
        assert (fired & (1 << ALL.index(rule))).any(), rule


@pytest.mark.parametrize("block", [1, 5, None])
@pytest.mark.parametrize("gap", [None, 20.0])
def test_clean_and_gappy_tags_together_match_the_per_sample_reference(
    block: int | None, gap: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tags 0-2 have no NaN and no stop (the plain sliding windows), tags 3-5 have both (the
    # compacted windows); rows are judged in blocks of ``block`` samples to cross block edges.
    if block is not None:
        monkeypatch.setattr(runrules, "_BLOCK", block)
    z, t = _patterned(4, steps=300, tags=6)
    z[:, :3] = np.where(np.isnan(z[:, :3]), 0.25, z[:, :3])
    t[:, :3] = np.arange(300.0)[:, None]
    if gap is None:  # times are ignored without max_gap_s
        fired, signal = _slow(z, np.zeros_like(t), np.inf, ALL)
    else:
        fired, signal = _slow(z, t, gap, ALL)
    det = _known(ALL, tags=6, max_gap_s=gap)
    parts = [det.update(z[a:b], times=t[a:b]) for a, b in [(0, 3), (3, 150), (150, 300)]]
    np.testing.assert_array_equal(_joined(parts, "fired"), fired)
    np.testing.assert_array_equal(_joined(parts, "signal"), signal)
    assert sum(p.skipped for p in parts)[:3].tolist() == [0, 0, 0]
    for rule in ALL:  # the clean tags really exercise every rule
        assert (fired[:, :3] & (1 << ALL.index(rule))).any(), rule


# -- chunk invariance --------------------------------------------------------------------------


def _joined(parts: list[RunRulesResult], name: str) -> np.ndarray:
    return np.vstack([getattr(p, name) for p in parts])


@settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(st.integers(0, 80), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
    gap=st.one_of(st.none(), st.sampled_from([5.0, 20.0])),
    rules=st.sampled_from([ALL, ("we1", "we2", "we3", "we4"), ("we1",), ("nelson4",)]),
)
def test_chunking_does_not_change_results(
    cuts: list[int], seed: int, gap: float | None, rules: tuple[str, ...]
) -> None:
    z, t = _patterned(seed, steps=80, tags=4)
    x = 3.0 + 2.0 * z
    whole = RunRules(rules=rules, max_gap_s=gap).fit_known(np.full(4, 3.0), np.full(4, 2.0))
    ref = whole.update(x, times=t)
    det = RunRules(rules=rules, max_gap_s=gap).fit_known(np.full(4, 3.0), np.full(4, 2.0))
    bounds = [0, *sorted(cuts), 80]
    parts = [det.update(x[a:b], times=t[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    for name in FIELDS:
        np.testing.assert_array_equal(_joined(parts, name), getattr(ref, name))
    assert sum(p.skipped for p in parts).tolist() == ref.skipped.tolist()
    assert ref.fired.dtype == np.uint16 and ref.signal.dtype == np.int8


# -- run lengths against published values -----------------------------------------------------


def _run_lengths(rules: tuple[str, ...], tags: int, chunk: int, seed: int) -> np.ndarray:
    """First-signal run lengths of in-control N(0, 1) data, fed in chunks until all signal."""
    det = _known(rules, tags=tags)
    rng = np.random.default_rng(seed)
    rl = np.zeros(tags, dtype=np.int64)
    done = np.zeros(tags, dtype=np.bool_)
    for start in range(0, 100 * chunk, chunk):
        sig = det.update(rng.normal(size=(chunk, tags))).signal != 0
        new = sig.any(axis=0) & ~done
        rl[new] = start + sig.argmax(axis=0)[new] + 1
        done |= new
        if done.all():
            return rl
    raise AssertionError("some runs never signalled; raise the number of chunks")


def test_in_control_arl_of_western_electric_rules_1_to_4() -> None:
    ref = _reference_data()["arl_western_electric_rules"]
    # The published 91.75 takes rule 4 as 8 in a row on one side (not Nelson's 9).
    assert "91.75" in json.dumps(ref["source"]) and "8 in a row" in ref["params"]["rule4"]
    rl = _run_lengths(("we1", "we2", "we3", "we4"), tags=20000, chunk=250, seed=21)
    se = rl.std(ddof=1) / np.sqrt(rl.size)
    assert abs(rl.mean() - 91.75) < 4 * se, (rl.mean(), se)


def test_in_control_arl_of_rule_1_alone() -> None:
    expected = _reference_data()["arl_western_electric_rules"]["expected"]["C1"]["0.0"]
    rl = _run_lengths(("we1",), tags=10000, chunk=500, seed=22)
    se = rl.std(ddof=1) / np.sqrt(rl.size)
    assert abs(rl.mean() - expected) < 4 * se, (rl.mean(), se)
