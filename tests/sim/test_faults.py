"""Every fault kind on the numeric models with injected times: the effect is where the ground
truth record says (its tags, its window) and nowhere else. Tolerances are 5 standard errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from sim.coating import AREAL_WEIGHT, CoatingModel
from sim.fault import CoatingTarget, Fault, FormationTarget
from sim.formation import CAPACITY, CELL_TEMPERATURE, VOLTAGE, FormationModel
from sim.simulator import DEFAULT_FAULT, Simulator

T0 = 1_700_000_000.0
DT = 0.05
N = 600  # 0 .. 30 s after the start
START, END = 10.0, 20.0
TIMES = T0 + np.arange(N) * DT
REL = TIMES - T0
SIGMA = AREAL_WEIGHT.sigma
COAT = CoatingTarget(2, "B")
FORM = FormationTarget(2, 3, "cell_temperature")


def _index(equipment: str) -> tuple[int, int]:
    """Array cell of an equipment id from the ground truth: lane02_B -> (1, 1)."""
    if equipment.startswith("lane"):
        return int(equipment[4:6]) - 1, "AB".index(equipment[-1])
    return int(equipment[3:5]) - 1, int(equipment[-2:]) - 1


def _window(record: dict[str, Any]) -> np.ndarray:
    end = np.inf if record["end_ts"] is None else record["end_ts"]
    return (TIMES >= record["start_ts"]) & (TIMES < end)


def _coating(fault: Fault, seed: int = 3) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Areal weights (N, lanes, 2), bad masks (N, lanes, 2) and the fault's ground truth."""
    model = CoatingModel(seed=seed, lanes=4, start_ts=T0, faults=[fault])
    weights, bad = [], []
    for ts in TIMES:
        s = model.sample(float(ts))
        weights.append(s.areal_weight)
        bad.append(np.zeros((4, 2), bool) if s.bad is None else s.bad)
    return np.array(weights), np.array(bad), fault.record(T0, sigma=SIGMA)


def _formation(fault: Fault, seed: int = 4) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Samples and noise-free values (N, 2, 4) per parameter, and the fault's ground truth."""
    model = FormationModel(seed=seed, cabinets=2, channels=4, start_ts=T0, faults=[fault])
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("v", "i", "q", "t", "q_ideal", "v_ideal")}
    for ts in TIMES:
        s = model.sample(float(ts))
        v, _, q = model.ideal(float(ts))
        for key, arr in (("v", s.voltage), ("i", s.current), ("q", s.capacity)):
            out[key].append(arr)
        out["t"].append(s.temperature)
        out["q_ideal"].append(q)
        out["v_ideal"].append(v)
    return {k: np.array(v) for k, v in out.items()}, fault.record(T0, 2, 4)


def _target_and_others(record: dict[str, Any]) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    (tag,) = record["tags"]
    target = _index(tag["equipment"])
    others = [(r, c) for r in range(2 if tag["station"] == "formation" else 4)
              for c in range(4 if tag["station"] == "formation" else 2) if (r, c) != target]
    return target, others


def _near(values: np.ndarray, expected: float, sigma: float) -> bool:
    return abs(float(values.mean()) - expected) < 5 * sigma / math.sqrt(values.size)


def test_mean_shift_on_a_coating_lane() -> None:
    w, _, rec = _coating(Fault("mean_shift", START, END, COAT, magnitude=2.0))
    during = _window(rec)
    (r, c), others = _target_and_others(rec)
    assert rec["tags"][0]["equipment"] == "lane02_B" and during.sum() == 200
    assert _near(w[during, r, c], AREAL_WEIGHT.mean + rec["parameters"]["shift"], SIGMA)
    assert _near(w[~during, r, c], AREAL_WEIGHT.mean, SIGMA)
    for o in others:
        assert _near(w[during, o[0], o[1]], AREAL_WEIGHT.mean, SIGMA), o


