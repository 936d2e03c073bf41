"""Genealogy: which electrode web every cell was cut from, and where it was formed.

A quality finding is only actionable when it can be traced: a coating fault matters because of
the cells made from the faulted web, a weak cell matters because of the roll and lane it came
from. The model keeps this closed-form so that a ground truth can list affected cells without
replaying the run. Cells are numbered ``n = 0, 1, 2, ...`` in the order formation starts them
(see ``sim.formation``), and the electrode store is first in, first out: cell ``n`` takes the
``n // lanes``-th cut of lane ``n % lanes + 1``, cuts of ``electrode_m_per_cell`` metres
following each other along the machine direction of each roll. A roll's tail shorter than a
cut is scrap, so no cut spans two rolls. Both coated sides of the lane go into the cell, so a
fault on side A or side B of a lane reaches the same cells.

Formation is downstream of coating, but the simulator runs formation on a compressed clock and
coating in real time, so the two clocks cannot be lined up in wall time; the link is the
material order instead: the earlier a stretch of web was coated, the lower the numbers of the
cells made from it. ``cells_coated`` turns a coating-fault window (seconds after the start,
through ``WebModel.total_m``) into the cells that carry the faulted web; when each of them is
formed, ``FormationModel.slot`` tells.

>>> g = Genealogy(WebModel(), lanes=4, electrode_m_per_cell=0.75)
>>> g.cell_id(0)
'C00000001'
>>> cut = g.electrode(5)
>>> cut.roll_id, cut.lane, cut.md_from_m, cut.md_to_m
('R00001', 2, 0.75, 1.5)
>>> g.electrode(4 * 1600).roll_id  # 1600 cuts of 0.75 m fill a 1200 m roll
'R00002'
>>> g.cells_from_web(2, 0.0, 1.6)
[1, 5, 9]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from sim.web import WebModel, roll_id

__all__ = [
    "ELECTRODE_M_PER_CELL",
    "CellRecord",
    "ElectrodeCut",
    "Formed",
    "Genealogy",
    "cell_id",
]

#: Electrode length of one 10 Ah cell: DOMAIN.md 1.4 gives ~3.3 mAh/cm2 per side at 20 mg/cm2
#: (the coater's nominal), so both sides hold ~6.5 mAh/cm2 and 10 Ah needs ~1500 cm2 of
#: electrode, 0.75 m of a 200 mm wide coated lane.
ELECTRODE_M_PER_CELL = 0.75


def cell_id(n: int) -> str:
    """Id of cell ``n`` (0-based, formation order), numbered from 1 like rolls: ``C00000001``.

    >>> cell_id(41)
    'C00000042'
    """
    if n < 0:
        raise ValueError(f"cell index n must be >= 0, got {n}")
    return f"C{n + 1:08d}"


@dataclass(frozen=True, slots=True)
class ElectrodeCut:
    """The stretch of coated web a cell's electrode comes from.

    ``md_from_m``..``md_to_m`` is the machine-direction range inside roll ``roll_id``;
    ``total_from_m``..``total_to_m`` is the same range in run metres (from the coater's start,
    as ``WebModel.total_m`` counts them). Ranges are half-open: [from, to)."""

    roll_id: str
    lane: int
    md_from_m: float
    md_to_m: float
    total_from_m: float
    total_to_m: float


class Formed(Protocol):
    """What genealogy needs to know about a cell's formation (``CellResult``, ``CellSlot``)."""

    @property
    def n(self) -> int: ...
    @property
    def cabinet(self) -> int: ...
    @property
    def channel(self) -> int: ...
    @property
    def start_ts(self) -> float: ...
    @property
    def end_ts(self) -> float: ...


@dataclass(frozen=True, slots=True)
class CellRecord:
    """Everything a cell's id leads to: its electrode cut and its formation channel and time.

    ``formation_start_ts``..``formation_end_ts`` (epoch seconds) runs from the first charge to
    the discharge cut-off."""

    n: int
    cell_id: str
    roll_id: str
    lane: int
    md_from_m: float
    md_to_m: float
    total_from_m: float
    total_to_m: float
    cabinet: int
    channel: int
    formation_start_ts: float
    formation_end_ts: float

    @property
    def equipment(self) -> str:
        """Formation channel as the plant config names it (``cab01-ch02``)."""
        return f"cab{self.cabinet:02d}-ch{self.channel:02d}"


