"""InfluxDB 1.x through /write against a real influxd 1.6: round trip, pinned types, refusals,
413 splitting, an outage, authentication without the right to create databases, gzip."""

from __future__ import annotations

import logging
import math
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from models.messages import Detection, Envelope, Kind, Quality, Reading, SeriesKey, Stats
from models.plant import InfluxConfig
from server.frame import Frame
from server.influx1 import Influx1Sink
from server.schema import frames
from server.sink import Batch, SinkRefused
from server.writer import SeriesWriter
from tests.server.conftest import influxd_with, influxql
from tests.servers import free_port, influxd
from tests.waiting import eventually as until

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
NS = 1_000_000_000


def config(url: str, **kw: Any) -> InfluxConfig:
    return InfluxConfig(url=url, database=kw.pop("database", f"t_{uuid.uuid4().hex[:12]}"), **kw)


def writer(cfg: InfluxConfig, **kw: Any) -> SeriesWriter:
    kw.setdefault("flush_interval_s", 0.02)
    return SeriesWriter(Influx1Sink(cfg), **kw)


async def test_round_trip_through_influxql(influxdb_url: str) -> None:
    cfg = config(influxdb_url, gzip=True)
    tricky = SeriesKey("line 1", "coater,A", "lane=03", "areal\\weight")
    plain = SeriesKey("line1", "coater", "lane03_A", "areal_weight")
    readings = (
        Reading(tricky, T0, 20.25),
        Reading(plain, T0 + 0.5, 19.75),
        Reading(plain, T0 + 1.0, math.nan, Quality.BAD),  # no value: skipped and counted
        Reading(plain, T0 + 1.5, 21.0, Quality.UNCERTAIN),
    )
    det = Detection(plain, T0 + 2, "ewma", 20.9, 20.7, 1, 20.0, 0.1, 'above "UCL" \\ check')
    async with writer(cfg) as w:
        t1 = w.add(frames(Envelope("gw1", 1, Kind.TELEMETRY, T0, readings), "plant 1"))
        t2 = w.add(frames(Envelope("gw1", 2, Kind.DETECTION, T0, (det,)), "plant 1", [7]))
        await until(lambda: t1.done and t2.done, 10, "both envelopes")
        assert (w.points_written, w.points_skipped, w.pending, w.write_errors) == (4, 1, 0, 0)

    series = influxql(
        influxdb_url, cfg.database, "SELECT value FROM telemetry GROUP BY * ORDER BY time"
    )
    got = {
        (
            s["tags"]["line"],
            s["tags"]["station"],
            s["tags"]["equipment"],
            s["tags"]["param"],
            s["tags"]["site"],
            s["tags"]["quality"],
        ): [tuple(v) for v in s["values"]]
        for s in series
    }
    assert got == {
        ("line 1", "coater,A", "lane=03", "areal\\weight", "plant 1", "good"): [
            (int(T0 * NS), 20.25)
        ],
        ("line1", "coater", "lane03_A", "areal_weight", "plant 1", "good"): [
            (int((T0 + 0.5) * NS), 19.75)
        ],
        ("line1", "coater", "lane03_A", "areal_weight", "plant 1", "uncertain"): [
            (int((T0 + 1.5) * NS), 21.0)
        ],
    }
    [d] = influxql(
        influxdb_url,
        cfg.database,
        "SELECT value, direction, message, rule, alert_id FROM detection",
    )
    assert d["values"] == [[int((T0 + 2) * NS), 20.9, 1, 'above "UCL" \\ check', "ewma", 7]]


async def test_field_types_are_pinned_whatever_the_input(influxdb_url: str) -> None:
    """count arrives as a float and mean as an integer; InfluxDB sees integer and float."""
    cfg = config(influxdb_url)
    k = SeriesKey("line1", "coater", "lane03_A", "areal_weight")
    stats = Stats(k, T0, T0 + 1, 4, 20.1, 19.9, 20.3, 1, 20.05, 19.8, 20.2)
    loose = Frame.from_columns(
        "spc",
        {"line": ["line1"]},
        {"count": [5.0], "mean": np.array([20], dtype=object)},
        [int((T0 + 2) * NS)],
    )
    async with writer(cfg) as w:
        t1 = w.add(frames(Envelope("gw1", 1, Kind.STATS, T0, (stats,)), "plant1"))
        t2 = w.add([loose])
        await until(lambda: t1.done and t2.done, 10, "both writes")
        assert (w.points_written, w.points_refused) == (2, 0)
    [types] = influxql(influxdb_url, cfg.database, "SHOW FIELD KEYS FROM spc")
    declared = dict(types["values"])
    assert declared["count"] == "integer" and declared["bad"] == "integer"
    assert declared["mean"] == "float" and declared["ucl"] == "float"
    [s] = influxql(influxdb_url, cfg.database, "SELECT count, mean FROM spc")
    assert s["values"] == [[int((T0 + 1) * NS), 4, 20.1], [int((T0 + 2) * NS), 5, 20.0]]


