"""Fitting multivariate models with scikit-learn, and scoring them where scikit-learn is absent."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest

from models.hotelling import HotellingT2
from models.mvartifact import ArtifactError, artifact_paths, load_model, save_model
from models.mvmonitor import MvMonitor
from server.mvfit import FitOptions, export_iforest, fit_model, select_components

ROOT = Path(__file__).resolve().parents[2]
NAMES = [f"v{j}" for j in range(8)]


def _latent(rng: np.random.Generator, n: int, rank: int = 3, p: int = 8) -> np.ndarray:
    load = np.random.default_rng(99).normal(size=(p, rank))
    return rng.normal(size=(n, rank)) @ load.T + 0.3 * rng.normal(size=(n, p)) + 50.0


def test_exported_isolation_forest_scores_like_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 6))
    new = np.r_[rng.normal(size=(300, 6)), 4.0 * rng.normal(size=(50, 6))]
    for max_features in (1.0, 0.5):
        forest = IsolationForest(n_estimators=60, max_features=max_features, random_state=1).fit(x)
        ours = export_iforest(forest).score(new)
        np.testing.assert_allclose(ours, -forest.score_samples(new), rtol=1e-12)
    # A value exactly on a split threshold goes the same way in both.
    tree = forest.estimators_[0].tree_
    on_split = new[:1].copy()
    feats = forest.estimators_features_[0]
    on_split[0, feats[tree.feature[0]]] = tree.threshold[0]
    np.testing.assert_allclose(
        export_iforest(forest).score(on_split), -forest.score_samples(on_split), rtol=1e-12
    )


def test_pca_model_matches_a_plain_svd_of_the_autoscaled_baseline() -> None:
    x = _latent(np.random.default_rng(1), 500)
    model = fit_model(x, NAMES, options=FitOptions(components=3))
    z = (x - x.mean(axis=0)) / x.std(axis=0, ddof=1)
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    np.testing.assert_allclose(model.eigenvalues, s[:3] ** 2 / 499, rtol=1e-10)
    np.testing.assert_allclose(np.abs(vt[:3] @ model.loadings), np.eye(3), atol=1e-10)


def test_component_rules() -> None:
    x = _latent(np.random.default_rng(2), 600)
    z = (x - x.mean(axis=0)) / x.std(axis=0, ddof=1)
    share = np.cumsum(PCA().fit(z).explained_variance_ratio_)
    model = fit_model(x, NAMES, options=FitOptions(components=0.95))
    assert model.components == int(np.searchsorted(share, 0.95) + 1)
    # Three latent factors plus independent noise: cross-validation finds the three.
    assert select_components(z) == 3
    assert fit_model(x, NAMES, options=FitOptions(components="cv")).components == 3


def _far(model_signal: np.ndarray, bit: int) -> float:
    return float(np.mean((model_signal & bit) > 0))


def test_theory_limits_give_the_promised_false_alarm_rate() -> None:
    # Independent normal rows: the T2 F limit is exact, Jackson-Mudholkar an approximation.
    # Binomial SE for 40000 rows at alpha 1 %: 0.05 %. Tolerance: 5 SE, plus for SPE a 15 %
    # relative allowance for the approximation and for the eigenvalues estimated from 2000 rows.
    rng = np.random.default_rng(3)
    alpha, n_test = 0.01, 40_000
    model = fit_model(_latent(rng, 2000), NAMES, options=FitOptions(components=3, alpha=alpha))
    sig = MvMonitor(model).update(_latent(rng, n_test)).signal
    se = np.sqrt(alpha * (1 - alpha) / n_test)
    assert abs(_far(sig, MvMonitor.T2) - alpha) < 5 * se
    assert abs(_far(sig, MvMonitor.SPE) - alpha) < 5 * se + 0.15 * alpha


def test_cross_validated_limits_give_the_promised_false_alarm_rate() -> None:
    # The limit is a quantile of 3000 out-of-sample values, the FAR measured on 30000 new rows:
    # SE = sqrt(a (1 - a) (1/3000 + 1/30000)); tolerance 5 SE.
    rng = np.random.default_rng(4)
    alpha = 0.02
    model = fit_model(
        _latent(rng, 3000), NAMES, options=FitOptions(components=3, alpha=alpha, limits="cv")
    )
    sig = MvMonitor(model).update(_latent(rng, 30_000)).signal
    se = np.sqrt(alpha * (1 - alpha) * (1 / 3000 + 1 / 30_000))
    for bit in (MvMonitor.T2, MvMonitor.SPE):
        assert abs(_far(sig, bit) - alpha) < 5 * se
    assert 0.0 < model.info["cv_false_alarm_rate"] < 2 * alpha + 5 * se


def test_smoothed_spe_finds_a_small_correlation_break() -> None:
    # One variable moves by 3.3 of its noise sigmas: in-control SPE averages 0.48, shifted 0.84,
    # well inside the raw limit (2.2) most of the time but a sustained excess for the EWMA.
    rng = np.random.default_rng(5)
    base = _latent(rng, 2000)
    raw = fit_model(base, NAMES, options=FitOptions(components=3, alpha=0.005, limits="cv"))
    smooth = fit_model(
        base, NAMES, options=FitOptions(components=3, alpha=0.005, limits="cv", spe_lam=0.1)
    )
    assert smooth.spe_limit < raw.spe_limit  # an average varies less than single values
    x = _latent(rng, 3000)
    x[1000:, 5] += 1.0
    rate = {
        name: np.mean(MvMonitor(m).update(x).signal[1000:] & MvMonitor.SPE > 0)
        for name, m in (("raw", raw), ("smooth", smooth))
    }
    assert rate["raw"] < 0.1 and rate["smooth"] > 0.3


def test_robust_baseline_ignores_gross_outliers() -> None:
    rng = np.random.default_rng(6)
    x = _latent(rng, 400, rank=2, p=4)
    dirty = x.copy()
    dirty[::10] += 8.0  # 10 % of the baseline from a bad batch
    names = NAMES[:4]
    robust = fit_model(dirty, names, options=FitOptions(kind="hotelling", alpha=0.005))
    classic = fit_model(
        dirty, names, options=FitOptions(kind="hotelling", alpha=0.005, robust=False)
    )
    truth = x.mean(axis=0)
    assert np.abs(robust.mean - truth).max() < 0.2 * np.abs(classic.mean - truth).max()
    shifted = _latent(rng, 500, rank=2, p=4)
    shifted[:, 1] += 1.0
    hit = {
        name: np.mean(MvMonitor(m).update(shifted).signal > 0)
        for name, m in (("robust", robust), ("classic", classic))
    }
    assert hit["robust"] > hit["classic"] + 0.2


def test_classical_hotelling_model_agrees_with_the_t2_chart() -> None:
    rng = np.random.default_rng(7)
    x = _latent(rng, 300, rank=2, p=4)
    model = fit_model(x, NAMES[:4], options=FitOptions(kind="hotelling", robust=False, alpha=0.01))
    chart = HotellingT2(alpha=0.01).fit(x)
    new = _latent(rng, 50, rank=2, p=4)
    np.testing.assert_allclose(MvMonitor(model).update(new).t2, chart.update(new).t2, rtol=1e-9)
    assert model.t2_limit == pytest.approx(chart.ucl_, rel=1e-12)


def test_fit_options_are_checked() -> None:
    with pytest.raises(ValueError, match="limits='cv'"):
        FitOptions(spe_lam=0.2)
    with pytest.raises(ValueError, match="'components' parameter of FitOptions"):
        FitOptions(components=1.5)
    with pytest.raises(ValueError, match="'kind' parameter of FitOptions"):
        FitOptions(kind="lda")


BLOCKED_RUN = textwrap.dedent(
    """
    import sys

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("sklearn", "scipy"):
                raise ImportError(f"{name} is not installed on this gateway")
            return None

    sys.meta_path.insert(0, Blocker())
    import numpy as np
    from models.mvartifact import load_model
    from models.mvmonitor import MvMonitor

    model = load_model(sys.argv[1])
    mon = MvMonitor(model)
    x = np.load(sys.argv[2])
    parts = [mon.update(c) for c in np.array_split(x, 3)]
    np.savez(sys.argv[3], **{
        f: np.concatenate([getattr(p, f) for p in parts])
        for f in ("t2", "spe", "iso", "signal", "t2_contrib", "spe_contrib")
    })
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "scipy"))
    print(",".join(loaded) or "none")
    """
)


def test_the_edge_path_runs_with_numpy_alone(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    opts = FitOptions(
        lags=1, components="cv", limits="cv", spe_lam=0.2, iforest=True, iforest_trees=30
    )
    model = fit_model(
        _latent(rng, 400), NAMES, units=["degC"] * 8, options=opts, window={"source": "test"}
    )
    npz, meta_path = save_model(model, tmp_path / "coater")
    x = _latent(rng, 90)
    x[50:, 2] += 1.5
    x[[10, 60], 4] = np.nan
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "edge_run.py"
    script.write_text(BLOCKED_RUN)
    out = subprocess.run(
        [sys.executable, str(script), str(npz), str(tmp_path / "x.npy"), str(tmp_path / "r.npz")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "none", out.stdout
    edge = np.load(tmp_path / "r.npz")
    here = MvMonitor(model).update(x)
    assert edge["signal"][50:].any()
    np.testing.assert_array_equal(edge["signal"], here.signal)
    for f in ("t2", "spe", "iso", "t2_contrib", "spe_contrib"):
        np.testing.assert_allclose(edge[f], getattr(here, f), rtol=1e-12, atol=1e-12, err_msg=f)
    meta = json.loads(meta_path.read_text())
    assert meta["variables"] == NAMES and meta["units"] == ["degC"] * 8
    assert meta["lags"] == 1 and meta["components"] == model.components
    assert meta["scaling"]["scale"] == pytest.approx(model.scale[:8].tolist(), rel=1e-15)
    assert meta["info"]["training_window"]["source"] == "test"
    assert {"numpy", "scikit-learn", "scipy"} <= set(meta["info"]["libraries"])


def test_artifacts_refuse_damage_and_unknown_versions(tmp_path: Path) -> None:
    model = fit_model(_latent(np.random.default_rng(9), 200), NAMES, options=FitOptions())
    npz, meta_path = save_model(model, tmp_path / "m.npz")
    assert artifact_paths(tmp_path / "m.json") == (npz, meta_path)
    again = load_model(tmp_path / "m")
    np.testing.assert_array_equal(again.loadings, model.loadings)
    assert again.spe_limit == model.spe_limit and np.isnan(again.iso_limit)
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="format version 99"):
        load_model(npz)
    save_model(model, tmp_path / "m")
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="SHA-256"):
        load_model(npz)
    with pytest.raises(ArtifactError, match="cannot read"):
        load_model(tmp_path / "absent")


PLANT = """\
site: {id: p1}
lines:
  - id: line1
    area: cells
    stations:
      - id: coater
        params:
          - {id: web_speed, unit: m/min}
          - {id: dryer_temperature, unit: degC}
          - {id: nmp_exhaust, unit: ppm}
