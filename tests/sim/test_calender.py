"""The calender model: thickness from coat weight and density, density computed as m / T."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

import sim.calender
from sim.calender import (
    COMPACTION_DENSITY,
    DENSITY,
    FOIL_UM,
    THICKNESS,
    THICKNESS_GAUGE_SIGMA_UM,
    CalenderModel,
)
from sim.coating import AREAL_WEIGHT, CoatingModel

T0 = 1_700_000_000.0


def _nominal_weights(lanes: int, value: float = AREAL_WEIGHT.mean) -> np.ndarray:
    return np.full((lanes, 2), value)


def test_doctests() -> None:
    result = doctest.testmod(sim.calender)
    assert result.attempted > 0 and result.failed == 0


def test_nominals_come_from_the_domain_figures() -> None:
    assert 6.0 <= FOIL_UM <= 8.0  # DOMAIN.md 1.1: Al foil 6-8 um
    assert 3.4 <= COMPACTION_DENSITY.mean <= 3.7  # DOMAIN.md 1.1: NMC 3.4-3.7 g/cm3
    assert THICKNESS_GAUGE_SIGMA_UM == 1.0  # DOMAIN.md 1.2: 1 um online precision
    # 2 x 20 mg/cm2 at 3.55 g/cm3 is 112.7 um of coating (1 mg/cm2 per g/cm3 = 10 um).
    assert THICKNESS.mean == pytest.approx(FOIL_UM + 10 * 40.0 / 3.55)
    assert DENSITY.mean == COMPACTION_DENSITY.mean


def test_density_is_coat_weight_over_net_thickness() -> None:
    model = CalenderModel(lanes=3, seed=1)
    weights = np.array([[20.0, 20.1], [19.5, 20.4], [21.0, 18.0]])
    for k in range(50):
        s = model.sample(T0 + k, weights)
        assert s.ts == T0 + k
        net = s.thickness_um - FOIL_UM
        assert np.allclose(s.density_g_cm3 * net, 10.0 * weights.sum(axis=1), rtol=1e-12)


def test_noise_free_calender_reproduces_the_physics() -> None:
    model = CalenderModel(lanes=2, seed=1, density=3.5, density_sigma=0.0, thickness_sigma_um=0.0)
    s = model.sample(T0, np.array([[20.0, 15.0], [10.0, 10.0]]))
    assert s.thickness_um.tolist() == pytest.approx([FOIL_UM + 100.0, FOIL_UM + 200.0 / 3.5])
    assert s.density_g_cm3.tolist() == pytest.approx([3.5, 3.5])


def test_thickness_gauge_noise_alone() -> None:
    n, lanes = 4000, 4
    model = CalenderModel(lanes=lanes, seed=2, density_sigma=0.0)
    got = np.array([model.sample(T0 + k, _nominal_weights(lanes)).thickness_um for k in range(n)])
    residual = (got - THICKNESS.mean).ravel()
    m = residual.size
    # Mean: SE = sigma / sqrt(m); SD: relative SE ~ 1 / sqrt(2m).
    assert abs(residual.mean()) < 5 * THICKNESS_GAUGE_SIGMA_UM / math.sqrt(m)
    assert abs(residual.std(ddof=1) / THICKNESS_GAUGE_SIGMA_UM - 1) < 5 / math.sqrt(2 * m)


def test_true_density_spread_alone() -> None:
    n, lanes = 4000, 4
    model = CalenderModel(lanes=lanes, seed=3, thickness_sigma_um=0.0)
    got = np.array(
        [model.sample(T0 + k, _nominal_weights(lanes)).density_g_cm3 for k in range(n)]
    ).ravel()
    m = got.size
    sigma = COMPACTION_DENSITY.sigma
    assert abs(got.mean() - COMPACTION_DENSITY.mean) < 5 * sigma / math.sqrt(m)
    assert abs(got.std(ddof=1) / sigma - 1) < 5 / math.sqrt(2 * m)


def test_in_control_line_matches_the_advertised_nominals() -> None:
    # Coat weights from the coating model, both calender noises on: the spread must be what
    # THICKNESS and DENSITY advertise (their sigmas are first-order propagations).
    n, lanes = 4000, 4
    coater = CoatingModel(seed=4, lanes=lanes, start_ts=T0)
    model = CalenderModel(lanes=lanes, seed=4)
    rows = [model.sample(T0 + k, coater.sample(T0 + k).areal_weight) for k in range(n)]
    thickness = np.array([r.thickness_um for r in rows]).ravel()
    density = np.array([r.density_g_cm3 for r in rows]).ravel()
    m = thickness.size
    for values, nominal in ((thickness, THICKNESS), (density, DENSITY)):
        assert abs(values.mean() - nominal.mean) < 5 * nominal.sigma / math.sqrt(m), nominal
        assert abs(values.std(ddof=1) / nominal.sigma - 1) < 5 / math.sqrt(2 * m), nominal


def test_heavier_coat_is_thicker_at_the_same_density() -> None:
    n, lanes = 1000, 2
    model = CalenderModel(lanes=lanes, seed=5)
    heavy = [model.sample(T0 + k, _nominal_weights(lanes, 22.0)) for k in range(n)]
    thickness = np.array([s.thickness_um for s in heavy]).ravel()
    density = np.array([s.density_g_cm3 for s in heavy]).ravel()
    m = thickness.size
    rho = COMPACTION_DENSITY.mean
    coating = 10 * 44.0 / rho
    expected = FOIL_UM + coating
    # First-order spreads, as for THICKNESS and DENSITY but at 44 mg/cm2 and fixed weights.
    t_sigma = math.hypot(THICKNESS_GAUGE_SIGMA_UM, coating / rho * COMPACTION_DENSITY.sigma)
    d_sigma = math.hypot(COMPACTION_DENSITY.sigma, rho / coating * THICKNESS_GAUGE_SIGMA_UM)
    assert abs(thickness.mean() - expected) < 5 * t_sigma / math.sqrt(m)
    assert abs(density.mean() - COMPACTION_DENSITY.mean) < 5 * d_sigma / math.sqrt(m)


def test_unknown_coat_weight_gives_nan_for_that_lane_only() -> None:
    model = CalenderModel(lanes=3, seed=6)
    weights = _nominal_weights(3)
    weights[1, 0] = np.nan
    s = model.sample(T0, weights)
    assert np.isnan(s.thickness_um[1]) and np.isnan(s.density_g_cm3[1])
    assert np.all(np.isfinite(s.thickness_um[[0, 2]]))
    assert np.all(np.isfinite(s.density_g_cm3[[0, 2]]))


def test_same_seed_same_samples() -> None:
    def run(seed: int) -> np.ndarray:
        model = CalenderModel(lanes=2, seed=seed)
        return np.array([model.sample(T0 + k, _nominal_weights(2)).thickness_um for k in range(50)])

    assert np.array_equal(run(7), run(7))
    assert not np.allclose(run(7), run(8))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lanes": 0}, "lanes must be in 1..99, got 0"),
        ({"lanes": 1, "foil_um": 0.0}, r"foil_um must be in \(0, 100\], got 0.0"),
        ({"lanes": 1, "density": -3.0}, r"density must be in \(0, 10\], got -3.0"),
        ({"lanes": 1, "density_sigma": -0.1}, r"density_sigma must be in \[0, 1\], got -0.1"),
        ({"lanes": 1, "thickness_sigma_um": math.inf}, "thickness_sigma_um must be in"),
    ],
)
def test_bad_parameters_name_themselves(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CalenderModel(**kwargs)


def test_weights_of_the_wrong_shape_are_refused() -> None:
    model = CalenderModel(lanes=2, seed=1)
    with pytest.raises(ValueError, match=r"areal_weight must have shape \(2, 2\), got \(2,\)"):
        model.sample(T0, np.array([20.0, 20.0]))
