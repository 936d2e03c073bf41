"""Control limits of the multivariate statistics: Hotelling T2 (beta and F), SPE (Jackson &
Mudholkar) and empirical quantiles.

Limits are computed once, when a model is fitted on the server, and stored in the model's
artifact; scoring on a gateway compares against the stored numbers and never needs these
functions. The beta, F and normal quantiles therefore come from scipy, imported inside the
functions that need them (as in `models.capability`), so importing this module stays cheap and
scipy-free.

Why two T2 limits: in Phase I the observations being judged are the ones that estimated the
mean and covariance, so T2 follows a scaled beta distribution; in Phase II a new observation is
independent of the estimates and T2 follows a scaled F distribution, whose limit is wider because
the estimation error adds to the new observation's own variation.

References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., 11.3 (eqs. 11.19,
11.20 for subgroups; 11.30-11.31 for individual observations); Tracy, Young & Mason (1992),
J. Quality Technology 24(2); Jackson & Mudholkar (1979), Technometrics 21(3), 341-349;
Scrucca, qcc `mqcc` (``T2`` and ``T2.single``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.params import check_float, check_int

__all__ = [
    "empirical_limit",
    "spe_limit",
    "t2_limit_individual",
    "t2_limit_subgroup",
]


def _alpha(owner: str, alpha: float) -> float:
    return check_float(owner, "alpha", alpha, 0.0, 0.5, low_open=True, high_open=True)


def t2_limit_individual(m: int, p: int, alpha: float, phase: int = 2) -> float:
    """Upper limit of T2 for single observations, mean and covariance from ``m`` of them.

    Phase I (judging the ``m`` baseline observations themselves):
    ``(m - 1)^2 / m * Beta(1 - alpha; p / 2, (m - p - 1) / 2)``.
    Phase II (a new observation): ``p (m + 1)(m - 1) / (m (m - p)) * F(1 - alpha; p, m - p)``;
    this is also the PCA score T2 limit with ``p`` = number of components, ``m`` = samples.

    Examples:
        >>> round(t2_limit_individual(25, 8, 0.001, phase=1), 3)  # qcc boiler data, 99.9 %
        17.417
        >>> round(t2_limit_individual(25, 8, 0.001, phase=2), 3)
        70.029
    """
    from scipy.stats import beta, f  # type: ignore[import-untyped]

    owner = "t2_limit_individual"
    p = check_int(owner, "p", p, 1)
    m = check_int(owner, "m", m, p + 2)
    alpha = _alpha(owner, alpha)
    phase = check_int(owner, "phase", phase, 1, 2)
    if phase == 1:
        return float((m - 1) ** 2 / m * beta.ppf(1.0 - alpha, p / 2.0, (m - p - 1) / 2.0))
    return float(p * (m + 1) * (m - 1) / (m * (m - p)) * f.ppf(1.0 - alpha, p, m - p))


def t2_limit_subgroup(m: int, n: int, p: int, alpha: float, phase: int = 2) -> float:
    """Upper limit of T2 for subgroup means, ``m`` baseline subgroups of ``n`` (n >= 2).

    Phase I: ``p (m - 1)(n - 1) / (m n - m - p + 1) * F(1 - alpha; p, m n - m - p + 1)``;
    Phase II: the same with ``(m + 1)`` in place of ``(m - 1)`` (Montgomery eqs. 11.19, 11.20).

    Examples:
        >>> round(t2_limit_subgroup(20, 10, 2, 0.0027, phase=1), 3)
        11.682
    """
    from scipy.stats import f

    owner = "t2_limit_subgroup"
    p = check_int(owner, "p", p, 1)
    n = check_int(owner, "n", n, 2)
    m = check_int(owner, "m", m, 2)
    alpha = _alpha(owner, alpha)
    phase = check_int(owner, "phase", phase, 1, 2)
    dof = m * n - m - p + 1
    if dof < 1:
        raise ValueError(f"T2 limits for {p} variables need m n - m - p + 1 >= 1; got m={m}, n={n}")
    scale = (m - 1) if phase == 1 else (m + 1)
    return float(p * scale * (n - 1) / dof * f.ppf(1.0 - alpha, p, dof))


def spe_limit(residual_eigenvalues: npt.ArrayLike, alpha: float) -> float:
    """Jackson & Mudholkar's upper limit of SPE (Q) from the eigenvalues left out of the model.

    With ``theta_i = sum(lambda_j ** i)`` over the discarded eigenvalues of the (autoscaled)
    covariance matrix and ``h0 = 1 - 2 theta1 theta3 / (3 theta2^2)``:
    ``Q = theta1 (z sqrt(2 theta2 h0^2) / theta1 + 1 + theta2 h0 (h0 - 1) / theta1^2) ^ (1/h0)``,
    ``z`` the standard normal ``1 - alpha`` quantile. It assumes normal data, as T2 does.

    Examples:
        >>> round(spe_limit([0.5, 0.3, 0.2], 0.01), 4)
        4.2178
    """
    from scipy.stats import norm

    alpha = _alpha("spe_limit", alpha)
    lam = np.asarray(residual_eigenvalues, dtype=np.float64)
    lam = lam[lam > 0.0]
    if lam.size == 0:
        raise ValueError("SPE limit needs at least one positive residual eigenvalue; got none")
    t1, t2, t3 = (float(np.sum(lam**i)) for i in (1, 2, 3))
    h0 = 1.0 - 2.0 * t1 * t3 / (3.0 * t2 * t2)
    z = float(norm.ppf(1.0 - alpha))
    inner = z * np.sqrt(2.0 * t2 * h0 * h0) / t1 + 1.0 + t2 * h0 * (h0 - 1.0) / (t1 * t1)
    return float(t1 * inner ** (1.0 / h0))


def empirical_limit(statistic: npt.ArrayLike, alpha: float) -> float:
    """The ``1 - alpha`` quantile of in-control values of a statistic, NaN ignored.

    For statistics with no distribution theory (an EWMA of SPE on autocorrelated data, an
    isolation-forest score) the limit is read off out-of-sample baseline values instead.
    Linear interpolation between order statistics (numpy's default).

    Examples:
        >>> empirical_limit(np.arange(101.0), 0.05)
        95.0
    """
    alpha = _alpha("empirical_limit", alpha)
    s = np.asarray(statistic, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size < 2:
        raise ValueError(f"an empirical limit needs at least 2 finite values; got {s.size}")
    return float(np.quantile(s, 1.0 - alpha))
