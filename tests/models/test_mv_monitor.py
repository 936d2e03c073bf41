"""MvMonitor: the statistics, contributions, smoothing, lags and missing data, on numpy alone.

Models are built here from a numpy SVD (no scikit-learn), so these tests also show what a
gateway computes: server-side fitting is tested in tests/server/test_mvfit.py.
"""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.mvmodel import MvModel
from models.mvmonitor import MvMonitor, MvResult

P = 5
NAMES = ("zone1", "zone2", "zone3", "speed", "nmp")
UNITS = ("degC", "degC", "degC", "m/min", "ppm")


def _process(rng: np.random.Generator, n: int) -> np.ndarray:
    """Five variables driven by two latent factors, plus noise: a rank-2 correlation plane."""
    load = np.array([[1.0, 0.2], [0.9, 0.3], [0.8, -0.1], [0.1, 1.0], [0.5, 0.5]])
    return rng.normal(size=(n, 2)) @ load.T + 0.2 * rng.normal(size=(n, P)) + 100.0


def _lag(x: np.ndarray, lags: int) -> np.ndarray:
    n = x.shape[0]
    return np.concatenate([x[lags - j : n - j] for j in range(lags + 1)], axis=1)


def _pca_model(
    x: np.ndarray,
    a: int = 2,
    lags: int = 0,
    t2_lam: float = 1.0,
    spe_lam: float = 1.0,
    t2_limit: float = 15.0,
    spe_limit: float = 3.0,
) -> MvModel:
    rows = _lag(x, lags)
    mean, scale = rows.mean(axis=0), rows.std(axis=0, ddof=1)
    z = (rows - mean) / scale
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    ev = s**2 / (z.shape[0] - 1)
    loadings = vt[:a].T
    t2_c = np.sum(loadings**2, axis=1).reshape(lags + 1, P).sum(axis=0)
    spe_c = (1.0 - np.sum(loadings**2 * ev[:a], axis=1)).reshape(lags + 1, P).sum(axis=0)
    return MvModel(
        kind="pca",
        variables=NAMES,
        units=UNITS,
        lags=lags,
        mean=mean,
        scale=scale,
        loadings=loadings,
        eigenvalues=ev[:a],
        precision=np.zeros((0, 0)),
        t2_limit=t2_limit,
        spe_limit=spe_limit,
        t2_lam=t2_lam,
        spe_lam=spe_lam,
        t2_center=t2_c,
        spe_center=spe_c,
    )


def _hotelling_model(x: np.ndarray, t2_lam: float = 1.0) -> MvModel:
    mean, scale = x.mean(axis=0), x.std(axis=0, ddof=1)
    z = (x - mean) / scale
    return MvModel(
        kind="hotelling",
        variables=NAMES,
        units=UNITS,
        lags=0,
        mean=mean,
        scale=scale,
        loadings=np.empty((P, 0)),
        eigenvalues=np.empty(0),
        precision=np.linalg.inv(np.cov(z, rowvar=False)),
        t2_limit=20.0,
        spe_limit=float("nan"),
        t2_lam=t2_lam,
        spe_lam=1.0,
        t2_center=np.ones(P),
        spe_center=np.zeros(P),
    )


@pytest.fixture(scope="module")
def baseline() -> np.ndarray:
    return _process(np.random.default_rng(0), 400)


def test_pca_statistics_follow_their_definitions(baseline: np.ndarray) -> None:
    model = _pca_model(baseline)
    x = _process(np.random.default_rng(1), 50)
    res = MvMonitor(model).update(x)
    z = (x - model.mean) / model.scale
    t = z @ model.loadings
    np.testing.assert_allclose(res.t2, np.sum(t**2 / model.eigenvalues, axis=1), rtol=1e-12)
    resid = z - t @ model.loadings.T
    np.testing.assert_allclose(res.spe, np.sum(resid**2, axis=1), rtol=1e-12)


def test_hotelling_statistic_is_the_mahalanobis_distance(baseline: np.ndarray) -> None:
    model = _hotelling_model(baseline)
    x = _process(np.random.default_rng(2), 30)
    res = MvMonitor(model).update(x)
    d = x - baseline.mean(axis=0)
    expected = np.einsum("ij,jk,ik->i", d, np.linalg.inv(np.cov(baseline, rowvar=False)), d)
    np.testing.assert_allclose(res.t2, expected, rtol=1e-9)
    assert np.isnan(res.spe).all()


