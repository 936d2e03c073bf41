"""Aging and grading: OCV over the aging days, K-value, capacity, ACIR, bins and reject codes.

After formation a cell is recharged to a storage state of charge (DOMAIN.md 2, "partial
recharge to storage SOC"), rests for ``aging_days`` and is then graded: its open-circuit voltage
is measured at the start (OCV1) and at the end (OCV2) of the rest, the drop rate
K = (OCV1 - OCV2) / days is the self-discharge proxy (DOMAIN.md 3), a full discharge measures its
capacity and a 1 kHz meter its AC internal resistance. Sorting bins the cell on that vector
against the product's limits (``ProductLimits``) and names every limit it breaks with a reject
code. The line's yield figures come from these bins, so they have to be reproducible: every
random part of a cell's grading is drawn from a stream keyed by (seed, cell index), never from
the order or the speed in which cells arrive.

The model, per cell: the storage charge is a fixed number of Ah, so a cell of lower capacity
ends at a higher state of charge and a higher OCV (``OCV_PER_SOC`` volts per unit of state of
charge) around ``OCV_STORAGE_V``, with a set-point spread; K is lognormal around
``K_MEDIAN_MV_PER_DAY``, and a few per mille of cells (``MICRO_SHORT_RATE``) carry a micro-short
that adds a much larger K, so K_HIGH rejects occur without any scripted fault. OCV readings carry
the meter's noise and K is computed from them, as the plant does. The grading capacity is the
cell's true discharge capacity (lot effect and electrode loading included) with the test's
repeatability; the formation cycler's calibration errors do not reach it, because grading runs
on another machine.
ACIR is a fixed fraction of the cell's DC resistance plus meter noise. The FCE criterion uses
the formation result's FCE.

>>> limits = ProductLimits()
>>> limits.classify(capacity_ah=10.2, acir_mohm=2.0, k_mv_per_day=0.6, ocv_v=3.652, fce=0.89)
('A', ())
>>> limits.classify(capacity_ah=9.9, acir_mohm=2.0, k_mv_per_day=3.1, ocv_v=3.652, fce=0.89)
('NG', ('CAP_LOW', 'K_HIGH'))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.formation import CAPACITY_MEAN_AH, CELL_AH, CellResult
from sim.genealogy import CellRecord

__all__ = [
    "BINS",
    "MICRO_SHORT_RATE",
    "REASONS",
    "GradingModel",
    "GradingResult",
    "ProductLimits",
    "grading_payload",
]

#: Bins in order of quality; NG is a reject.
BINS = ("A", "B", "C", "NG")
#: Reject codes, in the order a result lists them (DOMAIN.md 3, "reject reasons as codes").
REASONS = ("CAP_LOW", "CAP_HIGH", "ACIR_HIGH", "K_HIGH", "OCV_LOW", "OCV_HIGH", "FCE_LOW")

#: Storage charge after formation: 40 % of the rated capacity, put in as a fixed Ah.
STORAGE_SOC = 0.40
#: OCV of a cell of mean capacity at the storage charge, and its slope (NMC mid-SOC, ~5 mV per
#: percent of SOC); the value puts the mean OCV2 of a 7-day aging at the product's OCV centre.
OCV_STORAGE_V = 3.6545
OCV_PER_SOC = 0.5
#: Spread of the storage OCV between cells (charge termination, contact): an assumption.
OCV_SET_SIGMA_V = 0.004
#: OCV meter noise: well inside the 1 mV precision MIIT asks for (DOMAIN.md 1.2).
OCV_METER_SIGMA_V = 0.0002
#: K of a good cell: lognormal, median 0.6 mV/day, under the "K < 2 mV/d" of DOMAIN.md 3.
K_MEDIAN_MV_PER_DAY, K_SIGMA_LOG = 0.6, 0.25
#: Cells with a micro-short and the K it adds (lognormal).
MICRO_SHORT_RATE = 0.004
SHORT_K_MEDIAN_MV_PER_DAY, SHORT_K_SIGMA_LOG = 6.0, 0.4
#: Relative repeatability of the grading discharge capacity.
CAPACITY_REPEAT = 0.001
#: ACIR (1 kHz) as a fraction of the DC resistance, and the meter's noise in mOhm.
ACIR_PER_DCIR, ACIR_METER_SIGMA_MOHM = 0.5, 0.02
#: Spawn-key tag of the per-cell grading streams.
GRADING_STREAM = 0x6AD


@dataclass(frozen=True, slots=True)
class ProductLimits:
    """A product's grading limits (versioned per recipe in a plant, DOMAIN.md 3).

    Capacity ``capacity_min_ah``..``capacity_max_ah`` (the minimum is the rating), ACIR at most
    ``acir_max_mohm``, K at most ``k_max_mv_per_day`` (DOMAIN.md 3, "K < 2 mV/d"), OCV2 in the
    band ``ocv_min_v``..``ocv_max_v`` and FCE at least ``fce_min`` (DOMAIN.md 2, 85-92 %). A
    cell within all of them is binned by the distance of its OCV2 from the band's centre:
    A within ``ocv_a_mv``, B within ``ocv_b_mv``, C in the rest of the band (DOMAIN.md 3,
    "A: +-5 mV, B: +-15 mV, C: +-50 mV"; the band centre stands in for the batch median, so a
    single cell can be graded on its own). The capacity maximum and ACIR limit have no source;
    they sit well outside the simulated population.
    """

    capacity_min_ah: float = CELL_AH
    capacity_max_ah: float = 10.6
    acir_max_mohm: float = 2.6
    k_max_mv_per_day: float = 2.0
    ocv_min_v: float = 3.600
    ocv_max_v: float = 3.700
    ocv_a_mv: float = 5.0
    ocv_b_mv: float = 15.0
    fce_min: float = 0.85

    def __post_init__(self) -> None:
        for name in (
            "capacity_min_ah",
            "capacity_max_ah",
            "acir_max_mohm",
            "k_max_mv_per_day",
            "ocv_min_v",
            "ocv_max_v",
            "ocv_a_mv",
            "ocv_b_mv",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if not self.capacity_max_ah > self.capacity_min_ah:
            raise ValueError(
                f"capacity_max_ah must be > capacity_min_ah ({self.capacity_min_ah}), "
                f"got {self.capacity_max_ah}"
            )
        if not self.ocv_max_v > self.ocv_min_v:
            raise ValueError(
                f"ocv_max_v must be > ocv_min_v ({self.ocv_min_v}), got {self.ocv_max_v}"
            )
        half_mv = (self.ocv_max_v - self.ocv_min_v) * 500.0
        if not self.ocv_a_mv <= self.ocv_b_mv <= half_mv:
            raise ValueError(
                f"need ocv_a_mv <= ocv_b_mv <= half the OCV band ({half_mv:g} mV), got "
                f"{self.ocv_a_mv} and {self.ocv_b_mv}"
            )
        if not 0.0 < self.fce_min <= 1.0:
            raise ValueError(f"fce_min must be in (0, 1], got {self.fce_min}")

    @property
    def ocv_center_v(self) -> float:
        """Centre of the OCV band, the reference of the A/B/C bins."""
        return (self.ocv_min_v + self.ocv_max_v) / 2.0

    def classify(
        self,
        capacity_ah: float,
        acir_mohm: float,
        k_mv_per_day: float,
        ocv_v: float,
        fce: float,
    ) -> tuple[str, tuple[str, ...]]:
        """Bin and reject codes (in ``REASONS`` order) of a cell with these values."""
        broken = {
            "CAP_LOW": capacity_ah < self.capacity_min_ah,
            "CAP_HIGH": capacity_ah > self.capacity_max_ah,
            "ACIR_HIGH": acir_mohm > self.acir_max_mohm,
            "K_HIGH": k_mv_per_day > self.k_max_mv_per_day,
            "OCV_LOW": ocv_v < self.ocv_min_v,
            "OCV_HIGH": ocv_v > self.ocv_max_v,
            "FCE_LOW": fce < self.fce_min,
        }
        reasons = tuple(code for code in REASONS if broken[code])
        if reasons:
            return "NG", reasons
        off_mv = abs(ocv_v - self.ocv_center_v) * 1000.0
        return ("A" if off_mv <= self.ocv_a_mv else "B" if off_mv <= self.ocv_b_mv else "C"), ()


@dataclass(frozen=True, slots=True)
class GradingResult:
    """Aging and grading of one cell, measured at epoch ``ts``.

    ``ocv1_v``/``ocv2_v`` at the start/end of ``aging_days`` of rest, ``k_mv_per_day`` from
    them, ``capacity_ah`` the grading discharge, ``acir_mohm`` at 1 kHz, ``fce`` from
    formation, ``bin`` one of ``BINS`` and ``reasons`` the reject codes (empty unless NG).
    ``micro_short`` is ground truth (whether the cell was drawn with a micro-short)."""

    n: int
    cell_id: str
    ts: float
    ocv1_v: float
    ocv2_v: float
    aging_days: float
    k_mv_per_day: float
    capacity_ah: float
    acir_mohm: float
    fce: float
    bin: str
    reasons: tuple[str, ...]
    micro_short: bool = False


class GradingModel:
    """Seeded aging and grading of formed cells against ``limits``.

    ``aging_days`` is the process rest between OCV1 and OCV2; ``aging_s`` is the wall time from
    a cell's formation end to its grading at speed 1, and ``speed`` shortens it like the
    formation slots.
    """

    def __init__(
        self,
        seed: int | np.random.SeedSequence = 1,
        limits: ProductLimits | None = None,
        aging_days: float = 7.0,
        aging_s: float = 60.0,
        speed: float = 1.0,
    ) -> None:
        if not (math.isfinite(aging_days) and aging_days > 0.0):
            raise ValueError(f"aging_days must be > 0, got {aging_days}")
        if not (math.isfinite(aging_s) and aging_s >= 0.0):
            raise ValueError(f"aging_s must be >= 0, got {aging_s}")
        if not (math.isfinite(speed) and speed > 0.0):
            raise ValueError(f"speed must be > 0, got {speed}")
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self._entropy = ss.entropy
        self._spawn_key = tuple(ss.spawn_key)
        self.limits = limits if limits is not None else ProductLimits()
        self.aging_days = aging_days
        self.aging_s = aging_s
        self.speed = speed

    def grade(self, result: CellResult) -> GradingResult:
        """Age and grade the cell of a formation result."""
        key = (*self._spawn_key, GRADING_STREAM, result.n)
        rng = np.random.default_rng(np.random.SeedSequence(self._entropy, spawn_key=key))
        z = rng.standard_normal(7)
        short = bool(rng.random() < MICRO_SHORT_RATE)
        capacity = result.params.capacity_ah * result.lot_scale * result.loading_scale
        soc = STORAGE_SOC * CELL_AH / capacity
        soc_mean = STORAGE_SOC * CELL_AH / CAPACITY_MEAN_AH
        ocv1 = OCV_STORAGE_V + OCV_PER_SOC * (soc - soc_mean) + OCV_SET_SIGMA_V * z[0]
        k_true = K_MEDIAN_MV_PER_DAY * math.exp(K_SIGMA_LOG * z[1])
        if short:
            k_true += SHORT_K_MEDIAN_MV_PER_DAY * math.exp(SHORT_K_SIGMA_LOG * z[2])
        ocv2 = ocv1 - k_true * self.aging_days / 1000.0
        ocv1_read = float(ocv1 + OCV_METER_SIGMA_V * z[3])
        ocv2_read = float(ocv2 + OCV_METER_SIGMA_V * z[4])
        k = (ocv1_read - ocv2_read) * 1000.0 / self.aging_days
        capacity_read = float(capacity * (1.0 + CAPACITY_REPEAT * z[5]))
        acir = float(ACIR_PER_DCIR * result.params.dcir_mohm + ACIR_METER_SIGMA_MOHM * z[6])
        bin_, reasons = self.limits.classify(capacity_read, acir, k, ocv2_read, result.fce)
        return GradingResult(
            n=result.n,
            cell_id=result.cell_id,
            ts=result.end_ts + self.aging_s / self.speed,
            ocv1_v=ocv1_read,
            ocv2_v=ocv2_read,
            aging_days=self.aging_days,
            k_mv_per_day=k,
            capacity_ah=capacity_read,
            acir_mohm=acir,
            fce=result.fce,
            bin=bin_,
            reasons=reasons,
            micro_short=short,
        )


def grading_payload(grade: GradingResult, record: CellRecord) -> dict[str, Any]:
    """JSON-ready grading result of one cell with its genealogy.

    Keys: ``cell`` (id), ``n``, ``ts`` (epoch s), ``roll``, ``lane``, ``md_from``/``md_to``
    (in-roll metres), ``cabinet``, ``channel``, ``equipment`` (formation channel), ``ocv1_v``,
    ``ocv2_v``, ``aging_days``, ``k_mv_per_day``, ``capacity_ah``, ``acir_mohm``, ``fce``,
    ``bin`` and ``reasons`` (a list of codes). Ground truth (``micro_short``) stays out.
    """
    if grade.n != record.n:
        raise ValueError(f"record is of cell {record.n}, grading of cell {grade.n}")
    return {
        "cell": grade.cell_id,
        "n": grade.n,
        "ts": round(grade.ts, 3),
        "roll": record.roll_id,
        "lane": record.lane,
        "md_from": round(record.md_from_m, 3),
        "md_to": round(record.md_to_m, 3),
        "cabinet": record.cabinet,
        "channel": record.channel,
        "equipment": record.equipment,
        "ocv1_v": round(grade.ocv1_v, 5),
        "ocv2_v": round(grade.ocv2_v, 5),
        "aging_days": grade.aging_days,
        "k_mv_per_day": round(grade.k_mv_per_day, 4),
        "capacity_ah": round(grade.capacity_ah, 4),
        "acir_mohm": round(grade.acir_mohm, 4),
        "fce": round(grade.fce, 5),
        "bin": grade.bin,
        "reasons": list(grade.reasons),
    }
