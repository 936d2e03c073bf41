"""Energy meters: registers against closed forms, monotonic registers, reading noise, seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.coating import CoatingModel
from sim.energy import EnergyMeters, cabinet_meter_names, dryer_meter_names

T0 = 1_700_000_000.0


def _irregular_times(n: int, seed: int = 3) -> np.ndarray:
    """``n`` increasing epoch times with steps between 0.1 and 5 s."""
    steps = np.random.default_rng(seed).uniform(0.1, 5.0, n - 1)
    return T0 + np.concatenate(([0.0], np.cumsum(steps)))


def test_constant_power_gives_power_times_time() -> None:
    power = np.array([12.0, 0.0, 250.5])
    meters = EnergyMeters(("a", "b", "c"), seed=1, start_kwh=[100.0, 0.0, 5.0])
    times = _irregular_times(500)
    for t in times:
        reading = meters.update(float(t), power)
    hours = (times[-1] - times[0]) / 3600.0
    expected = np.array([100.0, 0.0, 5.0]) + power * hours
    np.testing.assert_allclose(reading.energy_kwh, expected, rtol=1e-12)
    assert reading.total_kwh == pytest.approx(expected.sum(), rel=1e-12)


def test_linear_power_is_integrated_exactly_by_the_trapezoid_rule() -> None:
    # p(t) = a + b (t - T0); its integral over [T0, T0 + T] is a T + b T^2 / 2 (kW s).
    a = np.array([5.0, 80.0, 0.0])
    b = np.array([0.01, -0.005, 0.2])
    times = _irregular_times(800)
    meters = EnergyMeters(dryer_meter_names(3), seed=2)
    for t in times:
        reading = meters.update(float(t), a + b * (t - T0))
    span = times[-1] - T0
    assert (a + b * span >= 0).all()  # the ramp stays a valid power
    expected = (a * span + b * span**2 / 2.0) / 3600.0
    np.testing.assert_allclose(reading.energy_kwh, expected, rtol=1e-10)


def test_registers_come_from_true_power_so_noise_does_not_accumulate() -> None:
    times = _irregular_times(300)
    power = np.random.default_rng(5).uniform(0.0, 100.0, (300, 4))
    quiet = EnergyMeters(cabinet_meter_names(4), seed=9, noise_pct=0.0)
    noisy = EnergyMeters(cabinet_meter_names(4), seed=9, noise_pct=10.0)
    for t, p in zip(times, power, strict=True):
        a, b = quiet.update(float(t), p), noisy.update(float(t), p)
        np.testing.assert_array_equal(a.energy_kwh, b.energy_kwh)
    assert not np.array_equal(a.power_kw, b.power_kw)  # the readings do differ


def test_registers_never_fall_and_hold_over_intervals_with_no_power_known() -> None:
    rng = np.random.default_rng(11)
    n = 400
    power = rng.uniform(0.0, 50.0, (n, 3))
    power[rng.random((n, 3)) < 0.1] = 0.0
    power[rng.random((n, 3)) < 0.05] = np.nan
    meters = EnergyMeters(("x", "y", "z"), seed=4)
    times = _irregular_times(n)
    registers = np.array(
        [meters.update(float(t), p).energy_kwh for t, p in zip(times, power, strict=True)]
    )
    assert (np.diff(registers, axis=0) >= 0.0).all()
    # An interval with NaN at either end adds nothing; every other one adds its trapezoid.
    unknown = np.isnan(power[1:]) | np.isnan(power[:-1])
    steps = np.diff(registers, axis=0)
    assert (steps[unknown] == 0.0).all()
    trapezoid = 0.5 * (power[1:] + power[:-1]) * (np.diff(times)[:, None] / 3600.0)
    np.testing.assert_allclose(steps[~unknown], trapezoid[~unknown], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(meters.held, unknown.sum(axis=0))


def test_a_meter_not_measuring_reads_nan_and_the_others_carry_on() -> None:
    meters = EnergyMeters(("x", "y"), seed=1, noise_pct=0.0)
    meters.update(T0, [10.0, 10.0])
    reading = meters.update(T0 + 360.0, [math.nan, 10.0])
    assert math.isnan(reading.power_kw[0]) and reading.power_kw[1] == 10.0
    assert reading.energy_kwh.tolist() == [0.0, 1.0]
    reading = meters.update(T0 + 720.0, [20.0, 10.0])  # back, but the interval is unknown
    assert reading.energy_kwh.tolist() == [0.0, 2.0]
    reading = meters.update(T0 + 1080.0, [20.0, 10.0])
    assert reading.energy_kwh.tolist() == pytest.approx([2.0, 3.0], rel=1e-12)


def test_reading_noise_has_the_configured_relative_sigma() -> None:
    # 8 meters x 2500 readings of constant power: the relative errors are n = 20000 draws of
    # N(0, s) with s = noise_pct / 100. SE of the mean is s / sqrt(n); SE of the sample
    # standard deviation is s / sqrt(2 (n - 1)). Both are checked to 5 SE.
    noise_pct, readings = 0.5, 2500
    power = np.linspace(5.0, 400.0, 8)
    meters = EnergyMeters(cabinet_meter_names(8), seed=21, noise_pct=noise_pct)
    rel = np.array(
        [meters.update(T0 + k, power).power_kw / power - 1.0 for k in range(readings)]
    ).ravel()
    s, n = noise_pct / 100.0, rel.size
    assert abs(rel.mean()) < 5 * s / math.sqrt(n)
    assert abs(rel.std(ddof=1) - s) < 5 * s / math.sqrt(2 * (n - 1))


def test_the_same_seed_and_names_give_the_same_readings() -> None:
    def run(seed: int, names: tuple[str, ...]) -> np.ndarray:
        meters = EnergyMeters(names, seed=seed)
        return np.array([meters.update(T0 + k, [50.0] * len(names)).power_kw for k in range(50)])

    dryers, cabinets = dryer_meter_names(4), cabinet_meter_names(4)
    np.testing.assert_array_equal(run(7, dryers), run(7, dryers))
    assert not np.array_equal(run(7, dryers), run(8, dryers))
    # Meter sets made from one seed get their own noise, not copies of each other's.
    assert not np.array_equal(run(7, dryers), run(7, cabinets))


def test_meters_leave_the_model_streams_alone() -> None:
    """A meter set built from the simulator's seed sequence must not spawn from it: the
    simulator spawns the coating and formation streams from the same sequence."""
    ss = np.random.SeedSequence(5)
    EnergyMeters(dryer_meter_names(4), seed=ss).update(T0, [1.0] * 4)
    assert ss.n_children_spawned == 0
    coat_seed, _ = ss.spawn(2)
    reference_seed, _ = np.random.SeedSequence(5).spawn(2)
    a = CoatingModel(coat_seed, lanes=2).sample(T0)
    b = CoatingModel(reference_seed, lanes=2).sample(T0)
    np.testing.assert_array_equal(a.areal_weight, b.areal_weight)


def test_a_rejected_update_changes_nothing_and_is_counted() -> None:
    meters = EnergyMeters(("x", "y"), seed=1, noise_pct=0.0)
    meters.update(T0, [36.0, 36.0])
    with pytest.raises(ValueError, match=r"ts must increase.*got 1700000000.0 after"):
        meters.update(T0, [36.0, 36.0])
    with pytest.raises(ValueError, match=r"x=inf"):
        meters.update(T0 + 100.0, [math.inf, 1.0])
    with pytest.raises(ValueError, match=r"one value per meter \(2\), got shape \(3,\)"):
        meters.update(T0 + 100.0, [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="finite epoch time"):
        meters.update(math.nan, [1.0, 1.0])
    assert meters.rejected == 4
    # The next good update integrates from the last accepted one.
    reading = meters.update(T0 + 100.0, [36.0, 36.0])
    assert reading.energy_kwh.tolist() == pytest.approx([1.0, 1.0], rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"names": ()}, "at least one meter name"),
        ({"names": ("a", "")}, "non-empty strings"),
        ({"names": ("a", "b", "a")}, r"unique, got \['a'\]"),
        ({"names": ("a",), "noise_pct": -0.1}, r"noise_pct must be in 0..10, got -0.1"),
        ({"names": ("a",), "noise_pct": math.nan}, "noise_pct must be in 0..10"),
        ({"names": ("a",), "start_kwh": [1.0, 2.0]}, r"one value per meter \(1\)"),
        ({"names": ("a",), "start_kwh": [-1.0]}, "finite and >= 0"),
    ],
)
def test_bad_construction_is_refused_with_the_reason(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EnergyMeters(**kwargs)


def test_readings_are_read_only_copies() -> None:
    meters = EnergyMeters(("x",), seed=1)
    first = meters.update(T0, [10.0])
    meters.update(T0 + 3600.0, [10.0])
    assert first.energy_kwh.tolist() == [0.0]
    with pytest.raises(ValueError, match="read-only"):
        first.energy_kwh[0] = 1.0


def test_meter_names_follow_the_plant_ids() -> None:
    assert dryer_meter_names(4) == ("dryer_zone1", "dryer_zone2", "dryer_zone3", "dryer_zone4")
    assert cabinet_meter_names(12)[-1] == "cab12"
    with pytest.raises(ValueError, match="zones must be in 1..99, got 0"):
        dryer_meter_names(0)
    with pytest.raises(ValueError, match="cabinets must be in 1..99, got 100"):
        cabinet_meter_names(100)


def test_exported_energy_goes_to_its_own_register_split_at_the_zero_crossing() -> None:
    """A regenerative cabinet's power ramps from +p to -q: the import register gets the
    triangle before the zero crossing, the export register the one after (exact areas)."""
    meters = EnergyMeters(("cab01", "cab02"), seed=1, noise_pct=0.0)
    meters.update(T0, [30.0, -10.0])
    reading = meters.update(T0 + 3600.0, [-10.0, -30.0])
    # cab01: zero at 3/4 h; import 30 * 0.75 / 2 = 11.25 kWh, export 10 * 0.25 / 2 = 1.25 kWh.
    assert reading.energy_kwh.tolist() == pytest.approx([11.25, 0.0], rel=1e-12)
    assert reading.export_kwh.tolist() == pytest.approx([1.25, 20.0], rel=1e-12)
    assert reading.power_kw.tolist() == [-10.0, -30.0]
    # Random signed ramps: import minus export is the plain trapezoid, and both only rise.
    rng = np.random.default_rng(3)
    power = rng.normal(0.0, 20.0, (500, 2))
    meters = EnergyMeters(("a", "b"), seed=2, noise_pct=0.0)
    readings = [meters.update(T0 + 60.0 * k, row) for k, row in enumerate(power)]
    imp = np.array([r.energy_kwh for r in readings])
    exp = np.array([r.export_kwh for r in readings])
    net = np.concatenate([[[0.0, 0.0]], np.cumsum(0.5 * (power[1:] + power[:-1]) / 60.0, axis=0)])
    np.testing.assert_allclose(imp - exp, net, atol=1e-9)
    assert (np.diff(imp, axis=0) >= 0).all() and (np.diff(exp, axis=0) >= 0).all()
