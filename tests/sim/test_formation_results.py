"""Per-cell formation results: bookkeeping against the curves, the cell population, independence
of speed and sample rate, the lot effect and calibration offsets, channel look-ups, cabinet power
and the result payload. Statistical tolerances are 5 standard errors."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np
import pytest

from sim.fault import Fault, FormationTarget
from sim.formation import (
    AUX_KW,
    CAPACITY,
    CC_AMPS,
    CELL_TEMPERATURE,
    CURRENT,
    CYCLE_S,
    DISCHARGE_AMPS,
    ETA_CONV,
    ETA_REC,
    SLOT_H,
    VOLTAGE,
    CellResult,
    FormationModel,
    result_payload,
)
from sim.genealogy import Genealogy

T0 = 1_700_000_000.0
#: Points per slot of the numerical integrations. The curves are smooth inside a step; each of
#: the at most four current jumps of a slot costs the midpoint rule at most |jump| x step.
POINTS = 30_000
DH = SLOT_H / POINTS  # process hours per point
AH_TOL = 4 * max(CC_AMPS, DISCHARGE_AMPS) * DH
WH_TOL = 4.3 * AH_TOL  # volts stay below 4.3 V

#: The population the model draws from (the statistical tests check the results against it).
CAPACITY_MEAN_AH, CAPACITY_SIGMA_AH = 10.15, 0.06
FCE_MEAN, FCE_SIGMA = 0.89, 0.01


@dataclasses.dataclass
class Curves:
    """Noise-free curves of one single-channel slot sampled at midpoints."""

    model: FormationModel
    n: int
    ts: np.ndarray
    v: np.ndarray
    i: np.ndarray
    q: np.ndarray
    power: np.ndarray


@pytest.fixture(scope="module")
def curves() -> Curves:
    model = FormationModel(seed=7, cabinets=1, channels=1, start_ts=T0)
    n = 3  # one channel: cell n fills slot n, starting at T0 + n * CYCLE_S
    slot = model.slot(n)
    assert slot.start_ts == pytest.approx(T0 + n * CYCLE_S)
    ts = slot.start_ts + (np.arange(POINTS) + 0.5) * (CYCLE_S / POINTS)
    rows = np.array([np.ravel(model.ideal(float(t))) for t in ts])
    power = np.array([model.cabinet_power_kw(float(t))[0] for t in ts])
    return Curves(model, n, ts, rows[:, 0], rows[:, 1], rows[:, 2], power)


def _integrate(
    c: Curves, window: tuple[float, float] | None = None, param: str = "", m: float = 0.0
) -> dict[str, float]:
    """Ah and Wh a cycler reports for the slot, from the curves; a calibration ``m`` on
    ``param`` is added to the readings inside ``window`` (epoch seconds)."""
    v, i = c.v.copy(), c.i.copy()
    charging, discharging = c.i > 0, c.i < 0
    if window is not None:
        inside = (c.ts >= window[0]) & (c.ts < window[1])
        if param == "current":
            i[inside] += m
        elif param == "voltage":
            v[inside] += m
    return {
        "charge_ah": float(i[charging].sum() * DH),
        "discharge_ah": float(-i[discharging].sum() * DH),
        "energy_charged_wh": float((v * i)[charging].sum() * DH),
        "energy_discharged_wh": float(-(v * i)[discharging].sum() * DH),
    }


def test_results_match_a_numerical_integration_of_the_curves(curves: Curves) -> None:
    r = curves.model.result(curves.n)
    ref = _integrate(curves)
    assert r.charge_ah == pytest.approx(ref["charge_ah"], abs=AH_TOL)
    assert r.discharge_ah == pytest.approx(ref["discharge_ah"], abs=AH_TOL)
    assert r.energy_charged_wh == pytest.approx(ref["energy_charged_wh"], abs=WH_TOL)
    assert r.energy_discharged_wh == pytest.approx(ref["energy_discharged_wh"], abs=WH_TOL)
    assert r.fce == pytest.approx(r.discharge_ah / r.charge_ah, rel=1e-12)
    assert r.energy_recovered_wh == pytest.approx(ETA_REC * r.energy_discharged_wh, rel=1e-12)
    # The reported times bound the current: charging from start_ts, discharging up to end_ts.
    active = curves.ts[curves.i != 0]
    step = CYCLE_S / POINTS
    assert active[0] - r.start_ts == pytest.approx(step / 2, abs=4 * math.ulp(T0))
    assert abs(active[-1] - r.end_ts) < step
    assert r.formation_h == pytest.approx((r.end_ts - r.start_ts) * SLOT_H / CYCLE_S)
    # The capacity signal is the throughput of the step: its last charge and discharge values.
    assert curves.q[curves.i > 0][-1] == pytest.approx(r.charge_ah, abs=AH_TOL)
    assert curves.q[curves.i < 0][-1] == pytest.approx(r.discharge_ah, abs=AH_TOL)


def test_cabinet_power_follows_the_grid_energy_model(curves: Curves) -> None:
    p, v, i = curves.power, curves.v, curves.i
    assert np.all(p[i > 0] > AUX_KW) and np.all(p[i < 0] < AUX_KW)
    assert np.all(p[i == 0] == pytest.approx(AUX_KW))
    # Plausible sizes: a 10 Ah cell at 0.2C draws ~8 W.
    assert np.max(p - AUX_KW) < 4.3 * CC_AMPS / ETA_CONV / 1000 * 1.001
    # Over the slot, the power integrates to E_chg / eta_conv - eta_rec * E_dis + aux.
    r = curves.model.result(curves.n)
    grid_wh = r.energy_charged_wh / ETA_CONV - ETA_REC * r.energy_discharged_wh
    expected_kwh = grid_wh / 1000 + AUX_KW * SLOT_H
    assert p.sum() * DH == pytest.approx(expected_kwh, abs=WH_TOL / ETA_CONV / 1000)
    assert v.shape == p.shape


def test_cabinet_power_sums_its_channels() -> None:
    model = FormationModel(seed=2, cabinets=3, channels=4, start_ts=T0)
    for t in (0.0, 13.0, 47.5, 300.0):
        v, i, _ = model.ideal(T0 + t)
        cell = v * i
        grid = np.where(cell > 0, cell / ETA_CONV, ETA_REC * cell)
        expected = grid.sum(axis=1) / 1000 + AUX_KW
        power = model.cabinet_power_kw(T0 + t)
        assert power.shape == (3,)
        assert np.allclose(power, expected, rtol=1e-12)


def test_capacity_and_fce_follow_the_cell_population() -> None:
    model = FormationModel(seed=11, start_ts=T0)
    n = 4000
    results = [model.result(k) for k in range(n)]
    cap = np.array([r.discharge_ah for r in results])
    fce = np.array([r.fce for r in results])
    # Means: SE = sigma / sqrt(n); standard deviations: relative SE ~ 1 / sqrt(2 n).
    assert abs(cap.mean() - CAPACITY_MEAN_AH) < 5 * CAPACITY_SIGMA_AH / math.sqrt(n)
    assert abs(fce.mean() - FCE_MEAN) < 5 * FCE_SIGMA / math.sqrt(n)
    assert abs(cap.std(ddof=1) / CAPACITY_SIGMA_AH - 1) < 5 / math.sqrt(2 * n)
    assert abs(fce.std(ddof=1) / FCE_SIGMA - 1) < 5 / math.sqrt(2 * n)
    # Capacity and FCE are drawn independently: correlation within 5 / sqrt(n) of zero.
    assert abs(np.corrcoef(cap, fce)[0, 1]) < 5 / math.sqrt(n)
    # Without faults the results are the drawn cell itself.
    for r in results[:50]:
        assert r.discharge_ah == pytest.approx(r.params.capacity_ah, rel=1e-12)
        assert r.fce == pytest.approx(r.params.fce, rel=1e-12)
        assert r.dcir_mohm == r.params.dcir_mohm and r.lot_scale == 1.0


def _values(r: CellResult) -> dict[str, Any]:
    d = dataclasses.asdict(r)
    del d["start_ts"], d["end_ts"]
    return d


def test_results_do_not_depend_on_speed_or_sample_rate() -> None:
    slow = FormationModel(seed=5, start_ts=T0)
    fast = FormationModel(seed=5, start_ts=T0, speed=50.0)
    horizon = 40 * CYCLE_S + 7.3  # not on a slot boundary
    a = slow.completed(T0 + horizon)
    b = []
    for t in np.arange(0.5, horizon / 50, 0.1):  # 10 Hz on the fast one
        b.extend(fast.completed(T0 + float(t)))
    b.extend(fast.completed(T0 + horizon / 50))
    assert len(a) > 300 and [r.n for r in a] == [r.n for r in b]
    for x, y in zip(a, b, strict=True):
        assert _values(x) == _values(y)
        # Epoch seconds near 1.7e9 resolve to ~2.4e-7 s, a few of which scale by 50 here.
        assert (y.end_ts - T0) * 50 == pytest.approx(x.end_ts - T0, abs=50 * 4 * math.ulp(T0))
    coarse = FormationModel(seed=5, start_ts=T0)
    c = []
    for t in np.arange(3.7, horizon, 3.7):
        c.extend(coarse.completed(T0 + float(t)))
    c.extend(coarse.completed(T0 + horizon))
    assert [_values(r) for r in c] == [_values(r) for r in a]


def test_completed_reports_every_cell_once_in_end_order() -> None:
    model = FormationModel(seed=3, start_ts=T0)
    seen: list[CellResult] = []
    last = -math.inf
    for t in np.cumsum(np.random.default_rng(0).uniform(0.0, 9.0, 400)):
        ts = T0 + float(t)
        new = model.completed(ts)
        assert all(last < r.end_ts <= ts for r in new)
        seen.extend(new)
        last = ts
    ends = [r.end_ts for r in seen]
    assert ends == sorted(ends)
    ns = sorted(r.n for r in seen)
    assert ns == list(range(len(ns)))  # none missing, none twice
    # The cells not reported yet had not ended.
    assert model.slot(len(ns)).end_ts > last or model.slot(len(ns) + 1).end_ts > last
    with pytest.raises(ValueError, match="must not go back"):
        model.completed(last - 1.0)


def test_cells_are_reproducible_and_independent_of_query_order() -> None:
    a = FormationModel(seed=9, start_ts=T0)
    b = FormationModel(seed=9, start_ts=T0)
    c = FormationModel(seed=10, start_ts=T0)
    late = a.result(500)
    for k in range(0, 501, 7):
        b.result(k)
        b.ideal(T0 + k)
    assert b.result(500) == late
    assert c.result(500).params != late.params


def test_cell_draws_leave_the_sample_noise_as_it_was() -> None:
    # The noise of sample() is still the model's first stream, drawn in the old order.
    model = FormationModel(seed=21, start_ts=T0)
    rng = np.random.default_rng(21)
    for k in range(20):
        ts = T0 + 0.5 * k
        s = model.sample(ts)
        v, i, _ = model.ideal(ts)
        noise_v = rng.normal(0.0, VOLTAGE.sigma, v.shape)
        noise_i = rng.normal(0.0, CURRENT.sigma, v.shape)
        rng.normal(0.0, CAPACITY.sigma, v.shape)
        temp = rng.normal(CELL_TEMPERATURE.mean, CELL_TEMPERATURE.sigma, v.shape)
        assert np.array_equal(s.voltage, v + noise_v)
        assert np.array_equal(s.current, i + noise_i)
        assert np.array_equal(s.temperature, temp)


def test_lot_effect_scales_the_cells_formed_in_its_window() -> None:
    fault = Fault("lot_effect", 600.0, 1800.0, None, magnitude=-2.0)
    faulty = FormationModel(seed=4, start_ts=T0, faults=[fault])
    clean = FormationModel(seed=4, start_ts=T0)
    w0, w1 = T0 + 600.0, T0 + 1800.0
    hit = set(faulty.cells_formed(w0, w1))
    cells = range(400)
    assert len(hit) > 60
    for n in cells:
        r, ref = faulty.result(n), clean.result(n)
        overlaps = r.start_ts < w1 and r.end_ts > w0
        assert (n in hit) == overlaps
        if overlaps:
            assert r.lot_scale == 0.98
            assert r.discharge_ah == pytest.approx(0.98 * ref.discharge_ah, rel=1e-12)
            assert r.energy_discharged_wh == pytest.approx(0.98 * ref.energy_discharged_wh)
            assert r.fce == pytest.approx(ref.fce, rel=1e-12)
        else:
            assert r == ref
    # The population view: mean discharge capacity inside vs outside the window differs by
    # shift_pct; SE of the ratio ~ sigma / mean * sqrt(1 / n_in + 1 / n_out).
    inside = np.array([faulty.result(n).discharge_ah for n in cells if n in hit])
    outside = np.array([faulty.result(n).discharge_ah for n in cells if n not in hit])
    se = CAPACITY_SIGMA_AH / CAPACITY_MEAN_AH * math.sqrt(1 / inside.size + 1 / outside.size)
    assert abs(inside.mean() / outside.mean() - 0.98) < 5 * se


@pytest.mark.parametrize("param, m", [("current", 0.05), ("voltage", 0.1)])
def test_calibration_offset_is_integrated_by_the_cycler(
    curves: Curves, param: str, m: float
) -> None:
    n, slot_start = curves.n, curves.model.slot(curves.n).start_ts
    # From 30 % into the slot (mid-charge) to 70 % (mid-discharge).
    start_s = slot_start - T0 + 0.3 * CYCLE_S
    fault = Fault(
        "calibration_offset",
        start_s,
        start_s + 0.4 * CYCLE_S,
        FormationTarget(1, 1, param),
        magnitude=m,
    )
    model = FormationModel(seed=7, cabinets=1, channels=1, start_ts=T0, faults=[fault])
    r = model.result(n)
    ref = _integrate(curves, (T0 + start_s, T0 + start_s + 0.4 * CYCLE_S), param, m)
    clean = curves.model.result(n)
    assert r.charge_ah == pytest.approx(ref["charge_ah"], abs=AH_TOL)
    assert r.discharge_ah == pytest.approx(ref["discharge_ah"], abs=AH_TOL)
    assert r.energy_charged_wh == pytest.approx(ref["energy_charged_wh"], abs=WH_TOL)
    assert r.energy_discharged_wh == pytest.approx(ref["energy_discharged_wh"], abs=WH_TOL)
    # The effect is far above the tolerance, in the documented direction.
    if param == "current":
        assert r.charge_ah - clean.charge_ah > 10 * AH_TOL
        assert clean.discharge_ah - r.discharge_ah > 10 * AH_TOL
    else:
        assert r.charge_ah == clean.charge_ah
        assert r.energy_charged_wh - clean.energy_charged_wh > 10 * WH_TOL
        assert r.energy_discharged_wh - clean.energy_discharged_wh > 10 * WH_TOL
    # The cells before and after on the channel are untouched.
    for k in (n - 1, n + 1):
        assert model.result(k) == curves.model.result(k)


def test_calibration_offset_on_capacity_moves_the_step_that_ends_in_the_window() -> None:
    clean = FormationModel(seed=7, cabinets=1, channels=1, start_ts=T0)
    slot = clean.slot(2)
    w0, w1 = slot.start_ts + 0.3 * CYCLE_S, slot.start_ts + 0.7 * CYCLE_S
    # The window opens during the charge and closes during the discharge: the charge step
    # ends inside it, the discharge step after it.
    assert clean.ideal(w0)[1].item() > 0 and clean.ideal(w1)[1].item() < 0
    fault = Fault("calibration_offset", w0 - T0, w1 - T0, FormationTarget(1, 1, "capacity"), 0.1)
    model = FormationModel(seed=7, cabinets=1, channels=1, start_ts=T0, faults=[fault])
    r, ref = model.result(2), clean.result(2)
    assert r.charge_ah == pytest.approx(ref.charge_ah + 0.1, rel=1e-12)
    assert r.discharge_ah == ref.discharge_ah and r.energy_charged_wh == ref.energy_charged_wh


def test_temperature_offset_changes_no_result() -> None:
    fault = Fault("calibration_offset", 0.0, None, FormationTarget(1, 2, "cell_temperature"), 1.0)
    model = FormationModel(seed=8, start_ts=T0, faults=[fault])
    clean = FormationModel(seed=8, start_ts=T0)
    assert [model.result(n) for n in range(40)] == [clean.result(n) for n in range(40)]


def test_cells_on_channel_and_cells_formed_match_a_search_over_slots() -> None:
    model = FormationModel(seed=6, cabinets=2, channels=3, start_ts=T0, speed=2.0)
    slots = [model.slot(n) for n in range(300)]
    assert {(s.cabinet, s.channel) for s in slots} == {(c, h) for c in (1, 2) for h in (1, 2, 3)}
    for w0, w1 in ((T0 - 50.0, T0 + 10.0), (T0 + 100.0, T0 + 101.0), (T0 + 333.3, T0 + 2000.0)):
        formed = [s.n for s in slots if s.start_ts < w1 and s.end_ts > w0]
        assert model.cells_formed(w0, w1) == formed
        for cab, ch in ((1, 1), (2, 3)):
            on = [s.n for s in slots if (s.cabinet, s.channel) == (cab, ch) and s.n in formed]
            assert model.cells_on_channel(cab, ch, w0, w1) == on
    # A cell in its idle time is no longer being formed.
    s = slots[40]
    assert s.n not in model.cells_formed(s.end_ts + 1e-6, s.next_ts - 1e-6)
    # Successive cells on a channel follow each other one slot apart, and do not overlap.
    same = [x for x in slots if (x.cabinet, x.channel) == (s.cabinet, s.channel)]
    for a, b in zip(same, same[1:], strict=False):
        assert b.start_ts == pytest.approx(a.next_ts) and a.end_ts < b.start_ts


def test_result_payload_carries_genealogy_and_values() -> None:
    model = FormationModel(seed=1, start_ts=T0)
    r = model.result(12)
    record = Genealogy(lanes=4).record(r)
    p = result_payload(r, record)
    assert json.loads(json.dumps(p)) == p
    assert p["cell"] == r.cell_id == "C00000013" and p["n"] == 12
    assert (p["roll"], p["lane"], p["md_from"], p["md_to"]) == ("R00001", 1, 2.25, 3.0)
    assert (p["cabinet"], p["channel"]) == (r.cabinet, r.channel)
    assert p["equipment"] == f"cab{r.cabinet:02d}-ch{r.channel:02d}"
    assert p["discharge_ah"] == pytest.approx(r.discharge_ah, abs=1e-4)
    assert p["e_rec_wh"] == pytest.approx(r.energy_recovered_wh, abs=1e-3)
    assert "params" not in p and "lot_scale" not in p
    with pytest.raises(ValueError, match="record is of cell 13"):
        result_payload(r, Genealogy().record(model.result(13)))


def test_formation_rejects_bad_queries() -> None:
    model = FormationModel(seed=1, start_ts=T0)
    with pytest.raises(ValueError, match="ts must be >= start_ts"):
        model.ideal(T0 - 1.0)
    with pytest.raises(ValueError, match="n must be >= 0, got -1"):
        model.slot(-1)
    with pytest.raises(ValueError, match="finite"):
        model.cells_formed(T0, math.inf)
    with pytest.raises(ValueError, match="ts_to must be >= ts_from"):
        model.cells_formed(T0 + 5.0, T0)
    with pytest.raises(ValueError, match=r"cabinet must be in 1\.\.2, got 3"):
        model.cells_on_channel(3, 1, T0, T0 + 1.0)
    with pytest.raises(ValueError, match=r"channel must be in 1\.\.4, got 0"):
        model.cells_on_channel(1, 0, T0, T0 + 1.0)