async def test_lines_influx_refuses_are_counted_and_the_rest_stored(
    influxdb_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(influxdb_url)
    async with Influx1Sink(cfg) as sink:
        # Another tool wrote "value" as a string first: our floats now conflict with it.
        await sink.write(Batch(b'telemetry,line=x value="text" 1\n', 1))
        with pytest.raises(SinkRefused, match="unable to parse"):
            await sink.write(Batch(b"telemetry,line=x value=\n", 1))
    good = Frame.from_columns("spc", {"line": ["l1"] * 3}, {"count": [1, 2, 3]}, [1, 2, 3])
    clash = Frame.from_columns("telemetry", {"line": ["x", "y"]}, {"value": [1.0, 2.0]}, [5, 6])
    async with writer(cfg) as w:
        ticket = w.add([good, clash])
        await until(lambda: ticket.done, 10, "the isolating writes")
        assert (w.points_written, w.points_refused, w.pending) == (3, 2, 0)
    assert "field type conflict" in caplog.text
    [s] = influxql(influxdb_url, cfg.database, "SELECT count FROM spc")
    assert [v[1] for v in s["values"]] == [1, 2, 3]


async def test_a_small_body_limit_splits_batches(tmp_path: Path) -> None:
    with influxd_with(tmp_path, "  max-body-size = 4000") as url:
        cfg = config(url)
        n = 1000
        f = Frame.from_columns(
            "telemetry",
            {"line": ["line1"] * n},
            {"value": np.arange(n, dtype=float)},
            int(T0 * NS) + np.arange(n),
        )
        async with writer(cfg, batch_size=1000) as w:
            ticket = w.add([f])
            await until(lambda: ticket.done, 20, "the split writes")
            assert w.points_written == n and w.limit < 1000 and w.points_refused == 0
        [s] = influxql(url, cfg.database, "SELECT count(value) FROM telemetry")
    assert s["values"][0][1] == n


async def test_outage_keeps_points_and_retries_until_influx_is_back(tmp_path: Path) -> None:
    port = free_port()
    cfg = config(f"http://127.0.0.1:{port}", timeout_s=1)
    f = Frame.from_columns("spc", {}, {"count": list(range(10))}, list(range(1, 11)))
    async with SeriesWriter(
        Influx1Sink(cfg), flush_interval_s=0.02, retry_min_s=0.05, retry_max_s=0.2
    ) as w:
        ticket = w.add([f])
        await until(lambda: w.write_errors >= 3, 5, "failed writes")
        assert (w.pending, w.points_written, ticket.done) == (10, 0, False)
        with influxd(tmp_path, port=port) as (url, _):
            await until(lambda: ticket.done, 15, "the retried write")
            assert (w.points_written, w.pending) == (10, 0)
            [s] = influxql(url, cfg.database, "SELECT count(count) FROM spc")
    assert s["values"][0][1] == 10


async def test_a_user_who_may_not_create_databases_still_writes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "cellwatch.server.influx1")
    with influxd_with(tmp_path, "  auth-enabled = true") as url:
        admin = ("admin", "admin-pw")
        with httpx.Client(base_url=url, timeout=10) as c:
            for q, auth in (
                ("CREATE USER admin WITH PASSWORD 'admin-pw' WITH ALL PRIVILEGES", None),
                ("CREATE DATABASE plant", admin),
                ("CREATE USER writer WITH PASSWORD 'w-pw'", admin),
                ('GRANT WRITE ON "plant" TO "writer"', admin),
            ):
                c.post("/query", params={"q": q}, auth=auth).raise_for_status()
        cfg = config(url, database="plant", username="writer", password="w-pw")
        f = Frame.from_columns("spc", {"line": ["l1"]}, {"count": [3]}, [int(T0 * NS)])
        async with writer(cfg) as w:
            ticket = w.add([f])
            await until(lambda: ticket.done, 10, "the write")
            assert (w.points_written, w.write_errors) == (1, 0)
        [s] = influxql(url, "plant", "SELECT count FROM spc", auth=admin)
    assert s["values"] == [[int(T0 * NS), 3]]
    assert "may not create database plant (HTTP 403)" in caplog.text
