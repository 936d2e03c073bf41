"""Phase I estimation: robust sigma estimators and trial control limits with outlier exclusion.

Every chart's limits are only as good as the baseline they were fitted on. A baseline usually
holds a few assignable-cause points (a bad batch, a sensor hiccup), and one wild point inflates a
standard deviation enough to blind the chart. This module holds the estimators detectors share:
``robust_sigma`` (moving range, median moving range, MAD or plain standard deviation, NaN ignored
per tag) and ``fit_phase1``, the textbook trial-limit procedure: compute limits, drop the points
beyond them, re-estimate, repeat until nothing more is dropped. Everything is vectorized over tags
(columns); only the few exclusion rounds are a Python loop.

References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., sections 6.2.1
(trial control limits), 6.4 (individuals chart, MR-bar/d2) and 7.2 (Phase I use of control charts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.constants import d2
from models.detector import BaselineError, FloatArray, as_chunk
from models.params import check_choice, check_float, check_int

__all__ = [
    "Phase1Limits",
    "fit_phase1",
    "known_center_sigma",
    "require_samples",
    "require_spread",
    "robust_sigma",
    "tag_names",
]

#: d2 for a moving range of two consecutive values (Montgomery, Appendix VI).
D2 = d2(2)
#: Median of |X1 - X2| for normal data, in sigma units (sqrt(2) * 0.6745).
MEDIAN_MR = 0.954
#: Scale that makes the median absolute deviation consistent for a normal sigma.
MAD_SCALE = 1.4826

SIGMA_METHODS = ("mr", "mr_median", "mad", "std")


def robust_sigma(x: npt.ArrayLike, method: str = "mr") -> FloatArray:
    """Per-tag sigma of a ``(n, tags)`` sample (1-D is one tag), NaN samples ignored.

    ``"mr"`` is the mean moving range / d2 (1.128), the individuals-chart estimator: it measures
    short-term variation, so a slow drift in the baseline does not inflate it. ``"mr_median"``
    (median moving range / 0.954) and ``"mad"`` (1.4826 * median absolute deviation) shrug off
    isolated outliers. ``"std"`` is the sample standard deviation (ddof 1), the overall
    variation. Moving ranges are taken between consecutive *valid* samples, so a NaN gap is
    bridged rather than breaking the series. A tag with fewer than two valid samples gets NaN.

    Examples:
        >>> x = np.array([[1.0, 10.0], [2.0, np.nan], [4.0, 12.0], [3.0, 11.0]])
        >>> robust_sigma(x, "mr").round(4).tolist()  # mean MR (1+2+1)/3 and (2+1)/2, over d2
        [1.182, 1.3298]
        >>> robust_sigma(x, "std").round(4).tolist()
        [1.291, 1.0]
    """
    method = check_choice("robust_sigma", "method", method, SIGMA_METHODS)
    a = as_chunk(x, "x")
    ok = np.isfinite(a)
    n = ok.sum(axis=0)
    if method == "std":
        mean = _masked_mean(a, ok)
        dev = np.where(ok, a - mean, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.sum(dev * dev, axis=0) / (n - 1)
        return np.where(n > 1, np.sqrt(np.where(n > 1, var, 0.0)), np.nan)
    if method == "mad":
        med = _masked_median(a, ok)
        mad = MAD_SCALE * _masked_median(np.abs(a - med), ok)
        return np.where(n > 1, mad, np.nan)
    packed = _pack(a, ok)
    mr = np.abs(np.diff(packed, axis=0))
    valid = np.arange(mr.shape[0])[:, None] < (n - 1)
    if method == "mr":
        return _masked_mean(mr, valid) / D2
    return _masked_median(mr, valid) / MEDIAN_MR


@dataclass(frozen=True, slots=True)
class Phase1Limits:
    """Trial limits from ``fit_phase1``; per-tag arrays are shaped ``(tags,)``.

    ``excluded`` marks, shaped like the input ``(n, tags)``, the samples dropped as out of
    control; ``iterations`` is the number of exclusion rounds that removed something.

    Examples:
        >>> rng = np.random.default_rng(7)
        >>> x = rng.normal(5.0, 0.5, size=(60, 2))
        >>> x[10, 1] = 9.0  # one wild point on the second tag
        >>> lim = fit_phase1(x, tags=["clean", "spiky"])
        >>> lim.n_excluded.tolist(), bool(lim.excluded[10, 1])
        ([0, 1], True)

    References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., 6.2.1, 7.2.
    """

    center: FloatArray
    sigma: FloatArray
    lcl: FloatArray
    ucl: FloatArray
    n_used: npt.NDArray[np.int64]
    n_excluded: npt.NDArray[np.int64]
    excluded: npt.NDArray[np.bool_]
    iterations: int


def fit_phase1(
    x: npt.ArrayLike,
    L: float = 3.0,  # noqa: N803 - the literature's name
    max_iter: int = 10,
    exclude: bool = True,
    min_samples: int = 20,
    tags: list[str] | None = None,
    sigma_method: str = "mr",
) -> Phase1Limits:
    """Centre, sigma and ``center +/- L * sigma`` limits per tag, dropping out-of-control points.

    Each round estimates the centre (mean) and sigma (``robust_sigma(.., sigma_method)``) from
    the samples still in use, then drops those strictly beyond the limits; it stops when a round
    drops nothing or after ``max_iter`` rounds, and the returned estimates are always those of the
    samples finally kept. Dropped samples never come back (the textbook procedure: a point with
    an assignable cause does not belong in the baseline). With ``exclude=False`` no sample is
    dropped. NaN samples are ignored.

    Raises `BaselineError`, naming the tag (``tags[j]`` or ``"#j"``), when a tag has fewer than
    ``min_samples`` valid samples, before or after exclusion, or its sigma is not positive.

    Examples:
        >>> x = np.r_[np.tile([9.0, 11.0], 15), 30.0]  # 30 samples, then one at 30
        >>> lim = fit_phase1(x, tags=["temp"])
        >>> lim.center.tolist(), lim.n_used.tolist(), lim.n_excluded.tolist()
        ([10.0], [30], [1])
    """
    L = check_float("fit_phase1", "L", L, 0.0, low_open=True)
    max_iter = check_int("fit_phase1", "max_iter", max_iter, 1)
    min_samples = check_int("fit_phase1", "min_samples", min_samples, 2)
    sigma_method = check_choice("fit_phase1", "sigma_method", sigma_method, SIGMA_METHODS)
    a = as_chunk(x, "x")
    names = tags or [f"#{j}" for j in range(a.shape[1])]
    if len(names) != a.shape[1]:
        raise ValueError(f"got {len(names)} tag names for {a.shape[1]} tag columns")
    ok = np.isfinite(a)
    _require(ok.sum(axis=0), ok.sum(axis=0), min_samples, names)
    used = ok.copy()
    rounds = 0
    while True:
        kept = np.where(used, a, np.nan)
        center = _masked_mean(kept, used)
        sigma = robust_sigma(kept, sigma_method)
        flat = np.flatnonzero(~(sigma > 0.0))
        if flat.size:
            j = int(flat[0])
            raise BaselineError(
                "Phase I needs a baseline that varies; "
                f"tag {names[j]} has sigma {float(sigma[j])!r}"
            )
        if not exclude or rounds >= max_iter:
            break
        with np.errstate(invalid="ignore"):
            out = used & (np.abs(a - center) > L * sigma)
        if not out.any():
            break
        used &= ~out
        rounds += 1
        _require(used.sum(axis=0), ok.sum(axis=0), min_samples, names)
    n_used = used.sum(axis=0).astype(np.int64)
    return Phase1Limits(
        center=center,
        sigma=sigma,
        lcl=center - L * sigma,
        ucl=center + L * sigma,
        n_used=n_used,
        n_excluded=ok.sum(axis=0).astype(np.int64) - n_used,
        excluded=ok & ~used,
        iterations=rounds,
    )


def _require(
    n_used: npt.NDArray[np.int_], n_valid: npt.NDArray[np.int_], min_samples: int, names: list[str]
) -> None:
    short = np.flatnonzero(n_used < min_samples)
    if short.size:
        j = int(short[0])
        dropped = int(n_valid[j] - n_used[j])
        why = f" after excluding {dropped} as out of control" if dropped else ""
        raise BaselineError(
            f"Phase I needs at least {min_samples} baseline samples per tag; "
            f"tag {names[j]} has {int(n_used[j])}{why}"
        )


def _masked_mean(a: FloatArray, ok: npt.NDArray[np.bool_]) -> FloatArray:
    """Column means over ``ok`` entries; NaN (not a warning) for a column with none."""
    n = ok.sum(axis=0)
    total = np.sum(np.where(ok, a, 0.0), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.where(n > 0, n, 1), np.nan)


def _pack(a: FloatArray, ok: npt.NDArray[np.bool_]) -> FloatArray:
    """Each column's valid samples moved to the top in their original order, NaN below."""
    order = np.argsort(~ok, axis=0, kind="stable")
    kept = np.take_along_axis(ok, order, axis=0)
    return np.where(kept, np.take_along_axis(a, order, axis=0), np.nan)


