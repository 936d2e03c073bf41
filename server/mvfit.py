"""Fitting multivariate station models on the server, with scikit-learn; gateways only score.

A model is fitted on an in-control baseline, a ``(rows, variables)`` table, and returned as a
`models.mvmodel.MvModel` ready for `models.mvartifact.save_model`:

* **Hotelling** (``kind="hotelling"``): scikit-learn's ``MinCovDet`` gives a centre and
  covariance that a few bad rows in the baseline cannot drag (``robust=False``: the classical
  mean and covariance).
* **PCA** (``kind="pca"``): scikit-learn's ``PCA`` on autoscaled data (mean, standard deviation
  ddof 1), optionally on lagged vectors (dynamic PCA, ``lags``). Components by cumulative
  explained variance (``components=0.9``), a fixed count (``components=5``), or ``"cv"``: the
  count with the least cross-validated PRESS, each held-out value predicted from the other
  variables of its row (the "ekf" scheme of Bro et al., 2008, computed in closed form as a
  deleted residual), which unlike row-wise PRESS does not keep falling as components are added.
* **Isolation forest** (``iforest=True``): scikit-learn's ``IsolationForest`` on the same
  scaled vectors, exported as arrays for `models.isoforest.IsoForest`.

Limits (``alpha`` is the false-alarm probability per statistic and sample):

* ``limits="theory"``: T2 from the F distribution, SPE by Jackson & Mudholkar, the isolation
  score by the in-sample quantile. Valid for independent, normal, unsmoothed samples.
* ``limits="cv"``: the ``1 - alpha`` quantile of out-of-sample statistics from blocked k-fold
  cross-validation of the whole fit on the baseline: each contiguous block is scored, through
  the same `models.mvmonitor.MvMonitor` a gateway runs, by a model fitted without it. This is
  what smoothed statistics need (no distribution theory for an EWMA of an autocorrelated SPE),
  and it does not flatter the model the way in-sample statistics do (a fitted plane is closer to
  its own training rows than to new ones). The in-control mean contributions that a smoothed
  statistic starts from come from the same out-of-sample scores.

References: Rousseeuw & Van Driessen (1999) (MCD); Jackson & Mudholkar (1979); Ku, Storer &
Georgakis (1995) (dynamic PCA); Bro, Kjeldahl, Smilde & Kiers (2008), Anal. Bioanal. Chem. 390
(PCA cross-validation); Liu, Ting & Zhou (2008) (isolation forest).
"""

from __future__ import annotations

import math
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np
import numpy.typing as npt

from models.detector import BaselineError
from models.isoforest import IsoForest, average_path_length
from models.mvlimits import empirical_limit, spe_limit, t2_limit_individual
from models.mvmodel import KINDS, MvModel
from models.mvmonitor import MvMonitor
from models.params import check_choice, check_float, check_int

