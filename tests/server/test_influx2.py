"""The 2.x write path (/api/v2/write through influxdb-client, token, org, bucket, gzip)
against a real server that implements it: Debian's VictoriaMetrics, read back through its
export API. VictoriaMetrics names a series ``{measurement}_{field}`` with the tags as labels,
keeps millisecond timestamps and stores numbers only (a string field reads back as 0)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
import pytest

from models.messages import Envelope, Kind, Reading, SeriesKey, Stats
from models.plant import InfluxConfig
from server.frame import Frame
from server.influx2 import Influx2Sink, bucket_of
from server.schema import frames
from server.sink import Batch, SinkRetry
from server.writer import SeriesWriter
from tests.server.conftest import vm_export
from tests.servers import free_port
from tests.waiting import eventually as until

pytestmark = pytest.mark.integration


def config(url: str, **kw: Any) -> InfluxConfig:
    return InfluxConfig(url=url, version=2, token="t0ken", org="plant", bucket="cellwatch", **kw)


def exported(url: str, match: str, n: int) -> list[dict]:
    got: list[dict] = []

    def enough() -> bool:
        got[:] = vm_export(url, match)
        return sum(len(s["values"]) for s in got) >= n

    return got if enough() else []


@pytest.mark.parametrize("gzip", [False, True])
async def test_envelopes_reach_the_server_through_api_v2_write(
    victoria_metrics_url: str, gzip: bool
) -> None:
    site = f"s{uuid.uuid4().hex[:8]}"
    k = SeriesKey("line1", "coater", "lane03_A", "areal_weight")
    now = time.time() - 60  # in the past: the export ends at the present
    readings = tuple(Reading(k, now + i / 10, 20.0 + i / 100) for i in range(50))
    stats = Stats(k, now, now + 5, 50, 20.25, 20.0, 20.49, 0)
    async with SeriesWriter(
        Influx2Sink(config(victoria_metrics_url, gzip=gzip)), flush_interval_s=0.02
    ) as w:
        t1 = w.add(frames(Envelope("gw1", 1, Kind.TELEMETRY, now, readings), site))
        t2 = w.add(frames(Envelope("gw1", 2, Kind.STATS, now, (stats,)), site))
        await until(lambda: t1.done and t2.done, 10, "both envelopes")
        assert (w.points_written, w.write_errors) == (51, 0)

    await until(
        lambda: exported(victoria_metrics_url, f'{{site="{site}"}}', 51), 10, "the exported series"
    )
    got = exported(victoria_metrics_url, f'{{site="{site}"}}', 51)
    by_name = {s["metric"]["__name__"]: s for s in got}
    assert set(by_name) == {
        "telemetry_value",
        "spc_count",
        "spc_mean",
        "spc_min",
        "spc_max",
        "spc_bad",
    }
    tel = by_name["telemetry_value"]
    assert tel["metric"] == {
        "__name__": "telemetry_value",
        "site": site,
        "line": "line1",
        "station": "coater",
        "equipment": "lane03_A",
        "param": "areal_weight",
        "quality": "good",
    }
    assert tel["values"] == [r.value for r in readings]
    assert tel["timestamps"] == [int(r.ts * 1000) for r in readings]
    assert by_name["spc_count"]["values"] == [50] and by_name["spc_mean"]["values"] == [20.25]


async def test_large_frames_arrive_complete(victoria_metrics_url: str) -> None:
    site = f"s{uuid.uuid4().hex[:8]}"
    n = 30_000
    t0 = int(time.time() * 1000 - 120_000) * 1_000_000  # in the past: export ends at now
    f = Frame.from_columns(
        "telemetry",
        {"site": [site] * n, "equipment": [f"cab{i % 40:02d}" for i in range(n)]},
        {"value": np.arange(n, dtype=float)},
        t0 + np.arange(n) * 1_000_000,
    )
    async with SeriesWriter(
        Influx2Sink(config(victoria_metrics_url, gzip=True)), batch_size=5000, flush_interval_s=0.02
    ) as w:
        ticket = w.add([f])
        await until(lambda: ticket.done, 20, "the batches")
    await until(
        lambda: exported(victoria_metrics_url, f'{{site="{site}"}}', n), 10, "every point exported"
    )
    got = exported(victoria_metrics_url, f'{{site="{site}"}}', n)
    assert len(got) == 40
    values = sorted(v for s in got for v in s["values"])
    assert values == list(range(n))


async def test_an_unreachable_server_is_a_retry() -> None:
    cfg = config(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    async with Influx2Sink(cfg) as sink:
        with pytest.raises(SinkRetry):
            await sink.write(Batch(b"spc count=1i 1\n", 1))


def test_bucket_defaults_follow_the_1x_mapping() -> None:
    assert bucket_of(InfluxConfig(database="db")) == "db"
    assert bucket_of(InfluxConfig(database="db", retention_policy="week")) == "db/week"
    assert bucket_of(InfluxConfig(database="db", bucket="b")) == "b"