def test_mean_shift_on_a_formation_channel() -> None:
    f, rec = _formation(Fault("mean_shift", START, END, FORM, magnitude=2.0))
    during = _window(rec)
    (r, c), others = _target_and_others(rec)
    sigma = CELL_TEMPERATURE.sigma
    assert rec["tags"][0] == {
        "line": "line1", "station": "formation", "equipment": "cab02-ch03",
        "param": "cell_temperature",
    }
    assert _near(f["t"][during, r, c], CELL_TEMPERATURE.mean + 2 * sigma, sigma)
    assert _near(f["t"][~during, r, c], CELL_TEMPERATURE.mean, sigma)
    for o in others:
        assert _near(f["t"][during, o[0], o[1]], CELL_TEMPERATURE.mean, sigma), o


def test_linear_drift_grows_from_the_start() -> None:
    w, _, rec = _coating(Fault("linear_drift", START, END, COAT, magnitude=6.0))
    during = _window(rec)
    (r, c), others = _target_and_others(rec)
    slope = rec["parameters"]["slope"]  # mg/cm2 per minute
    assert slope == pytest.approx(6.0 * SIGMA)
    minutes = (TIMES[during] - rec["start_ts"]) / 60.0
    detrended = w[during, r, c] - slope * minutes
    assert _near(detrended, AREAL_WEIGHT.mean, SIGMA)
    # The drift is really there: half a sigma on average over the window, ten times the SE.
    assert w[during, r, c].mean() - AREAL_WEIGHT.mean > 0.3 * SIGMA
    late, early = during & (REL >= 15.0), during & (REL < 15.0)
    assert w[late, r, c].mean() - w[early, r, c].mean() > 0.3 * SIGMA
    assert _near(w[~during, r, c], AREAL_WEIGHT.mean, SIGMA)
    for o in others:
        assert _near(w[during, o[0], o[1]], AREAL_WEIGHT.mean, SIGMA), o


def test_variance_increase_scales_the_noise_only() -> None:
    w, _, rec = _coating(Fault("variance_increase", START, END, COAT, magnitude=3.0))
    during = _window(rec)
    (r, c), others = _target_and_others(rec)
    n_in, n_out = during.sum(), (~during).sum()
    assert abs(w[during, r, c].std(ddof=1) / (3 * SIGMA) - 1) < 5 / math.sqrt(2 * n_in)
    assert _near(w[during, r, c], AREAL_WEIGHT.mean, 3 * SIGMA)
    assert abs(w[~during, r, c].std(ddof=1) / SIGMA - 1) < 5 / math.sqrt(2 * n_out)
    for o in others:
        assert abs(w[during, o[0], o[1]].std(ddof=1) / SIGMA - 1) < 5 / math.sqrt(2 * n_in), o


def test_stuck_repeats_the_first_value_of_the_window() -> None:
    w, _, rec = _coating(Fault("stuck", START, END, COAT))
    during = _window(rec)
    (r, c), others = _target_and_others(rec)
    frozen = w[during, r, c]
    assert np.all(frozen == frozen[0])
    assert abs(frozen[0] - AREAL_WEIGHT.mean) < 5 * SIGMA
    assert len(np.unique(w[~during, r, c])) == (~during).sum()
    for o in others:
        assert len(np.unique(w[during, o[0], o[1]])) == during.sum(), o


def test_dropout_on_a_coating_lane_publishes_nothing_in_the_window() -> None:
    w, _, rec = _coating(Fault("dropout", START, END, COAT))
    during = _window(rec)
    (r, c), others = _target_and_others(rec)
    assert np.all(np.isnan(w[during, r, c]))
    assert not np.any(np.isnan(w[~during, r, c]))
    for o in others:
        assert not np.any(np.isnan(w[:, o[0], o[1]])), o


