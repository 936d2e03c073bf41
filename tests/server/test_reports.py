"""Report queries: the InfluxQL implementation against a real InfluxDB 1.6 and the SQL one
against the embedded file give the same answers, and the answers are the hand-computed ones."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from models.plant import InfluxConfig
from server.embedded import SeriesFile
from server.frame import Frame
from server.influx1 import Influx1Sink
from server.reports import AlertCount, EnergyPerCell, InfluxQLReports, SqliteReports, Yield
from server.writer import SeriesWriter
from tests.waiting import eventually as until

pytestmark = pytest.mark.integration

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
HOUR = 3600 * NS


def plant_frames() -> list[Frame]:
    """Two lines over two hours; the report window is the first hour."""
    n1, n2 = 10, 5
    cells = Frame.from_columns(
        "cell",
        {
            "site": ["p1"] * (n1 + n2 + 1),
            "line": ["line1"] * n1 + ["line2"] * n2 + ["line1"],
            "station": ["grading"] * (n1 + n2 + 1),
            "grade": ["A"] * 7 + ["B"] + ["NG"] * 2 + ["A"] * n2 + ["A"],
        },
        {
            "cell_id": np.array([f"C{i:04d}" for i in range(n1 + n2 + 1)], dtype=object),
            "good": np.array([True] * 8 + [False] * 2 + [True] * n2 + [True]),
        },
        [T0 + i * 60 * NS for i in range(n1 + n2)] + [T0 + 2 * HOUR - NS],  # last: outside
    )
    # Registers: meter M1 of line1 imports 0 -> 12 kWh, M2 of line1 imports 100 -> 103 and
    # exports 5 -> 6, the line2 meter imports 7 -> 9; readings after the hour do not count.
    energy = Frame.from_columns(
        "energy",
        {
            "site": ["p1"] * 9,
            "line": ["line1"] * 6 + ["line2"] * 3,
            "equipment": ["M1"] * 3 + ["M2"] * 3 + ["M3"] * 3,
        },
        {
            "energy_kwh": [0.0, 6.0, 12.0, 100.0, 101.5, 103.0, 7.0, 9.0, 50.0],
            "export_kwh": [np.nan, np.nan, np.nan, 5.0, 5.5, 6.0, np.nan, np.nan, np.nan],
        },
        [
            T0,
            T0 + HOUR // 2,
            T0 + HOUR - NS,
            T0,
            T0 + HOUR // 2,
            T0 + HOUR - NS,
            T0,
            T0 + HOUR - NS,
            T0 + HOUR + NS,
        ],
    )
    detections = Frame.from_columns(
        "detection",
        {
            "site": ["p1"] * 6,
            "station": ["coater"] * 4 + ["formation"] * 2,
            "rule": ["ewma", "ewma", "ewma", "cusum", "shewhart", "shewhart"],
        },
        {
            "value": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "alert_id": np.array([1, 1, 2, 3, None, 4], dtype=object),
        },
        [T0 + i * NS for i in range(6)],
    )
    return [cells, energy, detections]


EXPECTED_YIELD = [Yield("line1", 8, 10), Yield("line2", 5, 5)]
EXPECTED_ENERGY = [EnergyPerCell("line1", 12.0 + 3.0 - 1.0, 10), EnergyPerCell("line2", 2.0, 5)]
EXPECTED_ALERTS = [
    AlertCount("coater", "cusum", 1, 1),
    AlertCount("coater", "ewma", 3, 2),
    AlertCount("formation", "shewhart", 2, 1),
]


async def check(reports: InfluxQLReports | SqliteReports) -> None:
    start, end = T0, T0 + HOUR
    assert await reports.yield_by_line(start, end) == EXPECTED_YIELD
    energy = await reports.energy_per_cell(start, end)
    assert energy == EXPECTED_ENERGY
    assert [e.kwh_per_cell for e in energy] == [1.4, 0.4]
    assert await reports.alert_counts(start, end) == EXPECTED_ALERTS
    assert (await reports.yield_by_line(start, end))[0].ratio == 0.8


async def test_influxql_reports_from_influxdb(influxdb_url: str) -> None:
    cfg = InfluxConfig(url=influxdb_url, database=f"r_{uuid.uuid4().hex[:10]}")
    async with SeriesWriter(Influx1Sink(cfg), flush_interval_s=0.02) as w:
        ticket = w.add(plant_frames())
        await until(lambda: ticket.done, 10, "the report data")
        assert w.points_written == 16 + 9 + 6
    await check(InfluxQLReports(cfg))


async def test_sql_reports_from_the_embedded_file() -> None:
    async with SeriesFile(":memory:") as series:
        series.write_frames(plant_frames())
        await check(SqliteReports(series))


async def test_an_empty_window_gives_empty_reports() -> None:
    async with SeriesFile(":memory:") as series:
        series.write_frames(plant_frames())
        r = SqliteReports(series)
        assert await r.yield_by_line(0, 1) == []
        assert await r.energy_per_cell(0, 1) == []
        assert await r.alert_counts(0, 1) == []


async def test_the_sql_examples_of_the_docs_give_the_same_answers() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "INFLUXDB.md").read_text()
    block = text.split("### SQL", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    block = block.replace("1795305600000000000", str(T0))
    block = block.replace("1795334400000000000", str(T0 + HOUR))
    statements = [s for s in block.split(";") if s.strip()]
    async with SeriesFile(":memory:") as series:
        series.write_frames(plant_frames())
        yield_rows, energy_rows, alert_rows = (series.query(s) for s in statements)
    assert sorted(yield_rows) == [("line1", 10, 8), ("line2", 5, 5)]
    assert sorted((line, round(v, 9)) for line, v in energy_rows) == [
        ("line1", 1.4),
        ("line2", 0.4),
    ]
    assert sorted(alert_rows) == [
        ("coater", "cusum", 1, 1),
        ("coater", "ewma", 3, 2),
        ("formation", "shewhart", 2, 1),
    ]
