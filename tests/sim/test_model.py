"""The numeric models on injected times: reproducibility, noise levels, fault and the shape of
the formation protocol (CC, CV, rest, discharge)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.coating import AREAL_WEIGHT, DRYER_ZONES, WEB_SPEED, CoatingModel
from sim.fault import FaultSpec
from sim.formation import (
    CC_AMPS,
    CELL_TEMPERATURE,
    CV_CUTOFF_AMPS,
    CYCLE_S,
    DISCHARGE_AMPS,
    SLOT_H,
    V_CUTOFF,
    V_END,
    V_START,
    FormationModel,
)

T0 = 1_700_000_000.0


def _coating_run(seed: int, times: np.ndarray, fault: FaultSpec | None = None) -> np.ndarray:
    model = CoatingModel(seed=seed, lanes=4, fault=fault, start_ts=T0)
    rows = []
    for ts in times:
        s = model.sample(float(ts))
        rows.append(np.concatenate([s.areal_weight.ravel(), [s.web_speed], s.dryer]))
    return np.array(rows)


def _formation_run(seed: int, times: np.ndarray) -> np.ndarray:
    model = FormationModel(seed=seed, cabinets=2, channels=4, start_ts=T0)
    rows = []
    for ts in times:
        s = model.sample(float(ts))
        rows.append(np.stack([s.voltage, s.current, s.capacity, s.temperature]).ravel())
    return np.array(rows)


def test_same_seed_reproduces_the_same_sequence() -> None:
    times = T0 + np.arange(200) * 0.5
    assert np.array_equal(_coating_run(5, times), _coating_run(5, times))
    assert np.array_equal(_formation_run(5, times), _formation_run(5, times))
    assert not np.allclose(_coating_run(5, times), _coating_run(6, times))
    assert not np.allclose(_formation_run(5, times), _formation_run(6, times))


def test_coating_noise_matches_the_nominal_values() -> None:
    n = 4000
    data = _coating_run(11, T0 + np.arange(n) * 0.5)
    means = np.array([AREAL_WEIGHT.mean] * 8 + [WEB_SPEED.mean] + [z.mean for z in DRYER_ZONES])
    sigmas = np.array([AREAL_WEIGHT.sigma] * 8 + [WEB_SPEED.sigma] + [z.sigma for z in DRYER_ZONES])
    assert np.all(np.abs(data.mean(axis=0) - means) < 5 * sigmas / math.sqrt(n))
    # The sample standard deviation of n normal values has a relative SE of ~1/sqrt(2n).
    assert np.all(np.abs(data.std(axis=0, ddof=1) / sigmas - 1.0) < 5 / math.sqrt(2 * n))
    # Independent series: no pair of lanes is noticeably correlated.
    corr = np.corrcoef(data[:, :8], rowvar=False)
    assert np.max(np.abs(corr - np.eye(8))) < 5 / math.sqrt(n)


def test_fault_shifts_only_its_series_and_only_while_active() -> None:
    spec = FaultSpec(lane=3, side="A", shift_sigma=1.5, start_s=10.0, end_s=20.0)
    times = T0 + np.arange(600) * 0.05  # 0 .. 30 s after the start
    data = _coating_run(3, times, spec)
    rel = times - T0
    during = (rel >= 10.0) & (rel < 20.0)
    lane03_a = 2 * 2 + 0  # row-major (lane, side): lane 3 side A
    se_in = AREAL_WEIGHT.sigma / math.sqrt(during.sum())
    se_out = AREAL_WEIGHT.sigma / math.sqrt((~during).sum())
    shifted = AREAL_WEIGHT.mean + 1.5 * AREAL_WEIGHT.sigma
    assert abs(data[during, lane03_a].mean() - shifted) < 5 * se_in
    assert abs(data[~during, lane03_a].mean() - AREAL_WEIGHT.mean) < 5 * se_out
    for col in range(8):
        if col != lane03_a:
            assert abs(data[during, col].mean() - AREAL_WEIGHT.mean) < 5 * se_in, col


def test_fault_spec_identifies_its_series_and_writes_ground_truth() -> None:
    spec = FaultSpec()
    assert (spec.lane, spec.side, spec.param, spec.start_s) == (3, "A", "areal_weight", 40.0)
    assert spec.tag == "lane03_A areal weight"
    record = spec.record(T0, AREAL_WEIGHT.sigma)
    assert record["kind"] == "mean_shift"
    assert record["tags"] == [
        {"line": "line1", "station": "coater", "equipment": "lane03_A", "param": "areal_weight"}
    ]
    assert record["start_ts"] == T0 + 40.0
    assert record["end_ts"] is None
    assert record["parameters"]["shift_sigma"] == 1.5
    assert record["parameters"]["shift"] == pytest.approx(0.15)
    assert record["parameters"]["sigma"] == 0.1
    assert not spec.active(39.99) and spec.active(40.0) and spec.active(1e6)


@pytest.mark.parametrize(
    "kwargs",
    [{"lane": 0}, {"side": "C"}, {"param": "web_speed"}, {"start_s": -1.0}, {"end_s": 40.0}],
)
def test_fault_spec_rejects_nonsense(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        FaultSpec(**kwargs)


def test_coating_model_rejects_a_fault_on_a_missing_lane() -> None:
    with pytest.raises(ValueError, match="lane 5"):
        CoatingModel(lanes=4, fault=FaultSpec(lane=5))


def _steps(current: np.ndarray) -> list[str]:
    """Run-length step names read from the current alone."""
    names = np.select(
        [current == CC_AMPS, current > 0, current == -DISCHARGE_AMPS, current == 0],
        ["CC", "CV", "DIS", "REST"],
        "?",
    )
    return [str(x) for k, x in enumerate(names) if k == 0 or x != names[k - 1]]


def test_formation_follows_the_cc_cv_rest_discharge_protocol() -> None:
    model = FormationModel(seed=1, cabinets=1, channels=1, start_ts=T0)
    result = model.result(0)  # one channel: cell 0 has the first slot
    tau = np.arange(0.0, CYCLE_S, 0.01)
    ideal = [model.ideal(T0 + t) for t in tau]
    v = np.array([x[0].item() for x in ideal])
    i = np.array([x[1].item() for x in ideal])
    q = np.array([x[2].item() for x in ideal])
    assert _steps(i) == ["CC", "CV", "REST", "DIS", "REST"]
    cc, cv, dis = i == CC_AMPS, (i > 0) & (i < CC_AMPS), i < 0
    rest = (i == 0) & (tau < tau[dis][0])
    idle = (i == 0) & (tau > tau[dis][-1])
    # CC: the voltage climbs from the start value to just under the upper cut-off.
    assert v[0] == pytest.approx(V_START) and np.all(np.diff(v[cc]) > 0)
    assert v[cc][-1] < V_END and v[cc][-1] > V_END - 0.01
    # CV: held at the upper cut-off while the current decays to the cut-off current.
    assert np.all(v[cv] == V_END) and np.all(np.diff(i[cv]) < 0)
    assert CV_CUTOFF_AMPS <= i[cv][-1] < 1.01 * CV_CUTOFF_AMPS
    # Rest: the voltage relaxes below the upper cut-off.
    assert np.all(v[rest] < V_END) and np.all(np.diff(v[rest]) < 0)
    # Discharge: the voltage falls to the lower cut-off, where the step ends at end_ts.
    assert np.all(np.diff(v[dis]) < 0) and V_CUTOFF <= v[dis][-1] < V_CUTOFF + 0.01
    assert abs(T0 + tau[dis][-1] - result.end_ts) <= 0.01
    # Idle after the cut-off: no current, the voltage rebounds.
    assert np.all(np.diff(v[idle]) > 0) and np.all(v[idle] > V_CUTOFF)
    # Capacity is the throughput of the step: rising through the CCCV charge, 0 at rest,
    # rising through the discharge, 0 again when idle.
    charge = cc | cv
    assert q[0] == 0.0 and np.all(np.diff(q[charge]) > 0)
    assert np.all(q[rest] == 0.0) and np.all(np.diff(q[dis]) > 0) and np.all(q[idle] == 0.0)
    assert q[charge][-1] == pytest.approx(result.charge_ah, rel=1e-3)
    assert q[dis][-1] == pytest.approx(result.discharge_ah, rel=1e-3)
    # ... and it is the integral of the current (trapezoid over the sampled charge).
    ah_per_amp_s = SLOT_H / CYCLE_S  # process hours per wall second, at speed 1
    integral = np.concatenate([[0.0], np.cumsum((i[charge][1:] + i[charge][:-1]) / 2 * 0.01)])
    assert np.allclose(q[charge], integral * ah_per_amp_s, rtol=1e-3, atol=1e-3)
    # The next cell starts empty at the start of the next slot.
    v1, i1, q1 = (x.item() for x in model.ideal(T0 + CYCLE_S))
    assert v1 == pytest.approx(V_START) and i1 == CC_AMPS and q1 == 0.0


def test_formation_channels_are_out_of_phase_and_temperature_is_stationary() -> None:
    model = FormationModel(seed=2, cabinets=2, channels=4, start_ts=T0)
    starts = sorted(model.slot(n).start_ts for n in range(8))
    assert np.allclose(np.diff(starts), CYCLE_S / 8)  # one channel starts a cell every 15 s
    assert {(model.slot(n).cabinet, model.slot(n).channel) for n in range(8)} == {
        (c, h) for c in (1, 2) for h in range(1, 5)
    }
    v, _, _ = model.ideal(T0 + 30.0)
    assert len(np.unique(np.round(v, 6))) == 8  # every channel at another point of its cycle
    temps = np.array([model.sample(T0 + k * 0.5).temperature for k in range(500)])
    assert temps.shape == (500, 2, 4)
    se = CELL_TEMPERATURE.sigma / math.sqrt(temps.size)
    assert abs(temps.mean() - CELL_TEMPERATURE.mean) < 5 * se
    first, second = temps[:250].mean(), temps[250:].mean()
    se_diff = CELL_TEMPERATURE.sigma * math.sqrt(2 / (250 * 8))
    assert abs(first - second) < 5 * se_diff
