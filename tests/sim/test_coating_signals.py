"""The coating model's process-driven signals: NMP exhaust, dryer power and the web position."""

from __future__ import annotations

import doctest
import math
import warnings

import numpy as np
import pytest

import sim.coating
from sim.coating import (
    AMBIENT_C,
    AREAL_WEIGHT,
    DRYER_POWER,
    DRYER_ZONES,
    NMP_EXHAUST,
    SIDES,
    WEB_SPEED,
    CoatingModel,
    CoatingSample,
    dryer_power_kw,
    nmp_exhaust,
)
from sim.fault import CoatingTarget, Fault
from sim.web import WebModel

T0 = 1_700_000_000.0


def _run(model: CoatingModel, n: int, dt: float = 0.5) -> list[CoatingSample]:
    return [model.sample(T0 + k * dt) for k in range(n)]


def test_doctests() -> None:
    result = doctest.testmod(sim.coating)
    assert result.attempted > 0 and result.failed == 0


def test_earlier_signals_draw_exactly_as_before() -> None:
    # Before NMP, power and web existed, a sample drew lane weights, the speed and the zone
    # temperatures from one generator on the seed, in that order; they must still do so.
    model = CoatingModel(seed=9, lanes=3, start_ts=T0)
    rng = np.random.default_rng(9)
    for s in _run(model, 50):
        weight = rng.normal(AREAL_WEIGHT.mean, AREAL_WEIGHT.sigma, (3, len(SIDES)))
        speed = rng.normal(WEB_SPEED.mean, WEB_SPEED.sigma)
        dryer = rng.normal([z.mean for z in DRYER_ZONES], [z.sigma for z in DRYER_ZONES])
        assert np.array_equal(s.areal_weight, weight)
        assert s.web_speed == speed
        assert np.array_equal(s.dryer, dryer)


def test_old_constructor_of_the_sample_still_works() -> None:
    s = CoatingSample(1.0, np.full((1, 2), 20.0), 60.0, np.zeros(4))
    assert math.isnan(s.nmp_exhaust) and s.dryer_power_kw is None and s.web is None


def test_nmp_exhaust_scales_with_coat_weight_and_speed() -> None:
    assert nmp_exhaust(AREAL_WEIGHT.mean, WEB_SPEED.mean) == NMP_EXHAUST.mean
    assert nmp_exhaust(1.1 * AREAL_WEIGHT.mean, WEB_SPEED.mean) == pytest.approx(44.0)
    assert nmp_exhaust(AREAL_WEIGHT.mean, 0.5 * WEB_SPEED.mean) == pytest.approx(20.0)
    # The DOMAIN.md limit is < 100 mg/m3; a line in control must stay well under it.
    assert NMP_EXHAUST.mean + 5 * NMP_EXHAUST.sigma < 100.0


def test_nmp_noise_is_around_the_value_the_process_implies() -> None:
    n = 4000
    samples = _run(CoatingModel(seed=3, lanes=4, start_ts=T0), n)
    residual = np.array(
        [s.nmp_exhaust - nmp_exhaust(float(s.areal_weight.mean()), s.web_speed) for s in samples]
    )
    # SE of a mean of n draws is sigma / sqrt(n); of a standard deviation about 1/sqrt(2n).
    assert abs(residual.mean()) < 5 * NMP_EXHAUST.sigma / math.sqrt(n)
    assert abs(residual.std(ddof=1) / NMP_EXHAUST.sigma - 1.0) < 5 / math.sqrt(2 * n)


def test_nmp_follows_a_heavier_recipe() -> None:
    n = 400
    heavier = Fault("recipe_changeover", 0.0, None, None, magnitude=22.0)
    model = CoatingModel(seed=4, lanes=4, start_ts=T0, faults=[heavier])
    nmp = np.array([s.nmp_exhaust for s in _run(model, n)])
    # 22 mg/cm2 at 60 m/min is 44 mg/m3. Per sample the spread is the analyser sigma plus the
    # speed term (44 * 0.2 / 60) and the 8-cell weight mean term (44 * 0.1 / sqrt(8) / 22).
    sigma = math.hypot(NMP_EXHAUST.sigma, 44.0 * WEB_SPEED.sigma / 60.0, 0.1 / math.sqrt(8) * 2)
    assert abs(nmp.mean() - 44.0) < 5 * sigma / math.sqrt(n)


def test_nmp_ignores_dropped_weights_and_survives_all_of_them() -> None:
    lanes = 2
    faults = [
        Fault("dropout", 0.0, None, CoatingTarget(lane, side)) for lane in (1, 2) for side in SIDES
    ]
    model = CoatingModel(seed=5, lanes=lanes, start_ts=T0, faults=faults)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        samples = _run(model, 200)
    assert all(np.isnan(s.areal_weight).all() for s in samples)
    nmp = np.array([s.nmp_exhaust for s in samples])
    # No weights published: the dryer still sees the nominal coat.
    sigma = math.hypot(NMP_EXHAUST.sigma, NMP_EXHAUST.mean * WEB_SPEED.sigma / WEB_SPEED.mean)
    assert abs(nmp.mean() - NMP_EXHAUST.mean) < 5 * sigma / math.sqrt(len(nmp))


