"""Where the coated web is: electrode roll id and machine-direction (MD) metre at a given time.

Genealogy hangs on this: a cell's electrode is cut from one roll between two MD positions, and
a coating fault that starts at some time hits exactly the web coated after it, so a ground
truth that names affected cells has to translate times into MD metres and back. The web runs
at the coater's nominal speed from the simulator start, and rolls are ``roll_length_m`` long
and numbered from 1. Speed noise is ignored here on purpose: it is a fraction of a percent and
would make the position depend on every sample drawn, where the ground truth needs a closed
form.

>>> web = WebModel(speed_m_per_min=60.0, roll_length_m=1200.0)
>>> web.position(90.0)
WebPosition(roll_id='R00001', md_m=90.0, total_m=90.0)
>>> web.position(1230.0).roll_id
'R00002'
>>> web.time_at(1290.0)
1290.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ROLL_LENGTH_M", "WebModel", "WebPosition", "roll_id"]

#: Length of one coated electrode roll, in metres.
ROLL_LENGTH_M = 1200.0


def roll_id(number: int) -> str:
    """Id of roll ``number`` (1-based): ``R00001``."""
    return f"R{number:05d}"


@dataclass(frozen=True, slots=True)
class WebPosition:
    """Roll and MD metre within it; ``total_m`` counts from the start of the run."""

    roll_id: str
    md_m: float
    total_m: float


@dataclass(frozen=True, slots=True)
class WebModel:
    """Closed-form web position: ``speed_m_per_min`` from t = 0, rolls of ``roll_length_m``."""

    speed_m_per_min: float = 60.0
    roll_length_m: float = ROLL_LENGTH_M

    def __post_init__(self) -> None:
        if not (math.isfinite(self.speed_m_per_min) and self.speed_m_per_min > 0.0):
            raise ValueError(f"speed_m_per_min must be > 0, got {self.speed_m_per_min}")
        if not (math.isfinite(self.roll_length_m) and self.roll_length_m > 0.0):
            raise ValueError(f"roll_length_m must be > 0, got {self.roll_length_m}")

    def total_m(self, t_rel: float) -> float:
        """Metres of web coated ``t_rel`` seconds after the start (0 before it)."""
        return max(t_rel, 0.0) * self.speed_m_per_min / 60.0

    def time_at(self, total_m: float) -> float:
        """Seconds after the start at which web metre ``total_m`` passed the coating head."""
        return max(total_m, 0.0) * 60.0 / self.speed_m_per_min

    def at_metre(self, total_m: float) -> WebPosition:
        """Roll and in-roll MD metre of run metre ``total_m``."""
        total_m = max(total_m, 0.0)
        index = int(total_m // self.roll_length_m)
        return WebPosition(roll_id(index + 1), total_m - index * self.roll_length_m, total_m)

    def position(self, t_rel: float) -> WebPosition:
        """Roll and MD metre under the coating head ``t_rel`` seconds after the start."""
        return self.at_metre(self.total_m(t_rel))
