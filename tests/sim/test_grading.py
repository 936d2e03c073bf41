"""Aging and grading: bins and reject codes against the limits, the micro-short tail of K,
reproducibility and independence of speed, and the grading payload."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest

from sim.formation import CellParams, CellResult, FormationModel
from sim.genealogy import Genealogy
from sim.grading import (
    BINS,
    MICRO_SHORT_RATE,
    REASONS,
    GradingModel,
    GradingResult,
    ProductLimits,
    grading_payload,
)

T0 = 1_700_000_000.0
LIMITS = ProductLimits()
GOOD = {"capacity_ah": 10.2, "acir_mohm": 2.0, "k_mv_per_day": 0.6, "ocv_v": 3.650, "fce": 0.89}


@pytest.mark.parametrize(
    "change, reasons",
    [
        ({"capacity_ah": 9.999}, ("CAP_LOW",)),
        ({"capacity_ah": 10.601}, ("CAP_HIGH",)),
        ({"acir_mohm": 2.61}, ("ACIR_HIGH",)),
        ({"k_mv_per_day": 2.01}, ("K_HIGH",)),
        ({"ocv_v": 3.5999}, ("OCV_LOW",)),
        ({"ocv_v": 3.7001}, ("OCV_HIGH",)),
        ({"fce": 0.8499}, ("FCE_LOW",)),
        ({"fce": 0.80, "capacity_ah": 9.0, "k_mv_per_day": 9.0}, ("CAP_LOW", "K_HIGH", "FCE_LOW")),
    ],
)
def test_each_broken_limit_gives_its_code_and_ng(
    change: dict[str, float], reasons: tuple[str, ...]
) -> None:
    assert LIMITS.classify(**{**GOOD, **change}) == ("NG", reasons)


@pytest.mark.parametrize(
    "ocv, expected",
    [(3.650, "A"), (3.655, "A"), (3.6449, "B"), (3.665, "B"), (3.6651, "C"), (3.700, "C")],
)
def test_ocv_distance_from_the_band_centre_sets_the_bin(ocv: float, expected: str) -> None:
    assert LIMITS.classify(**{**GOOD, "ocv_v": ocv}) == (expected, ())


def test_limits_on_the_edge_pass() -> None:
    edge = {"capacity_ah": 10.0, "acir_mohm": 2.6, "k_mv_per_day": 2.0, "fce": 0.85}
    assert LIMITS.classify(**{**GOOD, **edge})[1] == ()
    assert set(REASONS) == {
        "CAP_LOW",
        "CAP_HIGH",
        "ACIR_HIGH",
        "K_HIGH",
        "OCV_LOW",
        "OCV_HIGH",
        "FCE_LOW",
    }
    assert BINS == ("A", "B", "C", "NG")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"capacity_max_ah": 9.0}, r"capacity_max_ah must be > capacity_min_ah \(10.0\), got 9.0"),
        ({"ocv_min_v": 3.8}, r"ocv_max_v must be > ocv_min_v \(3.8\), got 3.7"),
        ({"ocv_a_mv": 20.0}, r"ocv_a_mv <= ocv_b_mv"),
        ({"ocv_b_mv": 60.0}, r"half the OCV band \(50 mV\)"),
        ({"fce_min": 1.2}, r"fce_min must be in \(0, 1\], got 1.2"),
        ({"acir_max_mohm": -1.0}, r"acir_max_mohm must be a finite number > 0, got -1.0"),
        ({"k_max_mv_per_day": math.nan}, "k_max_mv_per_day must be a finite number > 0"),
    ],
)
def test_product_limits_reject_nonsense(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ProductLimits(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"aging_days": 0.0}, "aging_days must be > 0, got 0.0"),
        ({"aging_s": -1.0}, "aging_s must be >= 0, got -1.0"),
        ({"speed": math.inf}, "speed must be > 0, got inf"),
    ],
)
def test_grading_model_rejects_nonsense(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GradingModel(**kwargs)


def _result(n: int = 5, **change: object) -> CellResult:
    base = FormationModel(seed=1, start_ts=T0).result(n)
    return dataclasses.replace(base, **change)  # type: ignore[arg-type]


def test_constructed_results_are_graded_against_their_values() -> None:
    model = GradingModel(seed=3)
    weak = _result(params=CellParams(capacity_ah=9.5, fce=0.89, dcir_mohm=4.0))
    g = model.grade(weak)
    assert g.bin == "NG" and "CAP_LOW" in g.reasons
    assert g.capacity_ah == pytest.approx(9.5, rel=5 * 0.001)  # 5 x the 0.1 % repeatability
    resistive = model.grade(_result(params=CellParams(10.15, 0.89, dcir_mohm=6.0)))
    assert "ACIR_HIGH" in resistive.reasons and resistive.acir_mohm == pytest.approx(3.0, abs=0.1)
    low_fce = model.grade(_result(fce=0.80))
    assert "FCE_LOW" in low_fce.reasons and low_fce.fce == 0.80
    # A lot effect reaches grading through the true capacity, a cycler offset does not.
    lot = model.grade(_result(lot_scale=0.9))
    assert "CAP_LOW" in lot.reasons
    offset = model.grade(_result(discharge_ah=8.0))
    assert offset.capacity_ah == model.grade(_result()).capacity_ah
    # K is computed from the two OCV readings.
    assert g.k_mv_per_day == pytest.approx((g.ocv1_v - g.ocv2_v) * 1000 / g.aging_days)


def test_grading_time_follows_formation_and_speed() -> None:
    r = _result()
    assert GradingModel(seed=1).grade(r).ts == pytest.approx(r.end_ts + 60.0)
    assert GradingModel(seed=1, aging_s=30.0, speed=10.0).grade(r).ts == pytest.approx(
        r.end_ts + 3.0
    )


def _without_ts(g: GradingResult) -> dict[str, object]:
    d = dataclasses.asdict(g)
    del d["ts"]
    return d


def test_grading_is_reproducible_and_independent_of_speed_and_order() -> None:
    slow = FormationModel(seed=2, start_ts=T0)
    fast = FormationModel(seed=2, start_ts=T0, speed=50.0)
    a = GradingModel(seed=4)
    b = GradingModel(seed=4, speed=50.0)
    grades_a = [_without_ts(a.grade(slow.result(n))) for n in range(200)]
    grades_b = [_without_ts(b.grade(fast.result(n))) for n in reversed(range(200))]
    assert grades_a == grades_b[::-1]
    other = GradingModel(seed=5)
    assert _without_ts(other.grade(slow.result(7))) != grades_a[7]


def test_micro_shorts_give_k_high_rejects_at_their_rate() -> None:
    formation = FormationModel(seed=8, start_ts=T0)
    model = GradingModel(seed=8)
    n = 40_000
    grades = [model.grade(formation.result(k)) for k in range(n)]
    k_high = sum("K_HIGH" in g.reasons for g in grades)
    shorts = sum(g.micro_short for g in grades)
    # Binomial: SE = sqrt(p (1 - p) / n). A good cell passes 2 mV/d only beyond 4.8 sigma of
    # its lognormal K (< 1e-6); a short falls under it only below 3.6 sigma of its own (< 2e-4
    # of the shorts), both far inside the SE (5 % of p here).
    se = math.sqrt(MICRO_SHORT_RATE * (1 - MICRO_SHORT_RATE) / n)
    assert abs(k_high / n - MICRO_SHORT_RATE) < 5 * se
    assert abs(shorts / n - MICRO_SHORT_RATE) < 5 * se
    assert all(g.micro_short for g in grades if "K_HIGH" in g.reasons)
    # Good cells land mostly in A or B: OCV2 spreads ~5.4 mV around the band centre (set-point
    # 4 mV, capacity 1.5 mV, K x 7 days 1.1 mV), so ~99 % are within the 15 mV of bin B, less
    # the ~0.6 % below the capacity minimum (2.5 sigma).
    good = [g for g in grades if not g.micro_short]
    ab = sum(g.bin in ("A", "B") for g in good) / len(good)
    assert ab > 0.95


def test_grading_payload_carries_genealogy_and_values() -> None:
    r = _result(n=21)
    g = GradingModel(seed=1).grade(r)
    record = Genealogy().record(r)
    p = grading_payload(g, record)
    assert json.loads(json.dumps(p)) == p
    assert p["cell"] == r.cell_id and p["n"] == 21 and p["roll"] == "R00001" and p["lane"] == 2
    assert (p["cabinet"], p["channel"], p["equipment"]) == (r.cabinet, r.channel, record.equipment)
    assert p["k_mv_per_day"] == pytest.approx(g.k_mv_per_day, abs=1e-4)
    assert p["bin"] == g.bin and p["reasons"] == list(g.reasons)
    assert "micro_short" not in p
    with pytest.raises(ValueError, match="record is of cell 22"):
        grading_payload(g, Genealogy().record(_result(n=22)))
