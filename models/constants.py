"""Control-chart constants (d2, d3, c4 and the factors built from them) for subgroups of 2-25.

Shewhart charts turn a within-subgroup range or standard deviation into an estimate of sigma and
into limits for the plotted statistics; the bias factors that do this depend only on the
subgroup size. They live here, in one place, so that every chart (and every comparison with a
published example) uses the same numbers.

* ``c4(n)`` is exact, from the gamma function: E[S] = c4(n) sigma for normal data.
* ``d2(n)`` (E[R] / sigma) is the three-decimal table printed in Montgomery, *Introduction to
  Statistical Quality Control*, 8th ed., Appendix VI (also ASTM E2587 and the qcc R package up to
  3.0). Published sigma estimates such as Rbar / 2.326 are computed with these rounded values,
  so using them reproduces worked examples to the printed digit; they agree with the exact
  integral to within 5e-4.
* ``d3(n)`` (sd[R] / sigma) is given to seven digits, computed by numerical integration of the
  distribution of the range of n standard normal variables (Tippett 1925); rounded to three
  decimals it is Montgomery's Appendix VI column. Three decimals are too coarse for limits that
  must match published ones to more digits, so the table carries more.

The factors A2, A3, D3, D4, B3, B4 are derived from these for 3-sigma limits (Montgomery 6.2 and
6.3), with the lower factors clipped at zero as in the printed tables.

References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., sections 6.2,
6.3 and Appendix VI; Tippett (1925), Biometrika 17.
"""

from __future__ import annotations

import math
from typing import Any, overload

import numpy as np
import numpy.typing as npt

__all__ = ["A2", "A3", "B3", "B4", "D3", "D4", "MAX_TABLE_N", "c4", "d2", "d3"]

FloatArray = npt.NDArray[np.float64]

#: Largest subgroup size in the d2 / d3 tables (range charts are inefficient well before that).
MAX_TABLE_N = 25

# Index = subgroup size n; entries 0 and 1 are undefined.
_D2 = np.array(
    [np.nan, np.nan,
     1.128, 1.693, 2.059, 2.326, 2.534, 2.704, 2.847, 2.970, 3.078, 3.173, 3.258, 3.336,
     3.407, 3.472, 3.532, 3.588, 3.640, 3.689, 3.735, 3.778, 3.819, 3.858, 3.895, 3.931],
)  # fmt: skip
_D3 = np.array(
    [np.nan, np.nan,
     0.8525025, 0.8883680, 0.8798082, 0.8640819, 0.8480397, 0.8332053, 0.8198315,
     0.8078343, 0.7970507, 0.7873146, 0.7784783, 0.7704162, 0.7630231, 0.7562114,
     0.7499081, 0.7440518, 0.7385909, 0.7334815, 0.7286863, 0.7241733, 0.7199148,
     0.7158867, 0.7120682, 0.7084408],
)  # fmt: skip


@overload
def d2(n: int) -> float: ...
@overload
def d2(n: npt.NDArray[np.integer]) -> FloatArray: ...
def d2(n: int | npt.NDArray[np.integer]) -> float | FloatArray:
    """Mean of the range of ``n`` standard normal variables, n in 2..25 (table value).

    Examples:
        >>> d2(5)
        2.326
    """
    return _lookup(_D2, n, "d2")


@overload
def d3(n: int) -> float: ...
@overload
def d3(n: npt.NDArray[np.integer]) -> FloatArray: ...
def d3(n: int | npt.NDArray[np.integer]) -> float | FloatArray:
    """Standard deviation of the range of ``n`` standard normal variables, n in 2..25.

    Examples:
        >>> round(d3(2), 4)
        0.8525
    """
    return _lookup(_D3, n, "d3")


@overload
def c4(n: int) -> float: ...
@overload
def c4(n: npt.NDArray[np.integer]) -> FloatArray: ...
def c4(n: int | npt.NDArray[np.integer]) -> float | FloatArray:
    """E[S] / sigma for a normal sample of size ``n`` >= 2, exactly (via log-gamma).

    c4(n) = sqrt(2 / (n - 1)) * Gamma(n / 2) / Gamma((n - 1) / 2); log-gamma keeps it finite for
    large n.

    Examples:
        >>> round(c4(5), 4)
        0.94
    """
    a = np.asarray(n)
    _check_n(a, 2, None, "c4")
    m = a.astype(np.float64)
    lg = np.vectorize(math.lgamma, otypes=[np.float64])
    out = np.sqrt(2.0 / (m - 1.0)) * np.exp(lg(m / 2.0) - lg((m - 1.0) / 2.0))
    return float(out) if out.ndim == 0 else out


