"""The scripted process fault the simulator injects, and the ground truth it leaves behind.

A drift detector can only be judged against a known answer: which series went wrong, when, and
by how much. ``FaultSpec`` describes one step change in the mean of one coating series
(a lane and side of the areal weight), timed relative to the simulator start so a demo always
shows it after a predictable warm-up, and sized in multiples of the series' noise sigma, the unit
in which control-chart performance is quoted. ``FaultSpec.record`` produces the ground-truth
record that evaluation code compares detections with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["FaultSpec"]

#: Parameters a fault can be applied to; only the per-lane areal weight for now.
_PARAMS = ("areal_weight",)


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """A step shift of ``shift_sigma`` sigma in one lane/side series during [start_s, end_s).

    Times are seconds after the simulator start; ``end_s=None`` keeps the shift to the end.

    >>> spec = FaultSpec()
    >>> spec.equipment, spec.tag
    ('lane03_A', 'lane03_A areal weight')
    >>> spec.active(39.9), spec.active(40.0)
    (False, True)
    """

    lane: int = 3
    side: str = "A"
    param: str = "areal_weight"
    shift_sigma: float = 1.5
    start_s: float = 40.0
    end_s: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.lane <= 99:
            raise ValueError(f"fault lane must be in 1..99, got {self.lane}")
        if self.side not in ("A", "B"):
            raise ValueError(f"fault side must be 'A' or 'B', got {self.side!r}")
        if self.param not in _PARAMS:
            raise ValueError(f"fault param must be one of {_PARAMS}, got {self.param!r}")
        if not math.isfinite(self.shift_sigma):
            raise ValueError(f"fault shift_sigma must be finite, got {self.shift_sigma}")
        if not (math.isfinite(self.start_s) and self.start_s >= 0.0):
            raise ValueError(f"fault start_s must be >= 0, got {self.start_s}")
        if self.end_s is not None and not self.end_s > self.start_s:
            raise ValueError(f"fault end_s must be after start_s, got {self.end_s}")

    @property
    def equipment(self) -> str:
        """Equipment id of the faulty series, as the plant config names it (``lane03_A``)."""
        return f"lane{self.lane:02d}_{self.side}"

    @property
    def tag(self) -> str:
        """Human-readable name of the faulty series."""
        return f"{self.equipment} {self.param.replace('_', ' ')}"

    def active(self, t_rel: float) -> bool:
        """Whether the shift applies ``t_rel`` seconds after the simulator start."""
        return t_rel >= self.start_s and (self.end_s is None or t_rel < self.end_s)

    def record(
        self, start_ts: float, sigma: float, line: str = "line1", station: str = "coater"
    ) -> dict[str, Any]:
        """Ground-truth record of this fault for a simulator started at epoch ``start_ts``.

        ``start_ts`` in the record is the epoch time the shift begins; ``shift`` is in the
        parameter's unit; ``end_ts`` is ``None`` for a shift that lasts to the end.

        >>> FaultSpec(start_s=10.0).record(1000.0, 0.1)["start_ts"]
        1010.0
        """
        return {
            "fault": "mean_shift",
            "line": line,
            "station": station,
            "equipment": self.equipment,
            "param": self.param,
            "start_ts": start_ts + self.start_s,
            "end_ts": None if self.end_s is None else start_ts + self.end_s,
            "shift": self.shift_sigma * sigma,
            "sigma": sigma,
        }