@pytest.mark.parametrize("lam", [1.0, 0.3])
@pytest.mark.parametrize("lags", [0, 2])
def test_contributions_add_up_to_the_plotted_statistic(
    baseline: np.ndarray, lam: float, lags: int
) -> None:
    model = _pca_model(
        baseline, lags=lags, t2_lam=lam, spe_lam=lam, t2_limit=1e-9, spe_limit=1e-9
    )  # every row signals, so every row has contributions
    x = _process(np.random.default_rng(3), 60)
    res = MvMonitor(model).update(x)
    rows = np.isfinite(res.t2)
    np.testing.assert_allclose(res.t2_contrib[rows].sum(axis=1), res.t2[rows], rtol=1e-10)
    np.testing.assert_allclose(res.spe_contrib[rows].sum(axis=1), res.spe[rows], rtol=1e-10)
    assert (res.spe_contrib >= 0.0).all()


def test_a_broken_correlation_fires_spe_and_names_the_variable(baseline: np.ndarray) -> None:
    # 0.7 is above the 99.9 % quantile of this baseline's in-sample SPE (0.66).
    model = _pca_model(baseline, spe_limit=0.7)
    mon = MvMonitor(model)
    x = _process(np.random.default_rng(4), 40)
    # Zone 3 drops by 2 of its sigmas while zones 1 and 2 stay: inside its own 3-sigma limits.
    x[20:, 2] -= 2.0 * baseline[:, 2].std()
    res = mon.update(x)
    assert not (res.signal[:20] & MvMonitor.SPE).any()
    assert (res.signal[20:] & MvMonitor.SPE).all()
    alarms = mon.alarms(res)
    assert {a.spe_top[0].variable for a in alarms if a.spe_top} == {"zone3"}
    top = alarms[-1].spe_top[0]
    assert top.unit == "degC" and 0.5 < top.share <= 1.0


def test_ewma_of_a_statistic_starts_at_its_in_control_mean(baseline: np.ndarray) -> None:
    lam = 0.2
    raw = MvMonitor(_pca_model(baseline)).update(_process(np.random.default_rng(5), 30))
    smoothed_model = _pca_model(baseline, t2_lam=lam, spe_lam=lam)
    res = MvMonitor(smoothed_model).update(_process(np.random.default_rng(5), 30))
    for stat, start in (
        (raw.t2, smoothed_model.t2_center.sum()),
        (raw.spe, smoothed_model.spe_center.sum()),
    ):
        z, expected = start, []
        for v in stat:
            z = lam * v + (1 - lam) * z
            expected.append(z)
        got = res.t2 if stat is raw.t2 else res.spe
        np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_missing_rows_are_skipped_counted_and_left_out_of_the_lag_window(
    baseline: np.ndarray,
) -> None:
    model = _pca_model(baseline, lags=2, spe_lam=0.3)
    x = _process(np.random.default_rng(6), 40)
    holes = x.copy()
    holes[[5, 6, 17], 1] = np.nan
    holes[17, 4] = np.inf
    res = MvMonitor(model).update(holes)
    clean = MvMonitor(model).update(np.delete(x, [5, 6, 17], axis=0))
    kept = np.setdiff1d(np.arange(40), [5, 6, 17])
    np.testing.assert_array_equal(res.t2[kept], clean.t2)
    np.testing.assert_array_equal(res.spe[kept], clean.spe)
    assert np.isnan(res.t2[[5, 6, 17]]).all() and not res.signal[[5, 6, 17]].any()
    assert res.skipped == 3 and res.warmup == 2
    assert res.missing.tolist() == [0, 3, 0, 0, 1]


def test_reset_restarts_the_lag_window_and_the_ewma(baseline: np.ndarray) -> None:
    mon = MvMonitor(_pca_model(baseline, lags=1, t2_lam=0.5, spe_lam=0.5))
    x = _process(np.random.default_rng(7), 25)
    first = mon.update(x)
    mon.update(x)
    mon.reset()
    again = mon.update(x)
    np.testing.assert_array_equal(again.t2, first.t2)
    assert again.warmup == 1