"""


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellwatch", "fit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_fit_command_writes_an_artifact_for_a_station(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    x = _latent(rng, 300, rank=2, p=4)
    x[7, 1] = np.nan
    columns = ["lane01_A/web_speed", "lane01_A/dryer_temperature", "lane01_A/nmp_exhaust", "other"]
    lines = ["time," + ",".join(columns)]
    for i, row in enumerate(x):
        cells = ["" if np.isnan(v) else repr(float(v)) for v in row]
        lines.append(f"2026-11-22T10:{i // 60:02d}:{i % 60:02d}," + ",".join(cells))
    (tmp_path / "base.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "plant.yaml").write_text(PLANT)
    res = _cli(
        "--config",
        str(tmp_path / "plant.yaml"),
        "--station",
        "line1/coater",
        "--from",
        str(tmp_path / "base.csv"),
        "--out",
        str(tmp_path / "coater"),
        "--lags",
        "1",
        "--components",
        "2",
        "--limits",
        "cv",
        "--ewma-spe",
        "0.2",
    )
    assert res.returncode == 0, res.stderr
    model = load_model(tmp_path / "coater")
    assert model.variables == tuple(columns[:3])
    assert model.units == ("m/min", "degC", "ppm")
    assert model.lags == 1 and model.components == 2 and model.spe_lam == 0.2
    window = model.info["training_window"]
    assert window["first"] == "2026-11-22T10:00:00" and window["rows_dropped_missing"] == 1
    assert "SPE limit" in res.stdout


def test_fit_command_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "plant.yaml").write_text(PLANT)
    (tmp_path / "bad.csv").write_text("a,b\n1,x\n")
    res = _cli(
        "--config",
        str(tmp_path / "plant.yaml"),
        "--from",
        str(tmp_path / "bad.csv"),
        "--out",
        str(tmp_path / "m"),
    )
    assert res.returncode == 1
    assert (
        res.stderr.strip()
        == f"cellwatch: {tmp_path / 'bad.csv'}:2: column 'b' has 'x', not a number"
    )
    (tmp_path / "short.csv").write_text("a,b\n1,2\n2,3\n")
    res = _cli(
        "--config",
        str(tmp_path / "plant.yaml"),
        "--from",
        str(tmp_path / "short.csv"),
        "--out",
        str(tmp_path / "m"),
    )
    assert res.returncode == 1 and "complete baseline rows" in res.stderr
