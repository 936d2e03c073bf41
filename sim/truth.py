"""The ground-truth log: which fault was injected, on which series, when, and which cells it hit.

Detections are scored against this file, so it has to say more than the scenario did: the
actual epoch times, the series in the plant config's names, and the cells that carry the
fault. Each fault gives two JSON lines. The ``start`` record (``Fault.record`` plus
``event`` and ``fault``, the fault's index in the scenario) is written when the fault begins,
so a live consumer knows at once. The ``end`` record is written when the fault ends, or when
the simulator stops with the fault still active (``"open": true``, ``end_ts`` the stop time),
and lists the cells:

* a coating fault: the cells whose electrode was cut from the faulted lane's web coated in the
  window (``sim.genealogy``; both sides of a lane go into the same electrode), whether or not
  they have been formed yet;
* a fault on one formation channel: the cells formed on that channel in the window;
* a material lot effect: every cell whose formation overlaps the window;
* a recipe changeover of all lanes: the cells cut from any lane's web coated in the window.

``affects`` tells what the cells have in common: ``product`` for faults that change the cells
themselves (mean shift, drift, variance increase, lot effect, recipe changeover), ``records``
for a calibration offset (the cells are fine, their recorded values are wrong), ``data`` for
faults of the measurement only (stuck, dropout, spike, bad status, clock skew), whose cells
merely lack trustworthy readings.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sim.fault import CoatingTarget, Fault, FormationTarget
from sim.formation import FormationModel
from sim.genealogy import Genealogy, cell_id
from sim.nominal import Nominal

__all__ = ["AFFECTS", "GroundTruth"]

log = logging.getLogger(__name__)

#: What the affected cells of each fault kind have in common (see the module docstring).
AFFECTS = {
    "mean_shift": "product",
    "linear_drift": "product",
    "variance_increase": "product",
    "lot_effect": "product",
    "recipe_changeover": "product",
    "calibration_offset": "records",
    "stuck": "data",
    "dropout": "data",
    "spike": "data",
    "bad_status": "data",
    "clock_skew": "data",
}


class GroundTruth:
    """Start and end records of ``faults`` for a simulator started at ``start_ts``.

    ``nominals`` gives each targeted parameter's in-control noise and unit; ``path`` (optional)
    receives every record as one JSON line, appended as it happens. A write error is logged and
    counted in ``errors``, never raised: the simulation goes on, and ``records`` still holds it.
    """

    def __init__(
        self,
        faults: Sequence[Fault],
        start_ts: float,
        nominals: dict[str, Nominal],
        genealogy: Genealogy,
        formation: FormationModel,
        path: Path | None = None,
    ) -> None:
        self.faults = tuple(faults)
        self.start_ts = start_ts
        self.nominals = nominals
        self.genealogy = genealogy
        self.formation = formation
        self.path = path
        self.records: list[dict[str, Any]] = []
        self.errors = 0
        self._started: set[int] = set()
        self._ended: set[int] = set()

    def update(self, t_rel: float) -> list[dict[str, Any]]:
        """Emit the records of faults that began or ended by ``t_rel`` seconds after the start;
        returns the new records."""
        new = []
        for index, fault in enumerate(self.faults):
            if index not in self._started and t_rel >= fault.start_s:
                self._started.add(index)
                new.append(self._start_record(index, fault))
            if (
                index in self._started
                and index not in self._ended
                and fault.end_s is not None
                and t_rel >= fault.end_s
            ):
                self._ended.add(index)
                new.append(self._end_record(index, fault, fault.end_s, open_=False))
        self._emit(new)
        return new

    def close(self, t_rel: float) -> list[dict[str, Any]]:
        """End records, marked open, for the faults still active at ``t_rel`` (the stop)."""
        new = [
            self._end_record(index, fault, t_rel, open_=True)
            for index, fault in enumerate(self.faults)
            if index in self._started and index not in self._ended and t_rel > fault.start_s
        ]
        self._ended.update(r["fault"] for r in new)
        self._emit(new)
        return new

    def cells(self, fault: Fault, end_s: float) -> list[int]:
        """Indexes of the cells ``fault`` reached during [start_s, end_s)."""
        target, start_s = fault.target, fault.start_s
        if isinstance(target, CoatingTarget):
            return self.genealogy.cells_coated(target.lane, start_s, end_s)
        if target is None and fault.kind == "recipe_changeover":
            found: set[int] = set()
            for lane in range(1, self.genealogy.lanes + 1):
                found.update(self.genealogy.cells_coated(lane, start_s, end_s))
            return sorted(found)
        ts_from, ts_to = self.start_ts + start_s, self.start_ts + end_s
        if isinstance(target, FormationTarget):
            return self.formation.cells_on_channel(target.cabinet, target.channel, ts_from, ts_to)
        return self.formation.cells_formed(ts_from, ts_to)

    def _start_record(self, index: int, fault: Fault) -> dict[str, Any]:
        nominal = self.nominals[fault.param]
        record = fault.record(
            self.start_ts,
            self.formation.cabinets,
            self.formation.channels,
            nominal.sigma,
            nominal.unit,
            lanes=self.genealogy.lanes,
            mean=nominal.mean,
        )
        everything = "all lanes" if fault.station == "coater" else "all channels"
        target = everything if fault.target is None else fault.target.equipment
        log.info("fault begins: %s on %s %s", fault.kind, target, fault.param)
        return {"event": "start", "fault": index, **record}

    def _end_record(self, index: int, fault: Fault, end_s: float, open_: bool) -> dict[str, Any]:
        cells = self.cells(fault, end_s)
        log.info("fault ends: %s (%d cells)", fault.kind, len(cells))
        return {
            "event": "end",
            "fault": index,
            "kind": fault.kind,
            "start_ts": self.start_ts + fault.start_s,
            "end_ts": self.start_ts + end_s,
            "open": open_,
            "affects": AFFECTS[fault.kind],
            "cells": [cell_id(n) for n in cells],
        }

    def _emit(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        self.records.extend(records)
        if self.path is None:
            return
        try:
            with self.path.open("a", encoding="utf-8") as f:
                for record in records:
                    f.write(json.dumps(record) + "\n")
        except OSError as exc:
            self.errors += 1
            log.error("cannot write ground truth to %s: %s", self.path, exc)
