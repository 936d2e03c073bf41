"""The traversing beta gauge: cross-direction (CD) scans of areal weight across the coated web.

The lane series of ``sim.coating`` are what a plant keeps after the fact; what a coater's gauge
delivers is a scan: a head with a beta source traverses the web and reports areal weight at a
row of CD positions, then starts the next scan while the web moves on underneath. DOMAIN.md 1.3
says to model a scan as an array of (cd_position_mm, value) with a start and an end timestamp,
and to take take rate, spot size and traverse time from the gauge's configuration, since no
authoritative figures exist; here they are constructor parameters with plausible defaults
(a 10 mm pitch, within the 5-20 mm spot sizes DOMAIN.md 1.3 quotes, and a 6 s traverse).

Lanes are coated stripes separated by uncoated gaps; a scan has points on the lanes only (the
foil-only readings over a gap are nothing a net-weight profile reports). The scan is built
around the lane means the coating model drew, so a fault injected into a lane series appears in
that lane's scans. Each point is its lane mean, shaped by a mild heavy edge (the "picture frame"
a slot die leaves where the coating piles up at the stripe edges) and with point noise. The edge
shape is made mean-zero over the points of a lane, which is how mass conservation across the
die would have it (heavy edges, a slightly light centre), so the scan's own lane average is an
unbiased estimate of the lane mean it was given.

>>> from sim.web import WebModel
>>> gauge = BetaGauge(lanes=2, seed=1, points_per_lane=4)
>>> scan = gauge.scan(0.0, "A", np.array([20.0, np.nan]), WebModel().position(30.0))
>>> scan.pos_mm.tolist()
[45.0, 95.0, 145.0, 195.0]
>>> (scan.roll_id, scan.md_m, scan.ts_end)
('R00001', 30.0, 6.0)
>>> sorted(scan_payload(scan))
['aw', 'lane_aw', 'md_m', 'pos_mm', 'roll', 'side', 'te', 'ts']
>>> scan_payload(scan)["lane_aw"][1] is None
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sim.coating import SIDES
from sim.nominal import check_range
from sim.web import WebPosition

__all__ = [
    "EDGE_GAIN",
    "EDGE_MM",
    "GAP_MM",
    "LANE_WIDTH_MM",
    "POINT_SIGMA",
    "POINTS_PER_LANE",
    "SCAN_S",
    "BetaGauge",
    "GaugeScan",
    "scan_payload",
    "web_width_mm",
]

#: Coated width of one lane (stripe), in mm.
LANE_WIDTH_MM = 200.0
#: Uncoated foil between two lanes, and at either web edge, in mm.
GAP_MM = 20.0
#: Measurement points per lane and scan: a 10 mm pitch on a 200 mm lane.
POINTS_PER_LANE = 20
#: Seconds one traverse takes: about 150 mm/s over a four-lane web, 6 m of web at 60 m/min.
SCAN_S = 6.0
#: Decay length of the heavy edge from each lane edge, in mm.
EDGE_MM = 6.0
#: Height of the heavy edge at the very lane edge, as a fraction of the lane mean.
EDGE_GAIN = 0.03
#: Noise of one point reading, in mg/cm2 (a short dwell per spot is noisier than a lane mean).
POINT_SIGMA = 0.2


def web_width_mm(lanes: int, lane_width_mm: float = LANE_WIDTH_MM, gap_mm: float = GAP_MM) -> float:
    """Width of a web of ``lanes`` lanes, with a gap between lanes and at both edges, in mm.

    >>> web_width_mm(4)
    900.0
    """
    return lanes * lane_width_mm + (lanes + 1) * gap_mm


@dataclass(frozen=True, slots=True)
class GaugeScan:
    """One traverse over side ``side``: from ``ts_start`` to ``ts_end`` (epoch seconds),
    starting at MD metre ``md_m`` of roll ``roll_id``.

    ``pos_mm`` and ``areal_weight`` (mg/cm2) are the points in CD order, on the lanes only;
    ``lane_means`` (one per lane) is the scan's own average of each lane's points, NaN for a
    lane that gave none (its series had a dropout).
    """

    ts_start: float
    ts_end: float
    side: str
    roll_id: str
    md_m: float
    pos_mm: npt.NDArray[np.float64]
    areal_weight: npt.NDArray[np.float64]
    lane_means: npt.NDArray[np.float64]


class BetaGauge:
    """Seeded traversing gauge over a ``lanes``-lane web.

    Lane ``k`` (1-based) covers ``gap_mm + (k - 1) * (lane_width_mm + gap_mm)`` onwards for
    ``lane_width_mm``; each scan reads ``points_per_lane`` evenly spaced points per lane (at the
    centres of equal bins) and takes ``scan_s`` seconds. The heavy edge rises by ``edge_gain``
    times the lane mean at a lane edge and decays over ``edge_mm``; ``point_sigma`` (mg/cm2) is
    the noise of one reading.
    """

    def __init__(
        self,
        lanes: int,
        seed: int | np.random.SeedSequence = 1,
        lane_width_mm: float = LANE_WIDTH_MM,
        gap_mm: float = GAP_MM,
        points_per_lane: int = POINTS_PER_LANE,
        scan_s: float = SCAN_S,
        edge_mm: float = EDGE_MM,
        edge_gain: float = EDGE_GAIN,
        point_sigma: float = POINT_SIGMA,
    ) -> None:
        if not 1 <= lanes <= 99:
            raise ValueError(f"lanes must be in 1..99, got {lanes}")
        if not 1 <= points_per_lane <= 1000:
            raise ValueError(f"points_per_lane must be in 1..1000, got {points_per_lane}")
        check_range("lane_width_mm", lane_width_mm, 0.0, 5000.0, low_open=True)
        check_range("gap_mm", gap_mm, 0.0, 1000.0, low_open=True)
        check_range("scan_s", scan_s, 0.0, 3600.0, low_open=True)
        check_range("edge_mm", edge_mm, 0.0, 1000.0, low_open=True)
        check_range("edge_gain", edge_gain, 0.0, 0.5)
        check_range("point_sigma", point_sigma, 0.0, 10.0)
        self.lanes = lanes
        self.lane_width_mm = lane_width_mm
        self.gap_mm = gap_mm
        self.points_per_lane = points_per_lane
        self.scan_s = scan_s
        self.point_sigma = point_sigma
        self._rng = np.random.default_rng(seed)
        starts = gap_mm + np.arange(lanes) * (lane_width_mm + gap_mm)
        offsets = (np.arange(points_per_lane) + 0.5) * (lane_width_mm / points_per_lane)
        self._pos = starts[:, None] + offsets[None, :]
        edge = np.exp(-np.minimum(offsets, lane_width_mm - offsets) / edge_mm)
        self._shape: npt.NDArray[np.float64] = edge_gain * (edge - edge.mean())

    @property
    def width_mm(self) -> float:
        """Width of the whole web, gaps at both edges included, in mm."""
        return web_width_mm(self.lanes, self.lane_width_mm, self.gap_mm)

    def lane_bounds_mm(self) -> npt.NDArray[np.float64]:
        """(lanes, 2) array of each lane's coated CD extent, start and end, in mm."""
        starts = self.gap_mm + np.arange(self.lanes) * (self.lane_width_mm + self.gap_mm)
        return np.stack([starts, starts + self.lane_width_mm], axis=1)

    def edge_profile(self) -> npt.NDArray[np.float64]:
        """Relative heavy-edge shape at one lane's points (mean zero over them)."""
        return self._shape.copy()

    def scan(self, ts: float, side: str, lane_means: npt.ArrayLike, web: WebPosition) -> GaugeScan:
        """The scan of side ``side`` starting at epoch ``ts`` over a web whose lanes average
        ``lane_means`` (one per lane, mg/cm2; NaN for none) and which is at ``web`` then."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
        means = np.asarray(lane_means, dtype=np.float64)
        if means.shape != (self.lanes,):
            raise ValueError(
                f"lane_means must have shape ({self.lanes},), got {tuple(means.shape)}"
            )
        # The full grid of noise is drawn even for lanes without points, so a dropout does not
        # shift the noise of the scans that follow.
        noise = self._rng.normal(0.0, self.point_sigma, self._pos.shape)
        profile = means[:, None] * (1.0 + self._shape[None, :]) + noise
        present = ~np.isnan(means)
        scan_means = np.full(self.lanes, np.nan)
        scan_means[present] = profile[present].mean(axis=1)
        return GaugeScan(
            ts_start=ts,
            ts_end=ts + self.scan_s,
            side=side,
            roll_id=web.roll_id,
            md_m=web.md_m,
            pos_mm=self._pos[present].ravel(),
            areal_weight=profile[present].ravel(),
            lane_means=scan_means,
        )


def scan_payload(scan: GaugeScan) -> dict[str, Any]:
    """The scan as a JSON-ready dict, rounded to what the instruments resolve.

    Keys: ``ts`` and ``te`` scan start and end (epoch seconds, 3 decimals), ``side`` ("A" or
    "B"), ``roll`` roll id, ``md_m`` MD metre at the start (3 decimals), ``pos_mm`` CD
    positions (mm, 2 decimals), ``aw`` areal weights at those positions (mg/cm2, 4 decimals),
    ``lane_aw`` the scan's lane averages (mg/cm2, 4 decimals; null for a lane without points).
    """
    lane_aw = np.round(scan.lane_means, 4).tolist()
    return {
        "ts": round(scan.ts_start, 3),
        "te": round(scan.ts_end, 3),
        "side": scan.side,
        "roll": scan.roll_id,
        "md_m": round(scan.md_m, 3),
        "pos_mm": np.round(scan.pos_mm, 2).tolist(),
        "aw": np.round(scan.areal_weight, 4).tolist(),
        "lane_aw": [None if math.isnan(v) else v for v in lane_aw],
    }
