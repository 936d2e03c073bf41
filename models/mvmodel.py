"""A fitted multivariate station model: the arrays and numbers that scoring needs, nothing more.

Fitting (robust covariance, PCA, cross-validated limits, an isolation forest) happens on the
server with scikit-learn and scipy; a gateway only scores. What crosses between them is this
frozen record, so the edge's arithmetic depends on numpy alone and a model can be inspected,
versioned and compared as data. `models.mvartifact` writes and reads it; `models.mvmonitor`
scores with it.

Two kinds:

* ``"hotelling"``: T2 of the autoscaled observation vector against a (robust) covariance, its
  inverse stored in ``precision``. Best for a handful of variables and enough baseline.
* ``"pca"``: T2 on the ``a`` retained principal components plus SPE (Q), the squared distance to
  the model plane. T2 watches movement within the usual correlation structure, SPE a break of it.
  With ``lags > 0`` the observation vector holds the last ``lags + 1`` samples (dynamic PCA), so
  the model also learns how the variables move in time.

Both statistics may be EWMA-smoothed (``t2_lam``/``spe_lam`` below 1), which makes small
sustained changes visible at the cost of a few samples' delay. ``t2_center``/``spe_center`` hold
each variable's in-control mean contribution; their sums are the statistics' in-control means,
where a smoothed statistic starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.detector import FloatArray
from models.isoforest import IsoForest

__all__ = ["KINDS", "MvModel"]

KINDS = ("hotelling", "pca")


@dataclass(frozen=True, slots=True)
class MvModel:
    """A fitted model over ``p`` variables; ``k = p * (lags + 1)`` columns after lagging.

    Lagged columns are ordered ``[x_t, x_{t-1}, ..., x_{t-lags}]``, ``p`` columns each, so column
    ``lag * p + j`` is variable ``j`` ``lag`` samples ago. ``mean``/``scale`` (``(k,)``)
    autoscale them. ``"pca"`` models hold ``loadings`` ``(k, a)`` and the score variances
    ``eigenvalues`` ``(a,)``; ``"hotelling"`` models hold ``precision`` ``(k, k)``. Limits are
    for the plotted (smoothed where configured) statistics; ``spe_limit`` is NaN without SPE and
    ``iso_limit`` NaN without an isolation forest. ``info`` is free-form metadata (training
    window, fitting options, library versions) carried into the artifact.
    """

    kind: str
    variables: tuple[str, ...]
    units: tuple[str, ...]
    lags: int
    mean: FloatArray
    scale: FloatArray
    loadings: FloatArray
    eigenvalues: FloatArray
    precision: FloatArray
    t2_limit: float
    spe_limit: float
    t2_lam: float
    spe_lam: float
    t2_center: FloatArray
    spe_center: FloatArray
    iforest: IsoForest | None = None
    iso_limit: float = math.nan
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = len(self.variables)
        k = p * (self.lags + 1)
        if self.kind not in KINDS:
            raise ValueError(f"model kind must be one of {KINDS}, got {self.kind!r}")
        if p == 0 or len(set(self.variables)) != p:
            raise ValueError(f"variables must be non-empty and unique, got {self.variables!r}")
        if len(self.units) != p:
            raise ValueError(f"got {len(self.units)} units for {p} variables")
        if self.lags < 0:
            raise ValueError(f"lags must be >= 0, got {self.lags}")
        for name, arr, shape in (
            ("mean", self.mean, (k,)),
            ("scale", self.scale, (k,)),
            ("t2_center", self.t2_center, (p,)),
            ("spe_center", self.spe_center, (p,)),
        ):
            if arr.shape != shape:
                raise ValueError(f"{name} must be shaped {shape}, got {arr.shape}")
        if not np.all(self.scale > 0.0):
            raise ValueError("every scale must be > 0")
        if self.kind == "pca":
            a = self.eigenvalues.shape[0]
            if self.loadings.shape != (k, a) or a < 1 or not np.all(self.eigenvalues > 0.0):
                raise ValueError(
                    f"a PCA model needs loadings (k={k}, a) and a >= 1 positive eigenvalues; "
                    f"got {self.loadings.shape} and {self.eigenvalues.shape}"
                )
        elif self.precision.shape != (k, k):
            raise ValueError(f"precision must be shaped {(k, k)}, got {self.precision.shape}")
        for name, lam in (("t2_lam", self.t2_lam), ("spe_lam", self.spe_lam)):
            if not 0.0 < lam <= 1.0:
                raise ValueError(f"{name} must be in (0, 1] (1 = not smoothed), got {lam!r}")
        if not self.t2_limit > 0.0:
            raise ValueError(f"t2_limit must be > 0, got {self.t2_limit!r}")
        if self.kind == "pca" and not self.spe_limit > 0.0:
            raise ValueError(f"a PCA model needs spe_limit > 0, got {self.spe_limit!r}")
        if self.iforest is not None and not math.isfinite(self.iso_limit):
            raise ValueError("an isolation forest needs a finite iso_limit")

    @property
    def components(self) -> int:
        """Retained principal components (0 for a Hotelling model)."""
        return int(self.eigenvalues.shape[0]) if self.kind == "pca" else 0

    @property
    def width(self) -> int:
        """Columns of the (lagged) observation vector, ``p * (lags + 1)``."""
        return len(self.variables) * (self.lags + 1)