def _stream(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = _process(rng, 60)
    x[30:, 0] += np.linspace(0.0, 3.0, 30)
    x[rng.random(x.shape) < 0.05] = np.nan
    return x


def _join(parts: list[MvResult]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for f in dataclasses.fields(MvResult):
        values = [np.asarray(getattr(p, f.name)) for p in parts]
        if f.name in ("skipped", "warmup", "missing"):
            out[f.name] = np.sum(values, axis=0)
        else:
            out[f.name] = np.concatenate(values, axis=0)
    return out


MODELS = {
    "static": {"lags": 0},
    "dynamic-smoothed": {"lags": 2, "t2_lam": 0.3, "spe_lam": 0.1},
}


@pytest.mark.parametrize("kind", sorted(MODELS))
@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 60), min_size=1, max_size=4), seed=st.integers(0, 999))
def test_chunking_does_not_change_results(kind: str, cuts: list[int], seed: int) -> None:
    model = _pca_model(_process(np.random.default_rng(0), 300), **MODELS[kind])
    stream = _stream(seed)
    whole = MvMonitor(model).update(stream)
    mon = MvMonitor(model)
    bounds = [0, *sorted(cuts), 60]
    joined = _join([mon.update(stream[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)])
    for f in dataclasses.fields(MvResult):
        got, want = joined[f.name], np.asarray(getattr(whole, f.name))
        if want.dtype.kind == "f":
            # Matrix products of different row counts may round differently (BLAS kernels).
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=f.name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=f.name)


def test_a_pickled_monitor_continues_like_the_original(baseline: np.ndarray) -> None:
    mon = MvMonitor(_pca_model(baseline, lags=1, spe_lam=0.2))
    x = _stream(3)
    mon.update(x[:25])
    clone = pickle.loads(pickle.dumps(mon))
    np.testing.assert_array_equal(clone.update(x[25:]).spe, mon.update(x[25:]).spe)


def test_in_control_data_rarely_alarms_and_a_shift_is_found(baseline: np.ndarray) -> None:
    # Limits from the baseline's own 99.5 % quantiles; fresh in-control data alarms on about
    # 0.5 % of rows per statistic. Binomial SE for 4000 rows is 0.11 %; 5 SE above 1 % bounds
    # the combined rate of the two statistics (each about 0.5 %, plus the in-sample optimism).
    probe = MvMonitor(_pca_model(baseline, t2_limit=1e-9, spe_limit=1e-9)).update(baseline)
    model = _pca_model(
        baseline,
        t2_limit=float(np.quantile(probe.t2, 0.995)),
        spe_limit=float(np.quantile(probe.spe, 0.995)),
    )
    res = MvMonitor(model).update(_process(np.random.default_rng(8), 4000))
    far = np.mean(res.signal > 0)
    assert far < 0.01 + 5 * np.sqrt(0.01 * 0.99 / 4000)
    shifted = _process(np.random.default_rng(9), 200)
    shifted[:, 3] += 4.0 * baseline[:, 3].std()
    assert np.mean(MvMonitor(model).update(shifted).signal > 0) > 0.9


def test_hotelling_smoothing_and_contributions(baseline: np.ndarray) -> None:
    mon = MvMonitor(_hotelling_model(baseline, t2_lam=0.25))
    x = _process(np.random.default_rng(10), 80)
    x[40:, 4] += 2.0 * baseline[:, 4].std()
    res = mon.update(x)
    hits = np.flatnonzero(res.signal & MvMonitor.T2)
    assert hits.size and hits.min() >= 40
    assert {mon.top(res.t2_contrib[i], 1)[0].variable for i in hits} == {"nmp"}


def test_bad_chunks_and_models_are_refused(baseline: np.ndarray) -> None:
    model = _pca_model(baseline)
    with pytest.raises(ValueError, match="5 tag columns"):
        MvMonitor(model).update(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="t2_lam must be in"):
        dataclasses.replace(model, t2_lam=0.0)
    with pytest.raises(ValueError, match="loadings"):
        dataclasses.replace(model, loadings=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="units"):
        dataclasses.replace(model, units=("V",))
