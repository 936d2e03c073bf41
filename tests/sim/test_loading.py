"""Coating faults reach the cells cut from the faulted web: capacity follows electrode loading."""

from __future__ import annotations

import pytest

from sim.coating import AREAL_WEIGHT
from sim.fault import CoatingTarget, Fault, FormationTarget
from sim.formation import FormationModel
from sim.genealogy import Genealogy
from sim.grading import GradingModel
from sim.loading import ElectrodeLoading
from sim.simulator import NOMINALS
from sim.truth import GroundTruth

T0 = 1_700_000_000.0


def test_a_mean_shift_scales_exactly_the_cells_the_ground_truth_lists() -> None:
    # +3 sigma (0.3 mg/cm2) on one side of lane 2 for 30 s of web: the electrode's mean over
    # both sides is 0.15 mg/cm2 heavy, so its cells hold 0.75 % more capacity.
    shift = Fault("mean_shift", 10.0, 40.0, CoatingTarget(2, "A"), magnitude=3.0)
    genealogy = Genealogy(lanes=4)
    loading = ElectrodeLoading([shift], genealogy)
    plain = FormationModel(seed=3, cabinets=2, channels=4, start_ts=T0)
    loaded = FormationModel(
        seed=3, cabinets=2, channels=4, start_ts=T0, capacity_scale=loading.scale
    )
    truth = GroundTruth([shift], T0, NOMINALS, genealogy, loaded)
    listed = set(truth.cells(shift, 40.0))
    assert listed
    full = 1.0 + 0.5 * 3.0 * AREAL_WEIGHT.sigma / AREAL_WEIGHT.mean
    for n in range(400):
        ratio = loaded.result(n).discharge_ah / plain.result(n).discharge_ah
        if n not in listed:
            assert ratio == 1.0
            continue
        cut = genealogy.electrode(n)
        inside = min(cut.total_to_m, 40.0) - max(cut.total_from_m, 10.0)  # metres at 1 m/s
        covered = inside / (cut.total_to_m - cut.total_from_m)
        # The loading is averaged at 8 points along the cut: a partly covered cut is right to
        # within one point's share of the step.
        assert ratio - 1.0 == pytest.approx(covered * (full - 1.0), abs=(full - 1.0) / 8 + 1e-12)
        assert loaded.result(n).loading_scale == pytest.approx(ratio, rel=1e-12)


def test_a_drift_grows_along_the_web_and_grading_sees_it() -> None:
    drift = Fault("linear_drift", 0.0, None, CoatingTarget(1, "B"), magnitude=6.0)  # sigma/min
    genealogy = Genealogy(lanes=1)
    loading = ElectrodeLoading([drift], genealogy)
    scales = [loading.scale(n) for n in range(0, 4000, 400)]
    assert scales == sorted(scales) and scales[0] > 1.0
    # Cell 3600 is cut from run metres 2700..2700.75, coated 45 min in: side B is then
    # 6 sigma/min * 45 min = 270 sigma = 27 mg/cm2 heavy (a drift left running), the electrode
    # 13.5 mg/cm2 over both sides: a factor of 1.675.
    assert loading.scale(3600) == pytest.approx(1.0 + 13.5 / 20.0, rel=1e-3)
    formation = FormationModel(
        seed=1, cabinets=1, channels=1, start_ts=T0, capacity_scale=loading.scale
    )
    grading = GradingModel(seed=1)
    assert grading.grade(formation.result(3600)).capacity_ah > 16.0


def test_measurement_faults_and_formation_faults_leave_the_loading_alone() -> None:
    faults = [
        Fault("stuck", 0.0, None, CoatingTarget(1, "A")),
        Fault("variance_increase", 0.0, None, CoatingTarget(1, "A"), magnitude=3.0),
        Fault("spike", 0.0, None, CoatingTarget(1, "A"), magnitude=5.0, rate_hz=1.0),
        Fault("mean_shift", 0.0, None, FormationTarget(1, 1, "cell_temperature"), 2.0),
    ]
    loading = ElectrodeLoading(faults, Genealogy(lanes=2))
    assert loading.faults == () and all(loading.scale(n) == 1.0 for n in range(50))