def test_dryer_power_is_fans_plus_heat_above_ambient() -> None:
    power = dryer_power_kw([AMBIENT_C - 10.0, AMBIENT_C, AMBIENT_C + 100.0])
    assert power[0] == power[1] > 0.0  # fans only: no heater below ambient
    assert power[2] - power[1] == pytest.approx(100.0 * sim.coating.DRYER_KW_PER_K)
    hotter = [z.mean for z in DRYER_ZONES]
    assert np.all(np.diff(dryer_power_kw(sorted(hotter))) >= 0)
    assert [p.mean for p in DRYER_POWER] == pytest.approx(dryer_power_kw(hotter).tolist())
    # The hottest zone draws the most.
    assert max(DRYER_POWER, key=lambda p: p.mean) is DRYER_POWER[int(np.argmax(hotter))]


def test_dryer_power_noise_and_mean() -> None:
    n = 4000
    samples = _run(CoatingModel(seed=6, lanes=1, start_ts=T0), n)
    power = np.array([s.dryer_power_kw for s in samples])
    temps = np.array([s.dryer for s in samples])
    assert power.shape == (n, len(DRYER_ZONES))
    residual = power - dryer_power_kw(temps)
    sigma = DRYER_POWER[0].sigma
    assert np.all(np.abs(residual.mean(axis=0)) < 5 * sigma / math.sqrt(n))
    assert np.all(np.abs(residual.std(axis=0, ddof=1) / sigma - 1.0) < 5 / math.sqrt(2 * n))
    # The power follows the zone temperature: 1 kW/K times its 0.5 K noise, plus the duty noise.
    for zone, nominal in enumerate(DRYER_POWER):
        total = math.hypot(nominal.sigma, sim.coating.DRYER_KW_PER_K * DRYER_ZONES[zone].sigma)
        assert abs(power[:, zone].mean() - nominal.mean) < 5 * total / math.sqrt(n)
        assert np.corrcoef(power[:, zone], temps[:, zone])[0, 1] > 0.5


def test_web_position_follows_the_web_model() -> None:
    web = WebModel(speed_m_per_min=30.0, roll_length_m=100.0)
    model = CoatingModel(seed=1, lanes=1, start_ts=T0, web=web)
    for t_rel in (0.0, 10.0, 199.0, 200.0, 450.0):
        assert model.sample(T0 + t_rel).web == web.position(t_rel)
    assert model.sample(T0 + 450.0).web.roll_id == "R00003"  # 225 m into 100 m rolls
    default = CoatingModel(seed=1, lanes=1, start_ts=T0).sample(T0 + 90.0).web
    assert default is not None and default.md_m == pytest.approx(90.0)  # 60 m/min


def test_new_signals_reproduce_per_seed() -> None:
    def series(seed: int) -> np.ndarray:
        samples = _run(CoatingModel(seed=seed, lanes=2, start_ts=T0), 100)
        return np.array([[s.nmp_exhaust, *s.dryer_power_kw] for s in samples])

    assert np.array_equal(series(8), series(8))
    assert not np.allclose(series(8), series(9))
    # Seeding with the SeedSequence the simulator hands over works the same way.
    seq = np.random.SeedSequence(8)
    a = CoatingModel(seed=seq, lanes=2, start_ts=T0).sample(T0)
    b = CoatingModel(seed=np.random.SeedSequence(8), lanes=2, start_ts=T0).sample(T0)
    assert a.nmp_exhaust == b.nmp_exhaust
    assert np.array_equal(a.dryer_power_kw, b.dryer_power_kw)


def test_new_noise_is_independent_of_the_lane_noise() -> None:
    n = 4000
    samples = _run(CoatingModel(seed=10, lanes=1, start_ts=T0), n)
    lane = np.array([s.areal_weight[0, 0] for s in samples])
    nmp_residual = np.array(
        [s.nmp_exhaust - nmp_exhaust(float(s.areal_weight.mean()), s.web_speed) for s in samples]
    )
    power_residual = np.array([s.dryer_power_kw[0] - dryer_power_kw(s.dryer[0]) for s in samples])
    # The correlation of independent series has SE ~ 1/sqrt(n).
    for other in (nmp_residual, power_residual):
        assert abs(np.corrcoef(lane, other)[0, 1]) < 5 / math.sqrt(n)
    assert abs(np.corrcoef(nmp_residual, power_residual)[0, 1]) < 5 / math.sqrt(n)