@dataclass(frozen=True, slots=True)
class Genealogy:
    """Closed-form electrode genealogy of a ``lanes``-lane coater on web ``web``."""

    web: WebModel = field(default_factory=WebModel)
    lanes: int = 4
    electrode_m_per_cell: float = ELECTRODE_M_PER_CELL

    def __post_init__(self) -> None:
        if not 1 <= self.lanes <= 99:
            raise ValueError(f"lanes must be in 1..99, got {self.lanes}")
        length, roll = self.electrode_m_per_cell, self.web.roll_length_m
        if not (math.isfinite(length) and 0.0 < length <= roll):
            raise ValueError(
                f"electrode_m_per_cell must be in (0, {roll}] (the roll length), got {length}"
            )

    @property
    def cuts_per_roll(self) -> int:
        """Cell electrodes cut from one roll of one lane (the tail beyond them is scrap)."""
        return int(self.web.roll_length_m // self.electrode_m_per_cell)

    def cell_id(self, n: int) -> str:
        """Id of cell ``n``: ``C00000001`` for n = 0."""
        return cell_id(n)

    def _cut_bounds(self, k: int) -> tuple[int, float, float]:
        """Roll number (0-based), in-roll start and run-metre start of a lane's ``k``-th cut."""
        roll, i = divmod(k, self.cuts_per_roll)
        md_from = i * self.electrode_m_per_cell
        return roll, md_from, roll * self.web.roll_length_m + md_from

    def electrode(self, n: int) -> ElectrodeCut:
        """The electrode cut of cell ``n``."""
        if n < 0:
            raise ValueError(f"cell index n must be >= 0, got {n}")
        k, lane0 = divmod(n, self.lanes)
        roll, md_from, total_from = self._cut_bounds(k)
        length = self.electrode_m_per_cell
        return ElectrodeCut(
            roll_id=roll_id(roll + 1),
            lane=lane0 + 1,
            md_from_m=md_from,
            md_to_m=md_from + length,
            total_from_m=total_from,
            total_to_m=total_from + length,
        )

    def cells_from_web(self, lane: int, total_m_from: float, total_m_to: float) -> list[int]:
        """Cells (ascending ``n``) whose electrode overlaps run metres [from, to) of ``lane``."""
        if not 1 <= lane <= self.lanes:
            raise ValueError(f"lane must be in 1..{self.lanes}, got {lane}")
        if not (math.isfinite(total_m_from) and math.isfinite(total_m_to)):
            raise ValueError(f"web range must be finite metres, got {total_m_from}..{total_m_to}")
        if not total_m_to >= total_m_from:
            raise ValueError(
                f"total_m_to must be >= total_m_from ({total_m_from}), got {total_m_to}"
            )
        roll_m, length, per_roll = (
            self.web.roll_length_m,
            self.electrode_m_per_cell,
            self.cuts_per_roll,
        )
        lo, hi = max(total_m_from, 0.0), total_m_to
        if hi <= lo:
            return []
        # Candidate cuts from the arithmetic, one extra on each side; the exact test below uses
        # the same expressions as ``electrode`` so the two can never disagree.
        first_roll, last_roll = int(lo // roll_m), int(hi // roll_m)
        k_lo = first_roll * per_roll + max(int((lo - first_roll * roll_m) // length) - 1, 0)
        k_hi = last_roll * per_roll + min(int((hi - last_roll * roll_m) // length) + 1, per_roll)
        cells = []
        for k in range(k_lo, k_hi + 1):
            _, _, start = self._cut_bounds(k)
            if start < hi and start + length > lo:
                cells.append(k * self.lanes + lane - 1)
        return cells

    def cells_coated(self, lane: int, t_rel_from: float, t_rel_to: float) -> list[int]:
        """Cells whose electrode was coated on ``lane`` during [from, to) seconds after the
        coater's start (a coating fault's window)."""
        return self.cells_from_web(lane, self.web.total_m(t_rel_from), self.web.total_m(t_rel_to))

    def record(self, cell: Formed) -> CellRecord:
        """Genealogy record of a formed cell (a ``CellResult`` or a ``CellSlot``)."""
        cut = self.electrode(cell.n)
        return CellRecord(
            n=cell.n,
            cell_id=cell_id(cell.n),
            roll_id=cut.roll_id,
            lane=cut.lane,
            md_from_m=cut.md_from_m,
            md_to_m=cut.md_to_m,
            total_from_m=cut.total_from_m,
            total_to_m=cut.total_to_m,
            cabinet=cell.cabinet,
            channel=cell.channel,
            formation_start_ts=cell.start_ts,
            formation_end_ts=cell.end_ts,
        )