@overload
def A2(n: int) -> float: ...
@overload
def A2(n: npt.NDArray[np.integer]) -> FloatArray: ...
def A2(n: int | npt.NDArray[np.integer]) -> float | FloatArray:
    """Xbar limits are Xbarbar +/- A2 * Rbar: A2 = 3 / (d2 sqrt(n)).

    Examples:
        >>> round(A2(5), 3)
        0.577
    """
    return _scalar(3.0 / (d2(np.asarray(n)) * np.sqrt(np.asarray(n, dtype=np.float64))))


@overload
def A3(n: int) -> float: ...
@overload
def A3(n: npt.NDArray[np.integer]) -> FloatArray: ...
def A3(n: int | npt.NDArray[np.integer]) -> float | FloatArray:
    """Xbar limits are Xbarbar +/- A3 * Sbar: A3 = 3 / (c4 sqrt(n)).

    Examples:
        >>> round(A3(5), 3)
        1.427
    """
    return _scalar(3.0 / (c4(np.asarray(n)) * np.sqrt(np.asarray(n, dtype=np.float64))))


@overload
def D3(n: int) -> float: ...
@overload
def D3(n: npt.NDArray[np.integer]) -> FloatArray: ...
def D3(n: int | npt.NDArray[np.integer]) -> float | FloatArray:
    """R chart LCL = D3 * Rbar: D3 = max(0, 1 - 3 d3 / d2).

    Examples:
        >>> round(D3(7), 3)
        0.076
    """
    a = np.asarray(n)
    return _scalar(np.maximum(0.0, 1.0 - 3.0 * d3(a) / d2(a)))


@overload
def D4(n: int) -> float: ...
@overload
def D4(n: npt.NDArray[np.integer]) -> FloatArray: ...
def D4(n: int | npt.NDArray[np.integer]) -> float | FloatArray:
    """R chart UCL = D4 * Rbar: D4 = 1 + 3 d3 / d2.

    Examples:
        >>> round(D4(2), 3)
        3.267
    """
    a = np.asarray(n)
    return _scalar(1.0 + 3.0 * d3(a) / d2(a))


@overload
def B3(n: int) -> float: ...
@overload
def B3(n: npt.NDArray[np.integer]) -> FloatArray: ...
def B3(n: int | npt.NDArray[np.integer]) -> float | FloatArray:
    """S chart LCL = B3 * Sbar: B3 = max(0, 1 - 3 sqrt(1 - c4^2) / c4).

    Examples:
        >>> round(B3(6), 3)
        0.03
    """
    c = c4(np.asarray(n))
    return _scalar(np.maximum(0.0, 1.0 - 3.0 * np.sqrt(1.0 - c * c) / c))


@overload
def B4(n: int) -> float: ...
@overload
def B4(n: npt.NDArray[np.integer]) -> FloatArray: ...
def B4(n: int | npt.NDArray[np.integer]) -> float | FloatArray:
    """S chart UCL = B4 * Sbar: B4 = 1 + 3 sqrt(1 - c4^2) / c4.

    Examples:
        >>> round(B4(5), 3)
        2.089
    """
    c = c4(np.asarray(n))
    return _scalar(1.0 + 3.0 * np.sqrt(1.0 - c * c) / c)


def _lookup(table: FloatArray, n: int | npt.NDArray[np.integer], name: str) -> float | FloatArray:
    a = np.asarray(n)
    _check_n(a, 2, MAX_TABLE_N, name)
    return _scalar(table[a])


def _check_n(a: npt.NDArray[Any], low: int, high: int | None, name: str) -> None:
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} needs integer subgroup sizes, got dtype {a.dtype}")
    bad = (a < low) | (a > high if high is not None else False)
    if np.any(bad):
        span = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(
            f"{name} is defined for subgroup sizes {span}; got {np.asarray(a)[bad].ravel()[0]}"
        )


def _scalar(x: float | FloatArray) -> float | FloatArray:
    a = np.asarray(x, dtype=np.float64)
    return float(a) if a.ndim == 0 else a
