"""The embedded series file: typed tables, InfluxDB's point identity, export as line protocol
that a real InfluxDB 1.6 imports to the same series."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from cellwatch.cli import main
from models.messages import Detection, Envelope, Kind, Reading, SeriesKey, Stats
from server.embedded import SeriesFile, export_lp, series_path_for
from server.frame import Frame
from server.schema import frames
from server.sink import Batch
from tests.server.conftest import influxql

KEY = SeriesKey("line1", "coater", "lane03_A", "areal_weight")
T0 = 1_700_000_000.0
NS = 1_000_000_000


def sample_frames() -> list[Frame]:
    readings = tuple(Reading(KEY, T0 + i, 20.0 + i / 8) for i in range(4))
    stats = Stats(KEY, T0, T0 + 4, 4, 20.19, 20.0, 20.375, 0, 20.1, 19.7, 20.3)
    det = Detection(KEY, T0 + 3, "ewma", 20.9, 20.7, 1, 20.0, 0.1, 'say "hi", a=b')
    cells = Frame.from_columns(
        "cell",
        {"site": ["plant1"] * 2, "grade": ["A", "NG"]},
        {
            "cell_id": np.array(["C1", "C2"], dtype=object),
            "good": np.array([True, False]),
            "capacity_ah": [10.1, 9.2],
            "lane": [3, 4],
        },
        [int(T0 * NS), int((T0 + 1) * NS)],
    )
    return [
        *frames(Envelope("gw1", 1, Kind.TELEMETRY, T0, readings), "plant1"),
        *frames(Envelope("gw1", 2, Kind.STATS, T0, (stats,)), "plant1"),
        *frames(Envelope("gw1", 3, Kind.DETECTION, T0, (det,)), "plant1", [5]),
        cells,
    ]


async def test_tables_hold_typed_columns_and_a_point_is_stored_once(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite")
    async with SeriesFile(path) as s:
        await s.write(Batch(frames=tuple(sample_frames())))
        await s.write(Batch(frames=tuple(sample_frames())))  # a redelivery: no new rows
        # A later write of the same point with another field merges into it, as in InfluxDB.
        extra = Frame.from_columns(
            "spc",
            {
                "site": ["plant1"],
                "line": ["line1"],
                "station": ["coater"],
                "equipment": ["lane03_A"],
                "param": ["areal_weight"],
            },
            {"bad": [2]},
            [int((T0 + 4) * NS)],
        )
        await s.write(Batch(frames=(extra,)))
        assert s.query("SELECT count(*) FROM telemetry") == [(4,)]
        assert s.query("SELECT count, bad, mean, typeof(count), typeof(mean) FROM spc") == [
            (4, 2, 20.19, "integer", "real")
        ]
        assert s.query("SELECT message, alert_id, rule FROM detection") == [
            ('say "hi", a=b', 5, "ewma")
        ]
        assert s.query("SELECT cell_id, grade, good, lane FROM cell ORDER BY time") == [
            ("C1", "A", 1, 3),
            ("C2", "NG", 0, 4),
        ]


async def test_export_is_line_protocol_influxdb_imports_to_the_same_series(
    tmp_path: Path, influxdb_url: str
) -> None:
    path = str(tmp_path / "s.sqlite")
    async with SeriesFile(path) as s:
        await s.write(Batch(frames=tuple(sample_frames())))
    out = io.BytesIO()
    lines = export_lp(path, out)
    body = out.getvalue()
    assert lines == 4 + 1 + 1 + 2 == body.count(b"\n")
    db = f"t_{uuid.uuid4().hex[:12]}"
    with httpx.Client(base_url=influxdb_url) as c:
        c.post("/query", params={"q": f'CREATE DATABASE "{db}"'}).raise_for_status()
        r = c.post("/write", params={"db": db, "precision": "ns"}, content=body)
    assert r.status_code == 204, r.text
    [tel] = influxql(influxdb_url, db, "SELECT value FROM telemetry GROUP BY *")
    assert tel["tags"] == {
        "site": "plant1",
        "line": "line1",
        "station": "coater",
        "equipment": "lane03_A",
        "param": "areal_weight",
        "quality": "good",
    }
    assert tel["values"] == [[int((T0 + i) * NS), 20.0 + i / 8] for i in range(4)]
    [det] = influxql(influxdb_url, db, "SELECT message, alert_id FROM detection")
    assert det["values"] == [[int((T0 + 3) * NS), 'say "hi", a=b', 5]]
    [cell] = influxql(influxdb_url, db, "SELECT cell_id, good, lane FROM cell WHERE grade = 'A'")
    keys = dict(influxql(influxdb_url, db, "SHOW FIELD KEYS FROM cell")[0]["values"])
    assert keys == {
        "capacity_ah": "float",
        "cell_id": "string",
        "good": "boolean",
        "lane": "integer",
    }
    assert cell["values"] == [[int(T0 * NS), "C1", True, 3]]


def test_cli_export_lp_writes_a_file_from_the_config_or_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    series = tmp_path / "plant-series.sqlite"
    s = SeriesFile(str(series)).open()
    try:
        s.write_frames(sample_frames())
    finally:
        s.close()
    out = tmp_path / "series.lp"
    assert main(["export-lp", "--series", str(series), "-o", str(out)]) == 0
    assert out.read_bytes().count(b"\n") == 8
    assert "8 lines" in capsys.readouterr().err
    assert main(["export-lp", "--series", str(tmp_path / "missing.sqlite")]) == 1
    assert "no series file" in capsys.readouterr().err


def test_default_series_file_sits_next_to_the_server_store() -> None:
    assert series_path_for("data/cw.sqlite") == "data/cw-series.sqlite"
    assert series_path_for("cw") == "cw-series.sqlite"