def test_dropout_on_a_formation_channel_silences_the_whole_channel() -> None:
    f, rec = _formation(Fault("dropout", START, END, FormationTarget(1, 2, "voltage")))
    during = _window(rec)
    assert {t["param"] for t in rec["tags"]} == {"voltage", "current", "capacity",
                                                  "cell_temperature"}
    assert {t["equipment"] for t in rec["tags"]} == {"cab01-ch02"}
    for key in ("v", "i", "q", "t"):
        assert np.all(np.isnan(f[key][during, 0, 1])), key
        assert not np.any(np.isnan(f[key][~during, 0, 1])), key
        nan_cells = np.isnan(f[key]).any(axis=0)
        assert nan_cells.sum() == 1, key


def test_spikes_come_at_the_rate_and_only_in_the_window() -> None:
    rate = 2.0
    w, _, rec = _coating(Fault("spike", START, END, COAT, magnitude=10.0, rate_hz=rate))
    during = _window(rec)
    (r, c), others = _target_and_others(rec)
    z = np.abs(w[:, r, c] - AREAL_WEIGHT.mean) / SIGMA
    expected = rate * (END - START)  # Poisson, mean 20
    assert abs((z[during] > 5).sum() - expected) < 5 * math.sqrt(expected)
    assert (z[~during] > 5).sum() == 0
    for o in others:
        assert (np.abs(w[:, o[0], o[1]] - AREAL_WEIGHT.mean) > 5 * SIGMA).sum() == 0, o
    assert rec["parameters"]["rate_hz"] == rate and rec["parameters"]["size"] == 10 * SIGMA


def test_bad_status_marks_the_target_in_the_window_and_keeps_the_value() -> None:
    w, bad, rec = _coating(Fault("bad_status", START, END, COAT))
    during = _window(rec)
    (r, c), _ = _target_and_others(rec)
    assert np.all(bad[during, r, c]) and not np.any(bad[~during, r, c])
    assert bad.sum() == during.sum()  # nothing else is bad
    assert _near(w[during, r, c], AREAL_WEIGHT.mean, SIGMA)


def test_calibration_offset_moves_one_channel_by_its_offset() -> None:
    target = FormationTarget(2, 3, "voltage")
    f, rec = _formation(Fault("calibration_offset", START, END, target, magnitude=0.01))
    during = _window(rec)
    (r, c), others = _target_and_others(rec)
    assert rec["parameters"] == {"offset": 0.01}
    err = f["v"] - f["v_ideal"]
    assert _near(err[during, r, c], 0.01, VOLTAGE.sigma)
    assert _near(err[~during, r, c], 0.0, VOLTAGE.sigma)
    for o in others:
        assert _near(err[during, o[0], o[1]], 0.0, VOLTAGE.sigma), o


def test_lot_effect_scales_the_capacity_of_every_channel() -> None:
    f, rec = _formation(Fault("lot_effect", START, END, None, magnitude=-2.0))
    during = _window(rec)
    assert len(rec["tags"]) == 8 and {t["param"] for t in rec["tags"]} == {"capacity"}
    q, ideal = f["q"], f["q_ideal"]
    away_from_zero = ideal > 0.05  # the reading is clipped at 0 Ah right after a reset
    for cab, ch in (_index(t["equipment"]) for t in rec["tags"]):
        sel_in = during & away_from_zero[:, cab, ch]
        sel_out = ~during & away_from_zero[:, cab, ch]
        scaled = q[sel_in, cab, ch] - 0.98 * ideal[sel_in, cab, ch]
        assert _near(scaled, 0.0, CAPACITY.sigma), (cab, ch)
        # Unscaled, the same samples are far off: 2 % of about 1 Ah against an SE of 0.1 mAh.
        assert (q[sel_in, cab, ch] - ideal[sel_in, cab, ch]).mean() < -0.005
        assert _near(q[sel_out, cab, ch] - ideal[sel_out, cab, ch], 0.0, CAPACITY.sigma)


