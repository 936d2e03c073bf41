"""The ground-truth log on injected times: start and end records, cells, write failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.fault import FAULT_KINDS, CoatingTarget, Fault, FormationTarget
from sim.formation import FormationModel
from sim.genealogy import Genealogy
from sim.simulator import NOMINALS
from sim.truth import AFFECTS, GroundTruth

T0 = 1_700_000_000.0


def _truth(faults: list[Fault], path: Path | None = None) -> GroundTruth:
    formation = FormationModel(seed=1, cabinets=2, channels=4, start_ts=T0)
    return GroundTruth(faults, T0, NOMINALS, Genealogy(lanes=4), formation, path)


def test_every_fault_kind_says_what_its_cells_have_in_common() -> None:
    assert set(AFFECTS) == set(FAULT_KINDS)
    assert set(AFFECTS.values()) == {"product", "records", "data"}


def test_records_appear_when_faults_begin_and_end_and_open_ones_close_at_the_stop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "truth.jsonl"
    shift = Fault("mean_shift", 10.0, 20.0, CoatingTarget(1, "B"), 2.0)
    lot = Fault("lot_effect", 15.0, None, None, -3.0)
    truth = _truth([shift, lot], path)
    assert truth.update(9.9) == []
    (start,) = truth.update(10.0)
    assert start["event"] == "start" and start["fault"] == 0 and start["start_ts"] == T0 + 10.0
    assert [r["event"] for r in truth.update(15.0)] == ["start"]
    (end,) = truth.update(20.0)
    assert end == {
        "event": "end",
        "fault": 0,
        "kind": "mean_shift",
        "start_ts": T0 + 10.0,
        "end_ts": T0 + 20.0,
        "open": False,
        "affects": "product",
        # 10..20 s at 1 m/s is run metres 10..20 of lane 1: cuts 13..26 of 0.75 m overlap it.
        "cells": [Genealogy(lanes=4).cell_id(4 * k) for k in range(13, 27)],
    }
    assert truth.update(30.0) == []
    (closing,) = truth.close(40.0)
    assert closing["open"] and closing["end_ts"] == T0 + 40.0 and closing["cells"]
    assert truth.close(41.0) == []
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines == truth.records and len(lines) == 4


def test_a_channel_fault_lists_the_cells_formed_on_that_channel() -> None:
    fault = Fault("mean_shift", 0.0, 300.0, FormationTarget(2, 3, "cell_temperature"), 2.0)
    truth = _truth([fault])
    truth.update(0.0)
    (end,) = truth.update(300.0)
    formation = truth.formation
    expected = formation.cells_on_channel(2, 3, T0, T0 + 300.0)
    assert end["cells"] == [Genealogy().cell_id(n) for n in expected]
    assert all((formation.slot(n).cabinet, formation.slot(n).channel) == (2, 3) for n in expected)
    # Channel 7 of 8 runs 90 s of its 120 s slot ahead: cells start at -90, 30, 150 and 270 s,
    # and the first is still forming at 0 s (formation takes 11.7 h of a 13 h slot, 108 s).
    starts = [formation.slot(n).start_ts - T0 for n in expected]
    assert starts == pytest.approx([-90.0, 30.0, 150.0, 270.0])


def test_a_write_failure_is_counted_and_the_record_kept(tmp_path: Path) -> None:
    truth = _truth([Fault("stuck", 0.0, None, CoatingTarget(1, "A"))], tmp_path)  # a directory
    with pytest.raises(AssertionError):
        assert truth.errors  # nothing written yet
    (record,) = truth.update(0.0)
    assert truth.errors == 1 and truth.records == [record]
