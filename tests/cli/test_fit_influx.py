"""``cellwatch fit --from influxdb``: a station's baseline read back from a real InfluxDB 1.6."""

from __future__ import annotations

import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from models.mvartifact import load_model

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
T0_NS = 1_790_000_000 * 10**9


def _post(url: str, path: str, body: bytes, **params: str) -> None:
    query = urllib.parse.urlencode(params)
    req = urllib.request.Request(f"{url}{path}?{query}", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status in (200, 204)


def test_fit_reads_a_stations_good_telemetry_from_influxdb(
    influxdb_url: str, tmp_path: Path
) -> None:
    db = "fit_baseline"
    _post(influxdb_url, "/query", b"", q=f"CREATE DATABASE {db}")
    rng = np.random.default_rng(9)
    lines = []
    for k in range(200):
        common = rng.normal(0.0, 1.0)
        t = T0_NS + k * 500_000_000
        for zone, noise in (("z1", 0.1), ("z2", 0.1), ("z3", 0.1)):
            value = 120.0 + common + rng.normal(0.0, noise)
            # Each zone's reading lands somewhere in the same 0.5 s slot.
            stamp = t + int(rng.integers(0, 400_000_000))
            lines.append(
                f"telemetry,site=s1,line=line1,station=dryer,equipment={zone},param=temp,"
                f"quality=good value={value} {stamp}"
            )
        # Noise the fit must not see: a bad-quality reading and another station's series.
        lines.append(
            f"telemetry,site=s1,line=line1,station=dryer,equipment=z1,param=temp,"
            f"quality=bad value=999 {t + 450_000_000}"
        )
        lines.append(
            f"telemetry,site=s1,line=line1,station=oven,equipment=z1,param=temp,"
            f"quality=good value=50 {t}"
        )
    _post(influxdb_url, "/write", "\n".join(lines).encode(), db=db, precision="ns")
    plant = tmp_path / "plant.yaml"
    plant.write_text(
        "site: {id: s1}\n"
        f"influxdb: {{url: '{influxdb_url}', database: {db}}}\n"
        "lines:\n"
        "  - id: line1\n    area: a1\n    stations:\n"
        "      - {id: dryer, params: [{id: temp, unit: degC}]}\n"
        "      - {id: oven, params: [{id: temp, unit: degC}]}\n"
    )
    out = tmp_path / "dryer"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "cellwatch",
            "fit",
            "--config",
            str(plant),
            "--from",
            "influxdb",
            "--station",
            "line1/dryer",
            "--start",
            "2026-09-21T00:00:00Z",
            "--end",
            "2026-09-23T00:00:00Z",
            "--align-s",
            "0.5",
            "--components",
            "1",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    model = load_model(out)
    assert model.variables == ("z1/temp", "z2/temp", "z3/temp")
    assert model.units == ("degC", "degC", "degC")
    # 200 slots of 0.5 s, every zone in each: the bad 999s and the oven never got in.
    assert model.mean == pytest.approx([120.0] * 3, abs=0.3)
    assert "influxdb" in str(model.info.get("training_window", {}).get("source"))
    # A window without data is one clear line, not a traceback.
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "cellwatch",
            "fit",
            "--config",
            str(plant),
            "--from",
            "influxdb",
            "--station",
            "line1/dryer",
            "--start",
            "2020-01-01T00:00:00Z",
            "--end",
            "2020-01-02T00:00:00Z",
            "--out",
            str(tmp_path / "none"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0 and "no good telemetry of station line1/dryer" in res.stderr
    assert "Traceback" not in res.stderr