def test_clock_skew_moves_the_coating_source_time_and_not_the_values() -> None:
    fault = Fault("clock_skew", START, END, COAT, magnitude=2.5)
    quiet = CoatingModel(seed=3, lanes=4, start_ts=T0)
    skewed = CoatingModel(seed=3, lanes=4, start_ts=T0, faults=[fault])
    rec = fault.record(T0, sigma=SIGMA, unit="mg/cm2")
    during = _window(rec)
    (r, c), _ = _target_and_others(rec)
    offsets = np.zeros((N, 4, 2))
    for k, ts in enumerate(TIMES):
        a, b = quiet.sample(float(ts)), skewed.sample(float(ts))
        assert np.array_equal(a.areal_weight, b.areal_weight) and b.bad is None
        if b.skew is not None:
            offsets[k] = b.skew
    assert np.all(offsets[during, r, c] == 2.5)
    assert not np.any(offsets[~during, r, c])
    offsets[:, r, c] = 0.0
    assert not np.any(offsets)  # no other series' clock is off
    assert rec["parameters"] == {"offset_s": 2.5, "unit": "s"}
    assert [t["equipment"] for t in rec["tags"]] == ["lane02_B"]


def test_clock_skew_on_a_formation_channel_moves_its_whole_timestamp() -> None:
    fault = Fault("clock_skew", START, END, FormationTarget(1, 4, "voltage"), magnitude=-1.5)
    quiet = FormationModel(seed=4, start_ts=T0)
    skewed = FormationModel(seed=4, start_ts=T0, faults=[fault])
    rec = fault.record(T0, 2, 4)
    during = _window(rec)
    assert {t["equipment"] for t in rec["tags"]} == {"cab01-ch04"}
    assert {t["param"] for t in rec["tags"]} == {"voltage", "current", "capacity",
                                                  "cell_temperature"}
    for k, ts in enumerate(TIMES):
        a, b = quiet.sample(float(ts)), skewed.sample(float(ts))
        for x, y in ((a.voltage, b.voltage), (a.capacity, b.capacity),
                     (a.temperature, b.temperature)):
            assert np.array_equal(x, y)
        if during[k]:
            assert b.skew is not None and b.skew[0, 3] == -1.5
            assert np.count_nonzero(b.skew) == 1
        else:
            assert b.skew is None


def test_recipe_changeover_moves_every_lane_to_the_new_nominal() -> None:
    new = AREAL_WEIGHT.mean + 5 * SIGMA
    fault = Fault("recipe_changeover", START, None, None, magnitude=new)
    w, bad, _ = _coating(fault)
    rec = fault.record(T0, sigma=SIGMA, unit="mg/cm2", lanes=4, mean=AREAL_WEIGHT.mean)
    during = _window(rec)
    assert rec["end_ts"] is None and during.sum() == N - 200
    assert rec["parameters"]["old_nominal"] == AREAL_WEIGHT.mean
    assert rec["parameters"]["new_nominal"] == new
    assert len(rec["tags"]) == 8 and {t["param"] for t in rec["tags"]} == {"areal_weight"}
    assert not bad.any()
    for tag in rec["tags"]:
        r, c = _index(tag["equipment"])
        assert _near(w[during, r, c], new, SIGMA), tag
        assert _near(w[~during, r, c], AREAL_WEIGHT.mean, SIGMA), tag
        # Only the mean moves: the noise stays that of the process.
        assert abs(w[during, r, c].std(ddof=1) / SIGMA - 1) < 5 / math.sqrt(2 * during.sum())


def test_recipe_changeover_of_one_series_ends_at_its_end() -> None:
    new = AREAL_WEIGHT.mean - 3 * SIGMA
    w, _, rec = _coating(Fault("recipe_changeover", START, END, COAT, magnitude=new))
    during = _window(rec)
    (r, c), others = _target_and_others(rec)
    assert rec["parameters"]["new_nominal"] == new
    assert _near(w[during, r, c], new, SIGMA)
    assert _near(w[~during, r, c], AREAL_WEIGHT.mean, SIGMA)
    for o in others:
        assert _near(w[:, o[0], o[1]], AREAL_WEIGHT.mean, SIGMA), o


