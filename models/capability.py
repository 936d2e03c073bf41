"""Process capability indices (Cp, Cpk, Pp, Ppk, Cpm) with confidence intervals, per tag.

A chart says whether a process is stable; capability says whether a stable process is good
enough for its specification. Both families are computed because they answer different
questions: Cp/Cpk use the *within* (short-term) sigma, what the process could do if it stayed
put, and Pp/Ppk the *overall* sample standard deviation, what the customer actually received;
a large gap between them is itself a finding (drift between subgroups). Point estimates from
a few dozen cells are noisy, so every index carries a confidence interval: an alert that Cpk
fell below 1.33 means little if its interval reaches 1.6.

Everything is vectorized over tags: the window is ``(n, tags)``, NaN samples are ignored per tag,
and specifications may be one-sided (only ``lsl`` or only ``usl``; NaN marks a missing limit
per tag), in which case Cp and Pp are undefined (NaN) and Cpk / Ppk are the defined side.
The chi-square and normal quantiles come from scipy, imported inside `capability` only: scipy
belongs to the server install, not to a gateway's, so importing this module stays cheap.

References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., section 8.3
(8.3.1-8.3.5: Cp, Cpk, Cpm, Pp/Ppk and confidence intervals, eqs. 8.19-8.20); Kotz & Johnson,
*Process Capability Indices* (1993); Bissell (1990), Applied Statistics 39(3), 331-340.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.detector import FloatArray, as_chunk
from models.params import check_choice, check_float
from models.phase1 import SIGMA_METHODS, robust_sigma

__all__ = ["Capability", "capability"]


@dataclass(frozen=True, slots=True)
class Capability:
    """Capability of a window of data; every array is per tag, shaped ``(tags,)``.

    ``n`` counts the valid samples, ``mean`` is their mean, ``sigma_within`` the short-term
    sigma used by the C-indices and ``sigma_overall`` the sample standard deviation used by the
    P-indices. ``*_low`` / ``*_high`` bound the two-sided ``confidence`` interval of the index
    they are named after. An index that cannot be computed (missing limit, fewer than two
    samples) is NaN.

    Examples:
        >>> rng = np.random.default_rng(5)
        >>> x = rng.normal([10.0, 10.5], 0.5, size=(200, 2))
        >>> cap = capability(x, lsl=8.5, usl=11.5)
        >>> cap.cp.round(1).tolist(), bool(cap.cpk[1] < cap.cpk[0])
        ([1.1, 1.0], True)
        >>> bool(cap.cpk_low[0] < cap.cpk[0] < cap.cpk_high[0])
        True

    References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., 8.3;
    Kotz & Johnson (1993); Bissell (1990).
    """

    n: npt.NDArray[np.int64]
    mean: FloatArray
    sigma_within: FloatArray
    sigma_overall: FloatArray
    cp: FloatArray
    cpl: FloatArray
    cpu: FloatArray
    cpk: FloatArray
    cpm: FloatArray
    pp: FloatArray
    ppl: FloatArray
    ppu: FloatArray
    ppk: FloatArray
    cp_low: FloatArray
    cp_high: FloatArray
    cpk_low: FloatArray
    cpk_high: FloatArray
    pp_low: FloatArray
    pp_high: FloatArray
    ppk_low: FloatArray
    ppk_high: FloatArray
    confidence: float


def capability(
    x: npt.ArrayLike,
    lsl: npt.ArrayLike | None = None,
    usl: npt.ArrayLike | None = None,
    *,
    sigma_within: npt.ArrayLike | None = None,
    sigma_method: str = "mr",
    target: npt.ArrayLike | None = None,
    confidence: float = 0.95,
) -> Capability:
    """Capability indices and confidence intervals of a ``(n, tags)`` window (1-D: one tag).

    ``lsl`` / ``usl`` are scalars or per-tag arrays; None or NaN means "no such limit".
    ``sigma_within`` is the short-term sigma if known (e.g. R-bar/d2 of a subgroup chart);
    otherwise it is estimated by ``robust_sigma(x, sigma_method)`` (mean moving range / d2 by
    default). ``target`` for Cpm defaults to the middle of the specification.

    Formulas (per tag, n valid samples, sigma_w within, s overall, z the normal quantile):

    * Cp = (USL - LSL) / (6 sigma_w); Cpu = (USL - mean) / (3 sigma_w),
      Cpl = (mean - LSL) / (3 sigma_w), Cpk = min(Cpu, Cpl) over the defined sides;
      Cpm = (USL - LSL) / (6 sqrt(sigma_w^2 + (mean - target)^2)). Pp, Ppu, Ppl, Ppk: the same
      with s.
    * Cp interval (chi-square, Montgomery eq. 8.19): Cp * sqrt(chi2_{a/2, n-1} / (n - 1)) to
      Cp * sqrt(chi2_{1-a/2, n-1} / (n - 1)), chi2_p the lower p-quantile. It is exact for Pp
      (s is a sample standard deviation); for Cp with a moving-range sigma, or a sigma given
      from elsewhere, n - 1 degrees of freedom are an approximation.
    * Cpk interval: Bissell's normal approximation (Montgomery eq. 8.20),
      Cpk +/- z_{1-a/2} * sqrt(1 / (9 n) + Cpk^2 / (2 (n - 1))); likewise for Ppk with s.
      It is a large-sample approximation (adequate from about n = 30).

    Needs scipy for the quantiles (imported here, not at module import: the gateway install has
    no scipy, so call this on the server).

    Examples:
        >>> x = np.array([9.8, 10.1, 10.0, 9.9, 10.2, 10.0, 9.9, 10.1, 10.0, 10.0])
        >>> cap = capability(x, usl=10.6)  # an upper limit only: Cp undefined
        >>> bool(np.isnan(cap.cp[0])), bool(cap.cpk[0] == cap.cpu[0])
        (True, True)
    """
    from scipy.stats import chi2, norm  # type: ignore[import-untyped]

    confidence = check_float(
        "capability", "confidence", confidence, 0.0, 1.0, low_open=True, high_open=True
    )
    sigma_method = check_choice("capability", "sigma_method", sigma_method, SIGMA_METHODS)
    a = as_chunk(x, "x")
    m = a.shape[1]
    lo = _per_tag(lsl, m, "lsl")
    hi = _per_tag(usl, m, "usl")
    both = np.isfinite(lo) & np.isfinite(hi)
    for j in np.flatnonzero(both):
        check_float("capability", "usl", float(hi[j]), float(lo[j]), low_open=True)
    ok = np.isfinite(a)
    n = ok.sum(axis=0).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.sum(np.where(ok, a, 0.0), axis=0) / np.maximum(n, 1), np.nan)
    s_over = robust_sigma(a, "std")
    if sigma_within is None:
        s_within = robust_sigma(a, sigma_method)
    else:
        s_within = _per_tag(sigma_within, m, "sigma_within")
        for value in s_within:
            check_float("capability", "sigma_within", float(value), 0.0, low_open=True)
    mid = 0.5 * (lo + hi) if target is None else _per_tag(target, m, "target")

    alpha = 1.0 - confidence
    dof = (n - 1).astype(np.float64)
    z = float(norm.ppf(1.0 - alpha / 2.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        dof_ok = np.where(n > 1, dof, np.nan)
        chi_lo = np.sqrt(chi2.ppf(alpha / 2.0, dof_ok) / dof_ok)
        chi_hi = np.sqrt(chi2.ppf(1.0 - alpha / 2.0, dof_ok) / dof_ok)
        c = _indices(mean, s_within, lo, hi)
        p = _indices(mean, s_over, lo, hi)
        cpm = (hi - lo) / (6.0 * np.sqrt(s_within**2 + (mean - mid) ** 2))
        half_c = z * np.sqrt(1.0 / (9.0 * n) + c[3] ** 2 / (2.0 * dof_ok))
        half_p = z * np.sqrt(1.0 / (9.0 * n) + p[3] ** 2 / (2.0 * dof_ok))
    return Capability(
        n=n,
        mean=mean,
        sigma_within=s_within,
        sigma_overall=s_over,
        cp=c[0],
        cpl=c[1],
        cpu=c[2],
        cpk=c[3],
        cpm=cpm,
        pp=p[0],
        ppl=p[1],
        ppu=p[2],
        ppk=p[3],
        cp_low=c[0] * chi_lo,
        cp_high=c[0] * chi_hi,
        cpk_low=c[3] - half_c,
        cpk_high=c[3] + half_c,
        pp_low=p[0] * chi_lo,
        pp_high=p[0] * chi_hi,
        ppk_low=p[3] - half_p,
        ppk_high=p[3] + half_p,
        confidence=confidence,
    )


def _indices(
    mean: FloatArray, sigma: FloatArray, lo: FloatArray, hi: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """(two-sided, lower, upper, worst side) indices for one sigma; NaN where undefined."""
    two = (hi - lo) / (6.0 * sigma)
    lower = (mean - lo) / (3.0 * sigma)
    upper = (hi - mean) / (3.0 * sigma)
    return two, lower, upper, np.fmin(lower, upper)


def _per_tag(v: npt.ArrayLike | None, m: int, name: str) -> FloatArray:
    """A scalar or ``(tags,)`` argument as a float ``(tags,)`` array; None becomes NaN."""
    if v is None:
        return np.full(m, np.nan)
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 0:
        return np.full(m, float(a))
    if a.shape != (m,):
        raise ValueError(f"{name} must be a scalar or have one value per tag ({m}), got {a.shape}")
    return a.copy()