__all__ = [
    "FitOptions",
    "export_iforest",
    "fit_model",
    "lagged",
    "library_versions",
    "select_components",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class FitOptions:
    """How to fit a station model; see the module docstring for what each choice means.

    ``components``: a float in (0, 1) is the cumulative explained variance to reach, an int
    the number of components, ``"cv"`` the PRESS minimum. ``t2_lam``/``spe_lam`` below 1
    EWMA-smooth that statistic (requires ``limits="cv"``). ``iforest_alpha`` defaults to
    ``alpha``. ``seed`` drives MinCovDet and the isolation forest.
    """

    kind: str = "pca"
    lags: int = 0
    components: float | int | str = 0.9
    alpha: float = 0.005
    limits: str = "theory"
    t2_lam: float = 1.0
    spe_lam: float = 1.0
    robust: bool = True
    iforest: bool = False
    iforest_trees: int = 100
    iforest_alpha: float | None = None
    folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        own = "FitOptions"
        check_choice(own, "kind", self.kind, KINDS)
        check_int(own, "lags", self.lags, 0, 50)
        c = self.components
        if not (
            c == "cv"
            or (isinstance(c, int) and not isinstance(c, bool) and c >= 1)
            or (isinstance(c, float) and 0.0 < c < 1.0)
        ):
            raise ValueError(
                "The 'components' parameter of FitOptions must be a float in (0, 1), an int "
                f">= 1 or 'cv'. Got {c!r} instead."
            )
        check_float(own, "alpha", self.alpha, 0.0, 0.5, low_open=True, high_open=True)
        check_choice(own, "limits", self.limits, ("theory", "cv"))
        check_float(own, "t2_lam", self.t2_lam, 0.0, 1.0, low_open=True)
        check_float(own, "spe_lam", self.spe_lam, 0.0, 1.0, low_open=True)
        check_int(own, "iforest_trees", self.iforest_trees, 1)
        if self.iforest_alpha is not None:
            check_float(own, "iforest_alpha", self.iforest_alpha, 0.0, 0.5, low_open=True)
        check_int(own, "folds", self.folds, 2, 50)
        check_int(own, "seed", self.seed, 0)
        if self.limits == "theory" and min(self.t2_lam, self.spe_lam) < 1.0:
            raise ValueError(
                "EWMA-smoothed statistics have no distribution-theory limit here; "
                "use limits='cv' with t2_lam or spe_lam below 1"
            )


def lagged(x: npt.ArrayLike, lags: int) -> FloatArray:
    """Rows ``[x_t, x_{t-1}, ..., x_{t-lags}]`` for ``t = lags .. n-1`` (the model's order).

    Examples:
        >>> lagged(np.arange(6.0).reshape(3, 2), 1).tolist()
        [[2.0, 3.0, 0.0, 1.0], [4.0, 5.0, 2.0, 3.0]]
    """
    a = np.asarray(x, dtype=np.float64)
    n = a.shape[0]
    if lags == 0:
        return a
    return np.concatenate([a[lags - j : n - j] for j in range(lags + 1)], axis=1)


def _segments_lagged(x: FloatArray, keep: npt.NDArray[np.bool_], lags: int) -> FloatArray:
    """Lagged rows of each contiguous run of kept rows, never across a gap."""
    edges = np.flatnonzero(np.diff(np.r_[0, keep.astype(np.int8), 0]))
    parts = [lagged(x[a:b], lags) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    parts = [q for q in parts if q.shape[0]]
    return np.concatenate(parts, axis=0) if parts else np.empty((0, x.shape[1] * (lags + 1)))


def select_components(z: npt.ArrayLike, folds: int = 5, max_components: int | None = None) -> int:
    """Components with the least cross-validated "ekf" PRESS on autoscaled rows ``z``.

    For a held-out row, variable ``j`` is predicted from the row's other variables through the
    loadings ``P`` of a fit without that block: by the deleted-residual identity the error is
    ``r_j / (1 - h_jj)``, ``r = z - z P P'`` and ``h_jj = sum_i P_ji^2``.
    """
    from sklearn.decomposition import PCA

    a = np.asarray(z, dtype=np.float64)
    n, k = a.shape
    blocks = np.array_split(np.arange(n), folds)
    top = min(k - 1, n - max(len(b) for b in blocks) - 1)
    if max_components is not None:
        top = min(top, max_components)
    if top < 1:
        raise BaselineError(f"too few rows ({n}) or variables ({k}) to cross-validate PCA")
    press = np.zeros(top)
    for block in blocks:
        train = np.ones(n, dtype=bool)
        train[block] = False
        mu = a[train].mean(axis=0)
        sd = a[train].std(axis=0, ddof=1)
        sd[sd == 0.0] = 1.0
        pca = PCA(n_components=top, svd_solver="full").fit((a[train] - mu) / sd)
        held = (a[block] - mu) / sd
        resid = held.copy()
        h = np.zeros(k)
        for i in range(top):
            v = pca.components_[i]
            resid -= np.outer(held @ v, v)
            h += v * v
            with np.errstate(divide="ignore", invalid="ignore"):
                err = resid / (1.0 - h)
            press[i] += float(np.sum(np.where(h < 1.0 - 1e-9, err * err, np.inf)))
    return int(np.argmin(press)) + 1


def export_iforest(forest: Any) -> IsoForest:
    """A fitted ``sklearn.ensemble.IsolationForest`` as arrays `IsoForest` scores with numpy.

    Leaf values are the path lengths scikit-learn credits (node depth plus ``c(leaf size)``,
    minus one for its root-depth convention); split features are mapped through
    ``estimators_features_`` so the arrays index the full input row.
    """
    trees = forest.estimators_
    nodes = max(t.tree_.node_count for t in trees)
    shape = (len(trees), nodes)
    left = np.full(shape, -1, dtype=np.int32)
    right = np.full(shape, -1, dtype=np.int32)
    feature = np.zeros(shape, dtype=np.int32)
    threshold = np.zeros(shape)
    value = np.zeros(shape)
    depth = 0
    for i, (est, feats) in enumerate(zip(trees, forest.estimators_features_, strict=True)):
        t = est.tree_
        c = t.node_count
        left[i, :c] = t.children_left
        right[i, :c] = t.children_right
        inner = t.children_left >= 0
        feature[i, :c] = np.where(inner, np.asarray(feats)[np.maximum(t.feature, 0)], 0)
        threshold[i, :c] = t.threshold
        node_depth = t.compute_node_depths()
        value[i, :c] = node_depth + average_path_length(t.n_node_samples) - 1.0
        depth = max(depth, int(t.max_depth))
    return IsoForest(left, right, feature, threshold, value, int(forest.max_samples_), depth)


def library_versions() -> dict[str, str]:
    """Versions of what fitted a model, recorded in its artifact."""
    out = {"python": platform.python_version()}
    for name in ("cellwatch", "numpy", "scipy", "scikit-learn"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


@dataclass(frozen=True, slots=True)
class _Core:
    """Scaling and model arrays fitted on one set of (lagged) rows, before limits."""

    mean: FloatArray
    scale: FloatArray
    loadings: FloatArray
    eigenvalues: FloatArray
    precision: FloatArray
    residual_eigenvalues: FloatArray
    support: int
    forest: IsoForest | None


def _fit_core(rows: FloatArray, opt: FitOptions, a: int, names: Sequence[str]) -> _Core:
    from sklearn.covariance import MinCovDet
    from sklearn.decomposition import PCA
    from sklearn.ensemble import IsolationForest

    mean = rows.mean(axis=0)
    scale = rows.std(axis=0, ddof=1)
    flat = np.flatnonzero(~(scale > 0.0))
    if flat.size:
        j = int(flat[0]) % len(names)
        raise BaselineError(f"a multivariate model needs variables that vary; {names[j]} does not")
    z = (rows - mean) / scale
    k = z.shape[1]
    empty = np.empty((0, 0))
    support = z.shape[0]
    if opt.kind == "pca":
        pca = PCA(svd_solver="full").fit(z)
        loadings = pca.components_[:a].T.copy()
        eig = pca.explained_variance_
        core = _Core(mean, scale, loadings, eig[:a].copy(), empty, eig[a:].copy(), support, None)
    else:
        if opt.robust:
            mcd = MinCovDet(random_state=opt.seed).fit(z)
            loc, cov = mcd.location_, mcd.covariance_
            support = int(np.count_nonzero(mcd.support_))
        else:
            loc, cov = np.zeros(k), np.cov(z, rowvar=False, ddof=1).reshape(k, k)
        d = np.sqrt(np.diag(cov))
        if not np.all(d > 0.0) or np.linalg.matrix_rank(cov) < k:
            raise BaselineError(
                "the baseline covariance is singular: some variables are linear combinations "
                "of others (drop one, or fit a PCA model)"
            )
        mean = mean + loc * scale
        scale = scale * d
        precision = np.linalg.inv(cov / np.outer(d, d))
        core = _Core(
            mean, scale, np.empty((k, 0)), np.empty(0), precision, np.empty(0), support, None
        )
    if opt.iforest:
        zz = (rows - core.mean) / core.scale
        forest = IsolationForest(n_estimators=opt.iforest_trees, random_state=opt.seed).fit(zz)
        core = replace(core, forest=export_iforest(forest))
    return core


def _model(
    core: _Core,
    opt: FitOptions,
    variables: tuple[str, ...],
    units: tuple[str, ...],
    limits: tuple[float, float, float],
    centers: tuple[FloatArray, FloatArray],
    lams: tuple[float, float],
    info: Mapping[str, Any] | None = None,
) -> MvModel:
    return MvModel(
        kind=opt.kind,
        variables=variables,
        units=units,
        lags=opt.lags,
        mean=core.mean,
        scale=core.scale,
        loadings=core.loadings,
        eigenvalues=core.eigenvalues,
        precision=core.precision,
        t2_limit=limits[0],
        spe_limit=limits[1] if opt.kind == "pca" else math.nan,
        t2_lam=lams[0],
        spe_lam=lams[1],
        t2_center=centers[0],
        spe_center=centers[1],
        iforest=core.forest,
        iso_limit=limits[2] if core.forest is not None else math.nan,
        info=dict(info or {}),
    )


def _cv_scores(
    x: FloatArray, opt: FitOptions, a: int, variables: tuple[str, ...], units: tuple[str, ...]
) -> tuple[list[tuple[_Core, FloatArray]], FloatArray, FloatArray]:
    """Per fold: the core fitted without the block and the block's raw rows; plus the mean
    out-of-sample per-variable T2 and SPE contributions (the in-control centres)."""
    n, p = x.shape
    tiny = float(np.finfo(np.float64).tiny)
    folds: list[tuple[_Core, FloatArray]] = []
    t2_parts: list[FloatArray] = []
    spe_parts: list[FloatArray] = []
    for block in np.array_split(np.arange(n), opt.folds):
        keep = np.ones(n, dtype=bool)
        keep[block] = False
        core = _fit_core(_segments_lagged(x, keep, opt.lags), opt, a, variables)
        held = x[block]
        folds.append((core, held))
        # Limits at the smallest positive number make every row an "alarm", so the monitor
        # returns every row's contributions: the same arithmetic as on a gateway.
        probe = _model(
            core, opt, variables, units, (tiny, tiny, tiny), (np.zeros(p),) * 2, (1.0, 1.0)
        )
        res = MvMonitor(probe).update(held)
        rows = np.isfinite(res.t2)
        t2_parts.append(res.t2_contrib[rows])
        if opt.kind == "pca":
            spe_parts.append(res.spe_contrib[rows])
    t2_center = np.concatenate(t2_parts).mean(axis=0)
    spe_center = np.concatenate(spe_parts).mean(axis=0) if spe_parts else np.zeros(p)
    return folds, t2_center, spe_center


def fit_model(
    x: npt.ArrayLike,
    variables: Sequence[str],
    units: Sequence[str] | None = None,
    options: FitOptions | None = None,
    window: Mapping[str, Any] | None = None,
) -> MvModel:
    """Fit a station model on a baseline ``(rows, variables)``; rows with a NaN are dropped.

    ``window`` describes where the baseline came from (e.g. first and last timestamp, source
    file) and is stored in the model's ``info`` with the options, the components' explained
    variance and the library versions.
    """
    opt = options or FitOptions()
    raw = np.asarray(x, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] != len(variables):
        raise ValueError(f"x must be (rows, {len(variables)}) for the variables, got {raw.shape}")
    names = tuple(str(v) for v in variables)
    unit_names = tuple(units) if units is not None else ("",) * len(names)
    complete = np.isfinite(raw).all(axis=1)
    data = raw[complete]
    n, p = data.shape
    k = p * (opt.lags + 1)
    need = max(20, 2 * opt.folds, k + 2 if opt.kind == "hotelling" else 0)
    if n - opt.lags < need:
        raise BaselineError(
            f"a {opt.kind} model over {k} columns needs at least {need + opt.lags} complete "
            f"baseline rows; got {n}"
        )
    rows = lagged(data, opt.lags)
    sd = rows.std(axis=0, ddof=1)
    z = (rows - rows.mean(axis=0)) / np.where(sd > 0.0, sd, 1.0)
    if opt.kind == "pca":
        eig = np.linalg.svd(z, compute_uv=False) ** 2
        if opt.components == "cv":
            a = select_components(z, opt.folds)
        elif isinstance(opt.components, float):
            share = np.cumsum(eig) / eig.sum()
            a = int(np.searchsorted(share, opt.components) + 1)
        else:
            a = int(opt.components)
        a = min(a, k - 1, rows.shape[0] - 2)
        explained = float(eig[:a].sum() / eig.sum())
    else:
        a, explained = 0, 1.0
    core = _fit_core(rows, opt, a, names)
    iso_alpha = opt.iforest_alpha if opt.iforest_alpha is not None else opt.alpha
    if opt.limits == "theory":
        m = rows.shape[0] if opt.kind == "pca" else core.support
        t2_lim = t2_limit_individual(m, a if opt.kind == "pca" else k, opt.alpha, phase=2)
        q_lim = spe_limit(core.residual_eigenvalues, opt.alpha) if opt.kind == "pca" else math.nan
        iso_lim = math.nan
        if core.forest is not None:
            iso_lim = empirical_limit(core.forest.score((rows - core.mean) / core.scale), iso_alpha)
        # In-sample expectations of each column's contribution (autoscaled columns have
        # variance 1): sum_i P_ji^2 to T2, the residual variance 1 - sum_i lambda_i P_ji^2 to SPE.
        if opt.kind == "pca":
            t2_center = _fold(np.sum(core.loadings**2, axis=1), p)
            spe_center = _fold(1.0 - np.sum(core.loadings**2 * core.eigenvalues, axis=1), p)
        else:
            t2_center = _fold(np.ones(k), p)
            spe_center = np.zeros(p)
        cv_far = None
    else:
        folds, t2_center, spe_center = _cv_scores(data, opt, a, names, unit_names)
        huge = float(np.finfo(np.float64).max)
        stats: dict[str, list[FloatArray]] = {"t2": [], "spe": [], "iso": []}
        for fcore, held in folds:
            probe = _model(
                fcore,
                opt,
                names,
                unit_names,
                (huge, huge, huge),
                (t2_center, spe_center),
                (opt.t2_lam, opt.spe_lam),
            )
            res = MvMonitor(probe).update(held)
            stats["t2"].append(res.t2)
            stats["spe"].append(res.spe)
            stats["iso"].append(res.iso)
        oos = {key: np.concatenate(v) for key, v in stats.items()}
        t2_lim = empirical_limit(oos["t2"], opt.alpha)
        q_lim = empirical_limit(oos["spe"], opt.alpha) if opt.kind == "pca" else math.nan
        iso_lim = empirical_limit(oos["iso"], iso_alpha) if core.forest is not None else math.nan
        alarm = oos["t2"] > t2_lim
        if opt.kind == "pca":
            alarm |= oos["spe"] > q_lim
        cv_far = float(np.mean(alarm[np.isfinite(oos["t2"])]))
    info = {
        "training_window": {
            **dict(window or {}),
            "rows": int(raw.shape[0]),
            "rows_used": int(n),
            "rows_dropped_missing": int(raw.shape[0] - n),
        },
        "options": asdict(opt),
        "scaling": (
            "MinCovDet location and robust standard deviation"
            if opt.kind == "hotelling" and opt.robust
            else "training mean and standard deviation (ddof 1)"
        ),
        "explained_variance": explained,
        "cv_false_alarm_rate": cv_far,
        "fitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "libraries": library_versions(),
    }
    return _model(
        core,
        opt,
        names,
        unit_names,
        (t2_lim, q_lim, iso_lim),
        (t2_center, spe_center),
        (opt.t2_lam, opt.spe_lam),
        info,
    )


def _fold(c: FloatArray, p: int) -> FloatArray:
    """Per lagged column -> per variable."""
    folded: FloatArray = c.reshape(-1, p).sum(axis=0)
    return folded
