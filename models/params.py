"""Validation of detector parameters, with one message shape for every detector.

Each detector checks its hyperparameters when it is built, so that a bad design fails at start
rather than as a wrong chart hours later. Every message reads the same way ("The 'lam'
parameter of Ewma must be a float in (0, 1]. Got 1.5 instead."), which users and tests can
rely on.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

__all__ = ["ParameterError", "check_choice", "check_float", "check_int"]


class ParameterError(ValueError):
    """A detector parameter is outside what the detector accepts."""


def _fail(owner: str, name: str, what: str, value: Any) -> ParameterError:
    return ParameterError(
        f"The '{name}' parameter of {owner} must be {what}. Got {value!r} instead."
    )


def check_float(
    owner: str,
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float within the interval; raises `ParameterError` otherwise.

    Examples:
        >>> check_float("Ewma", "lam", 0.2, 0.0, 1.0, low_open=True)
        0.2
        >>> try:
        ...     check_float("Ewma", "lam", 1.5, 0.0, 1.0, low_open=True)
        ... except ParameterError as e:
        ...     print(e)
        The 'lam' parameter of Ewma must be a float in (0, 1]. Got 1.5 instead.
    """
    if math.isinf(high) and not math.isinf(low):
        what = f"a float {'>' if low_open else '>='} {_g(low)}"
    elif math.isinf(low) and not math.isinf(high):
        what = f"a float {'<' if high_open else '<='} {_g(high)}"
    elif math.isinf(low) and math.isinf(high):
        what = "a finite float"
    else:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        what = f"a float in {left}{_g(low)}, {_g(high)}{right}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(owner, name, what, value)
    v = float(value)
    ok = math.isfinite(v) and (v > low if low_open else v >= low) and (
        v < high if high_open else v <= high
    )
    if not ok:
        raise _fail(owner, name, what, value)
    return v


def check_int(owner: str, name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``; raises `ParameterError` otherwise."""
    what = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(owner, name, what, value)
    if value < low or (high is not None and value > high):
        raise _fail(owner, name, what, value)
    return int(value)


def check_choice(owner: str, name: str, value: Any, choices: Collection[str]) -> str:
    """``value`` if it is one of ``choices``; raises `ParameterError` otherwise."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise _fail(owner, name, f"one of {listed}", value)
    return str(value)


def _g(x: float) -> str:
    return f"{x:g}"
