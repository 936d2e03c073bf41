"""The InfluxDB 1.x writer against a real influxd: round trip, refusals, retry after an outage."""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.messages import Detection, Envelope, Kind, Quality, Reading, SeriesKey, Stats
from models.plant import InfluxConfig
from server.influx import InfluxWriter
from server.lineprotocol import Point
from server.schema import points
from tests.servers import free_port, influxd
from tests.waiting import eventually as until

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def config(url: str, **kw: Any) -> InfluxConfig:
    return InfluxConfig(url=url, database=f"t_{uuid.uuid4().hex[:12]}", **kw)


async def query(url: str, db: str, q: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.get("/query", params={"db": db, "q": q, "epoch": "ns"})
    r.raise_for_status()
    return r.json()["results"][0].get("series", [])


async def test_round_trip_through_influxql(influxdb_url: str) -> None:
    cfg = config(influxdb_url, batch_size=100, flush_interval_s=60)
    tricky = SeriesKey("line 1", "coater,A", "lane=03", "areal\\weight")
    plain = SeriesKey("line1", "coater", "lane03_A", "areal_weight")
    readings = (
        Reading(tricky, T0, 20.25),
        Reading(plain, T0 + 0.5, 19.75),
        Reading(plain, T0 + 1.0, math.nan, Quality.BAD),  # no value: skipped and counted
        Reading(plain, T0 + 1.5, 21.0, Quality.UNCERTAIN),
    )
    det = Detection(plain, T0 + 2, "ewma", 20.9, 20.7, 1, 20.0, 0.1, 'above "UCL" \\ check')
    async with InfluxWriter(cfg) as w:
        w.add(points(Envelope("gw1", 1, Kind.TELEMETRY, T0, readings), "plant 1"))
        w.add(points(Envelope("gw1", 2, Kind.DETECTION, T0, (det,)), "plant 1"))
        assert w.pending == 4
        await w.flush()
        assert (w.points_written, w.skipped, w.pending, w.write_errors) == (4, 1, 0, 0)

    series = await query(
        influxdb_url, cfg.database, "SELECT value FROM telemetry GROUP BY * ORDER BY time"
    )
    got = {
        (s["tags"]["line"], s["tags"]["station"], s["tags"]["equipment"], s["tags"]["param"],
         s["tags"]["site"], s["tags"]["quality"]): [tuple(v) for v in s["values"]]
        for s in series
    }
    ns = 1_000_000_000
    assert got == {
        ("line 1", "coater,A", "lane=03", "areal\\weight", "plant 1", "good"):
            [(int(T0 * ns), 20.25)],
        ("line1", "coater", "lane03_A", "areal_weight", "plant 1", "good"):
            [(int((T0 + 0.5) * ns), 19.75)],
        ("line1", "coater", "lane03_A", "areal_weight", "plant 1", "uncertain"):
            [(int((T0 + 1.5) * ns), 21.0)],
    }
    [d] = await query(
        influxdb_url, cfg.database, "SELECT value, direction, message, rule FROM detection"
    )
    assert d["values"] == [[int((T0 + 2) * ns), 20.9, 1, 'above "UCL" \\ check', "ewma"]]


async def test_spc_and_status_fields_keep_their_types(influxdb_url: str) -> None:
    cfg = config(influxdb_url, flush_interval_s=0.05)
    k = SeriesKey("line1", "coater", "lane03_A", "areal_weight")
    stats = Stats(k, T0, T0 + 1, 4, 20.1, 19.9, 20.3, 1, 20.05, 19.8, 20.2)
    async with InfluxWriter(cfg) as w:
        w.add(points(Envelope("gw1", 1, Kind.STATS, T0, (stats,)), "plant1"))
        await until(lambda: w.points_written == 1, 5, "the background flush")
    [s] = await query(influxdb_url, cfg.database, "SELECT count, mean, bad, ucl FROM spc")
    assert s["values"] == [[int((T0 + 1) * 1e9), 4, 20.1, 1, 20.2]]


async def test_refused_lines_are_counted_not_retried(influxdb_url: str) -> None:
    cfg = config(influxdb_url, flush_interval_s=60)
    async with InfluxWriter(cfg) as w:
        w.add([Point("m", (("t", "a"),), (("v", 1.0),), 1)])
        await w.flush()
        # "v" is a float field now; a string for it is a type conflict InfluxDB refuses.
        w.add([Point("m", (("t", "a"),), (("v", "text"),), 2), Point("m", (), (("v", 2.0),), 3)])
        w.add_lines(["m,t=a\\ v=1 4"])  # unparsable
        await w.flush()
        assert (w.rejected, w.points_written, w.pending, w.write_errors) == (2, 2, 0, 0)
    [s] = await query(influxdb_url, cfg.database, "SELECT v FROM m")
    assert [v[1] for v in s["values"]] == [1.0, 2.0]


async def test_outage_keeps_points_and_retries_until_influx_is_back(tmp_path: Path) -> None:
    port = free_port()
    cfg = config(f"http://127.0.0.1:{port}", flush_interval_s=0.05, timeout_s=1)
    async with InfluxWriter(cfg, retry_min_s=0.05, retry_max_s=0.2) as w:
        w.add([Point("m", (), (("v", float(i)),), i) for i in range(1, 11)])
        await until(lambda: w.write_errors >= 3, 5, "failed writes")
        assert (w.pending, w.points_written) == (10, 0)
        with influxd(tmp_path, port=port) as (url, _):
            await until(lambda: w.points_written == 10, 10, "the retried write")
            assert w.pending == 0
            [s] = await query(url, cfg.database, "SELECT count(v) FROM m")
    assert s["values"][0][1] == 10


async def test_points_left_at_exit_are_logged_when_influx_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = config(f"http://127.0.0.1:{free_port()}", flush_interval_s=60, timeout_s=1)
    async with InfluxWriter(cfg) as w:
        w.add([Point("m", (), (("v", 1.0),), 1)])
    assert "did not take the last 1 points" in caplog.text
