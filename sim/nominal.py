"""The nominal operating point of one simulated signal: mean, noise sigma, unit and range.

The simulator's numbers have to agree in three places: the numeric model draws samples around
``mean`` with Gaussian noise ``sigma``, the OPC UA server advertises ``unit`` and the
instrument range ``low..high`` as EngineeringUnits/EURange, and the fault model expresses its
step in multiples of ``sigma``. Keeping the four together in one frozen value stops them from
drifting apart. Values follow the demo plant in ``config/plant.example.yaml``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Nominal", "check_range"]


@dataclass(frozen=True, slots=True)
class Nominal:
    """Mean and noise of an in-control signal, with its unit and instrument range."""

    mean: float
    sigma: float
    unit: str
    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.sigma >= 0.0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")
        if not self.low < self.high:
            raise ValueError(f"range must have low < high, got {self.low}..{self.high}")


def check_range(name: str, value: float, low: float, high: float, low_open: bool = False) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is finite and in [low, high] (or
    (low, high] with ``low_open``): the check every model constructor makes of its settings.

    >>> check_range("scan_s", 0.0, 0.0, 60.0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: scan_s must be in (0, 60], got 0.0
    """
    above = value > low if low_open else value >= low
    if not (math.isfinite(value) and above and value <= high):
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low:g}, {high:g}], got {value}")