def _masked_median(a: FloatArray, ok: npt.NDArray[np.bool_]) -> FloatArray:
    """Column medians over ``ok`` entries; NaN for a column with none (no warning)."""
    n = ok.sum(axis=0)
    if a.shape[0] == 0:
        return np.full(a.shape[1], np.nan)
    s = np.sort(np.where(ok, a, np.inf), axis=0)
    lo = np.clip((n - 1) // 2, 0, None)[None, :]
    hi = np.clip(n // 2, 0, a.shape[0] - 1)[None, :]
    med = 0.5 * (np.take_along_axis(s, lo, axis=0)[0] + np.take_along_axis(s, hi, axis=0)[0])
    return np.where(n > 0, med, np.nan)


def tag_names(tags: list[str] | None, n_tags: int) -> list[str]:
    """The names used in Phase I messages: the caller's tag names, else ``#0``, ``#1``, ..."""
    return list(tags) if tags else [f"#{j}" for j in range(n_tags)]


def require_samples(x: FloatArray, owner: str, min_samples: int, names: list[str]) -> None:
    """Raise `BaselineError` naming the first tag with fewer than ``min_samples`` usable values.

    Examples:
        >>> try:
        ...     require_samples(np.ones((7, 1)), "EWMA", 20, ["lane03_A"])
        ... except BaselineError as e:
        ...     print(e)
        EWMA needs at least 20 baseline samples per tag; tag lane03_A has 7
    """
    n = np.sum(np.isfinite(x), axis=0)
    short = np.flatnonzero(n < min_samples)
    if short.size:
        j = int(short[0])
        raise BaselineError(
            f"{owner} needs at least {min_samples} baseline samples per tag; "
            f"tag {names[j]} has {int(n[j])}"
        )


def require_spread(spread: FloatArray, owner: str, names: list[str], what: str = "sigma") -> None:
    """Raise `BaselineError` naming the first tag whose baseline does not vary."""
    flat = np.flatnonzero(~(spread > 0.0))
    if flat.size:
        j = int(flat[0])
        raise BaselineError(
            f"{owner} needs a baseline that varies; tag {names[j]} has {what} "
            f"{float(spread[j])!r}"
        )


def known_center_sigma(
    center: npt.ArrayLike, sigma: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Validate a centre and sigma known from earlier studies: 1-D, one length, sigma > 0."""
    c = np.atleast_1d(np.asarray(center, dtype=np.float64))
    s = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
    if c.shape != s.shape or c.ndim != 1:
        raise ValueError(f"center and sigma must be 1-D of one length, got {c.shape}, {s.shape}")
    if not (np.all(s > 0.0) and np.all(np.isfinite(s)) and np.all(np.isfinite(c))):
        raise BaselineError(
            "center must be finite and sigma finite and > 0 for every tag, got "
            f"{c.tolist()}, {s.tolist()}"
        )
    return c, s
