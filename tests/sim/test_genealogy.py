"""Genealogy: electrode cuts per cell, the inverse look-up for coating faults, cell records."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from sim.formation import FormationModel
from sim.genealogy import Genealogy, cell_id
from sim.web import WebModel

T0 = 1_700_000_000.0


def test_every_cell_has_one_cut_of_one_roll_in_web_order() -> None:
    g = Genealogy(WebModel(roll_length_m=100.0), lanes=3, electrode_m_per_cell=0.7)
    per_roll = g.cuts_per_roll
    assert per_roll == 142  # 142 x 0.7 = 99.4 m; the last 0.6 m of each roll is scrap
    previous: dict[int, float] = {}
    for n in range(3 * 2 * per_roll + 10):
        cut = g.electrode(n)
        assert cut.lane == n % 3 + 1
        assert cut.md_to_m - cut.md_from_m == pytest.approx(0.7)
        assert 0.0 <= cut.md_from_m and cut.md_to_m <= 100.0 + 1e-9
        roll_number = int(cut.roll_id[1:])
        assert cut.total_from_m == pytest.approx((roll_number - 1) * 100.0 + cut.md_from_m)
        # Along a lane, cuts follow each other without overlap.
        if cut.lane in previous:
            assert cut.total_from_m >= previous[cut.lane] - 1e-9
        previous[cut.lane] = cut.total_to_m
    assert g.electrode(3 * per_roll).roll_id == "R00002"
    assert g.electrode(3 * per_roll).md_from_m == 0.0
    assert g.electrode(3 * per_roll - 1).roll_id == "R00001"


@pytest.mark.parametrize(
    "lane, lo, hi",
    [(1, 0.0, 10.0), (2, 99.1, 101.3), (3, 55.55, 55.56), (1, 250.0, 250.0), (2, -5.0, 0.7)],
)
def test_cells_from_web_finds_exactly_the_overlapping_cuts(lane: int, lo: float, hi: float) -> None:
    g = Genealogy(WebModel(roll_length_m=100.0), lanes=3, electrode_m_per_cell=0.7)
    found = g.cells_from_web(lane, lo, hi)
    # Half-open ranges: an empty range [x, x) overlaps nothing.
    brute = [
        n
        for n in range(3 * 3 * g.cuts_per_roll)
        if (c := g.electrode(n)).lane == lane
        and c.total_from_m < hi
        and c.total_to_m > lo
        and hi > lo
    ]
    assert found == brute
    if hi > lo:
        assert found  # every stretch of a lane's web reaches at least one cell, or the scrap
    for n in found:  # round trip: each found cell's cut lies on that lane, in the range
        cut = g.electrode(n)
        assert cut.lane == lane and cut.total_from_m < hi and cut.total_to_m > lo


def test_the_scrap_tail_of_a_roll_reaches_no_cell() -> None:
    g = Genealogy(WebModel(roll_length_m=100.0), lanes=3, electrode_m_per_cell=0.7)
    assert g.cells_from_web(1, 99.45, 99.95) == []


def test_cells_coated_maps_a_coating_window_through_the_web_speed() -> None:
    g = Genealogy(WebModel(speed_m_per_min=60.0), lanes=4, electrode_m_per_cell=0.75)
    # 60 m/min: seconds 30..31 are metres 30..31, cuts 40 and 41 of lane 3.
    assert g.cells_coated(3, 30.0, 31.0) == [40 * 4 + 2, 41 * 4 + 2]
    assert g.cells_coated(3, 30.0, 31.0) == g.cells_from_web(3, 30.0, 31.0)


def test_cell_ids_are_unique_and_formatted() -> None:
    ids = [cell_id(n) for n in range(10_000)]
    assert len(set(ids)) == len(ids) and ids[0] == "C00000001" and ids[-1] == "C00010000"
    assert Genealogy().cell_id(7) == "C00000008"


def test_records_combine_electrode_and_formation() -> None:
    model = FormationModel(seed=1, cabinets=2, channels=4, start_ts=T0)
    g = Genealogy(lanes=4)
    for n in range(0, 200, 13):
        slot = model.slot(n)
        rec = g.record(slot)
        cut = g.electrode(n)
        assert rec.cell_id == slot.cell_id == cell_id(n)
        assert (rec.roll_id, rec.lane, rec.md_from_m, rec.md_to_m) == (
            cut.roll_id,
            cut.lane,
            cut.md_from_m,
            cut.md_to_m,
        )
        assert (rec.cabinet, rec.channel) == (slot.cabinet, slot.channel)
        assert 1 <= rec.cabinet <= 2 and 1 <= rec.channel <= 4
        assert rec.formation_start_ts == slot.start_ts and rec.formation_end_ts == slot.end_ts
        assert rec.equipment == slot.equipment
        assert g.record(model.result(n)) == rec


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda g: Genealogy(lanes=0), r"lanes must be in 1\.\.99, got 0"),
        (lambda g: Genealogy(electrode_m_per_cell=0.0), r"electrode_m_per_cell must be in"),
        (lambda g: Genealogy(electrode_m_per_cell=2000.0), r"\(0, 1200.0\].*got 2000.0"),
        (lambda g: g.electrode(-1), "n must be >= 0, got -1"),
        (lambda g: g.cells_from_web(5, 0.0, 1.0), r"lane must be in 1\.\.4, got 5"),
        (lambda g: g.cells_from_web(1, 0.0, math.inf), "finite"),
        (lambda g: g.cells_from_web(1, 2.0, 1.0), r"total_m_to must be >= total_m_from"),
        (lambda g: cell_id(-3), "n must be >= 0, got -3"),
    ],
)
def test_genealogy_rejects_bad_input(call: Callable[[Genealogy], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(Genealogy())
