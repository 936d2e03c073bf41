"""Station-level multivariate detection in the agent: rows from several series, numpy scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.agent import EdgeAgent
from edge.station_mv import MvSetupError
from models.messages import Quality, Reading, SeriesKey
from models.mvartifact import save_model
from models.mvmodel import MvModel
from models.plant import PlantConfig

T0 = 1_700_000_000.0


def _model(path: Path) -> Path:
    """A PCA model of two dryer zones that move together: the model plane is z1 = z2."""
    model = MvModel(
        kind="pca",
        variables=("z1/temp", "z2"),
        units=("degC", "degC"),
        lags=0,
        mean=np.array([120.0, 120.0]),
        scale=np.ones(2),
        loadings=np.array([[1.0], [1.0]]) / np.sqrt(2.0),
        eigenvalues=np.array([2.0]),
        precision=np.zeros((0, 0)),
        t2_limit=25.0,
        spe_limit=1.0,
        t2_lam=1.0,
        spe_lam=1.0,
        t2_center=np.array([0.5, 0.5]),
        spe_center=np.array([0.0, 0.0]),
    )
    save_model(model, path)
    return path


def _plant(model: Path, **mv: object) -> PlantConfig:
    return PlantConfig.model_validate(
        {
            "site": {"id": "s1"},
            "edge": {"id": "e1", "outbox": {"kind": "memory"}},
            "lines": [
                {
                    "id": "line1",
                    "area": "a1",
                    "stations": [
                        {
                            "id": "dryer",
                            "params": [{"id": "temp"}],
                            "multivariate": {
                                "model": str(model),
                                "variables": {"z2": "z2/temp"},
                                **mv,
                            },
                        }
                    ],
                }
            ],
        }
    )


def _reading(equipment: str, ts: float, value: float, quality: Quality = Quality.GOOD) -> Reading:
    return Reading(SeriesKey("line1", "dryer", equipment, "temp"), ts, value, quality=quality)


def test_a_broken_correlation_is_detected_with_its_top_variables(tmp_path: Path) -> None:
    agent = EdgeAgent(_plant(_model(tmp_path / "m"), align_s=1.0))
    (mv,) = agent.multivariate
    rng = np.random.default_rng(4)
    for k in range(30):
        common = rng.normal(0.0, 1.0)
        # In control: both zones move together (off the plane by 0.05 at most); then zone 2
        # runs 3 degC cold while zone 1 stays put, which no single-zone chart would see.
        z1 = 120.0 + common
        z2 = z1 + rng.uniform(-0.05, 0.05) - (3.0 if k >= 20 else 0.0)
        agent.accept(_reading("z1", T0 + k + 0.2, z1))
        agent.accept(_reading("z2", T0 + k + 0.6, z2))
        if k % 5 == 4:
            agent.window()
    agent.window()
    found = [d for d in agent.detections if d.key.equipment == "multivariate"]
    assert [d.rule for d in found] == ["mv_spe"]  # one rising edge, not one per row
    (det,) = found
    assert det.key == SeriesKey("line1", "dryer", "multivariate", "spe")
    # SPE of a 3 degC split is (3 / sqrt 2)^2 = 4.5 against the limit 1; both zones share it.
    assert det.value == pytest.approx(4.5, abs=0.1) and det.limit == 1.0
    assert det.ts == T0 + 21.0  # the end of the first slot of the split (k = 20)
    assert "z1/temp 50%" in det.message and "z2 50%" in det.message
    assert mv.rows == 29 and mv.skipped == 0  # the newest slot waits for the next window


def test_a_missing_or_bad_variable_skips_the_row_and_is_counted(tmp_path: Path) -> None:
    agent = EdgeAgent(_plant(_model(tmp_path / "m")))
    (mv,) = agent.multivariate
    for k in range(10):
        ts = T0 + 0.5 * k + 0.1
        agent.accept(_reading("z1", ts, 120.0))
        if k == 3:
            agent.accept(_reading("z2", ts, 120.0, Quality.BAD))
        elif k != 6:
            agent.accept(_reading("z2", ts, 120.0))
    agent.window()
    assert mv.rows == 9 and mv.skipped == 2
    assert mv.missing.tolist() == [0, 2]
    assert not [d for d in agent.detections if d.key.equipment == "multivariate"]


def test_setup_errors_name_the_key_path(tmp_path: Path) -> None:
    with pytest.raises(
        MvSetupError,
        match=r"lines\[0\]\.stations\[0\]\.multivariate\.model: "
        r"cannot load",
    ):
        EdgeAgent(_plant(tmp_path / "absent"))
    model = _model(tmp_path / "m")
    cfg = _plant(model)
    cfg.lines[0].stations[0].multivariate.variables["zz"] = "a/temp"  # type: ignore[union-attr]
    with pytest.raises(MvSetupError, match=r"zz are not variables of the model"):
        EdgeAgent(cfg)