def test_a_shift_after_a_changeover_acts_around_the_new_nominal() -> None:
    new = AREAL_WEIGHT.mean + 10 * SIGMA
    faults = [
        Fault("variance_increase", START, END, COAT, magnitude=2.0),
        Fault("recipe_changeover", START, None, None, magnitude=new),
    ]
    model = CoatingModel(seed=6, lanes=4, start_ts=T0, faults=faults)
    w = np.array([model.sample(float(ts)).areal_weight for ts in TIMES])
    during = (REL >= START) & (REL < END)
    assert _near(w[during, 1, 1], new, 2 * SIGMA)
    assert abs(w[during, 1, 1].std(ddof=1) / (2 * SIGMA) - 1) < 5 / math.sqrt(2 * during.sum())


def test_faults_with_spikes_reproduce_with_the_seed() -> None:
    fault = Fault("spike", START, END, COAT, magnitude=10.0, rate_hz=2.0)
    a, _, _ = _coating(fault, seed=9)
    b, _, _ = _coating(fault, seed=9)
    c, _, _ = _coating(fault, seed=10)
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_a_fault_leaves_the_other_series_unchanged() -> None:
    quiet = CoatingModel(seed=5, lanes=4, start_ts=T0)
    faulty = CoatingModel(seed=5, lanes=4, start_ts=T0, faults=[
        Fault("spike", 0.0, None, COAT, magnitude=10.0, rate_hz=5.0)])
    for ts in TIMES[:100]:
        a, b = quiet.sample(float(ts)), faulty.sample(float(ts))
        mask = np.ones((4, 2), bool)
        mask[1, 1] = False
        assert np.array_equal(a.areal_weight[mask], b.areal_weight[mask])
        assert a.web_speed == b.web_speed


def test_speed_compresses_the_formation_cycle_only() -> None:
    slow = FormationModel(seed=1, start_ts=T0)
    fast = FormationModel(seed=1, start_ts=T0, speed=4.0)
    for t in (3.0, 17.5, 29.0, 95.0):
        for a, b in zip(slow.ideal(T0 + t), fast.ideal(T0 + t / 4.0), strict=True):
            assert np.allclose(a, b)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "wobble", "target": COAT},
        {"kind": "stuck", "target": None},
        {"kind": "lot_effect", "target": FORM},
        {"kind": "bad_status", "target": FORM},
        {"kind": "calibration_offset", "target": COAT},
        {"kind": "spike", "target": COAT, "rate_hz": 0.0},
        {"kind": "variance_increase", "target": COAT, "magnitude": 0.0},
        {"kind": "stuck", "target": COAT, "end_s": 1.0},
        {"kind": "clock_skew", "target": None, "magnitude": 1.0},
        {"kind": "recipe_changeover", "target": FORM, "magnitude": 21.0},
        {"kind": "recipe_changeover", "target": None, "magnitude": 0.0},
    ],
)
def test_fault_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Fault(start_s=5.0, **kwargs)


def test_simulator_fault_and_faults_combine_as_documented() -> None:
    drift = Fault("linear_drift", 1.0, None, COAT, magnitude=1.0)
    assert Simulator(broker_url=None).faults == (DEFAULT_FAULT.to_fault(),)
    assert Simulator(broker_url=None, fault=None).faults == ()
    assert Simulator(broker_url=None, faults=[drift]).faults == (drift,)
    both = Simulator(broker_url=None, fault=DEFAULT_FAULT.__class__(start_s=5.0), faults=[drift])
    assert [f.kind for f in both.faults] == ["mean_shift", "linear_drift"]
