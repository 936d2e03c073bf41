"""The whole central server on port 0: HTTP API, dashboard, InfluxDB, start and stop."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import httpx
import pytest

from models.messages import Detection, EdgeStatus, Envelope, Kind, SeriesKey, Stats
from models.wire import encode, status_topic, topic
from server import CentralServer, ServerError
from tests.server.conftest import Publisher, plant, vm_export
from tests.servers import free_port
from tests.waiting import eventually as until

pytestmark = pytest.mark.integration

KEY = SeriesKey("line1", "coater", "lane03_A", "areal_weight")
T0 = 1_700_000_000.0


def station_topic(prefix: str, kind: Kind) -> str:
    return topic(prefix, "plant1", "cells", "line1", "coater", kind)


def paho_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if "cellwatch-server" in t.name]


async def test_api_alerts_dashboard_and_influx(
    mosquitto_url: str, influxdb_url: str, publisher: Publisher
) -> None:
    db = f"t_{uuid.uuid4().hex[:12]}"
    cfg = plant(
        mosquitto_url, influxdb={"url": influxdb_url, "database": db, "flush_interval_s": 0.05}
    )
    prefix = cfg.broker.topic_prefix
    threads_before = set(threading.enumerate())
    detection = Detection(KEY, T0 + 1, "ewma", 20.9, 20.7, 1, 20.0, 0.1, "EWMA <above> UCL")
    stats = Stats(KEY, T0, T0 + 1, 2, 20.5, 20.4, 20.6, 0, 20.45, 19.8, 20.2)
    async with CentralServer(cfg) as server:
        assert server.url.startswith("http://127.0.0.1:") and not server.url.endswith(":0")
        await server.wait_subscribed(10)
        publisher.publish(
            station_topic(prefix, Kind.DETECTION),
            encode(Envelope("gw1", 1, Kind.DETECTION, T0, (detection,))),
        )
        publisher.publish(
            station_topic(prefix, Kind.STATS), encode(Envelope("gw1", 2, Kind.STATS, T0, (stats,)))
        )
        publisher.publish(
            status_topic(prefix, "plant1", "gw1"),
            encode(
                Envelope("gw1", 3, Kind.STATUS, T0, (EdgeStatus(T0, 5.0, published=3, pending=1),))
            ),
        )
        await until(lambda: server.counters()["messages"] == 3, 10, "all three messages")

        async with httpx.AsyncClient(base_url=server.url) as http:
            health = (await http.get("/api/health")).json()
            assert health["status"] == "ok" and health["broker_connected"] is True
            assert health["counters"]["detections"] == 1
            assert health["series"]["sink"] == f"influxdb1 {influxdb_url} db={db}"
            edge = health["edges"]["gw1"]
            assert 0 <= edge["age_s"] < 10 and (edge["published"], edge["pending"]) == (3, 1)

            [alert] = (await http.get("/api/alerts")).json()
            assert (alert["tag"], alert["rule"], alert["status"], alert["count"]) == (
                str(KEY),
                "ewma",
                "open",
                1,
            )
            [series] = (await http.get("/api/latest")).json()
            assert (series["tag"], series["mean"], series["ucl"], series["count"]) == (
                str(KEY),
                20.5,
                20.2,
                2,
            )

            page = await http.get("/")
            assert page.headers["content-type"].startswith("text/html")
            assert "<title>cellwatch" in page.text and str(KEY) in page.text
            assert "<td>EWMA &lt;above&gt; UCL</td>" in page.text  # the alert, escaped
            # statistic 20.45 above UCL 20.2: the series row is marked out of control.
            assert f'<tr class="beyond"><td>{KEY}</td>' in page.text
            assert "http://" not in page.text.replace(server.url, "")  # no external assets

            r = await http.post(f"/api/alerts/{alert['id']}/ack")
            assert r.status_code == 200 and r.json()["status"] == "acknowledged"
            assert (await http.post("/api/alerts/9999/ack")).status_code == 404
            assert (await http.post("/api/alerts/9999/close")).status_code == 404
            assert (await http.get("/api/alerts?status=open")).json() == []
            r = await http.post(f"/api/alerts/{alert['id']}/close")
            assert r.json()["status"] == "closed"
            assert (await http.post(f"/api/alerts/{alert['id']}/ack")).status_code == 409
            closed = (await http.get("/api/alerts", params={"status": "closed"})).json()
            assert [a["id"] for a in closed] == [alert["id"]]
            assert (await http.get("/api/alerts?status=bogus")).status_code == 422
            assert "EWMA &lt;above" not in (await http.get("/")).text  # closed: not live

        await until(lambda: server.counters()["points_written"] == 3, 10, "points in InfluxDB")
        counters = server.counters()
        assert counters["alerts"] == [
            {
                "id": alert["id"],
                "tag": str(KEY),
                "rule": "ewma",
                "status": "closed",
                "first_ts": T0 + 1,
                "last_ts": T0 + 1,
                "count": 1,
                "message": "EWMA <above> UCL",
            },
        ]
        assert counters["write_errors"] == 0
        started = time.monotonic()
    assert time.monotonic() - started < 2.0
    assert paho_threads() == []
    assert set(threading.enumerate()) <= threads_before  # no thread left behind

    async with httpx.AsyncClient(base_url=influxdb_url) as c:
        r = await c.get("/query", params={"db": db, "q": "SELECT rule, value FROM detection"})
    assert r.json()["results"][0]["series"][0]["values"][0][1:] == ["ewma", 20.9]


async def test_without_influx_the_series_go_to_the_embedded_file(
    mosquitto_url: str, publisher: Publisher, tmp_path
) -> None:
    cfg = plant(
        mosquitto_url, server={"port": 0, "db_path": str(tmp_path / "cw.sqlite")}, influxdb={}
    )
    stats = Stats(KEY, T0, T0 + 1, 2, 20.5, 20.4, 20.6, 0, 20.45, 19.8, 20.2)
    async with CentralServer(cfg) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            health = (await http.get("/api/health")).json()
        assert health["series"]["sink"] == f"sqlite {tmp_path / 'cw-series.sqlite'}"
        assert health["edges"] == {}
        await server.wait_subscribed(10)
        publisher.publish(
            station_topic(cfg.broker.topic_prefix, Kind.STATS),
            encode(Envelope("gw1", 1, Kind.STATS, T0, (stats,))),
        )
        await until(lambda: server.counters()["points_written"] == 1, 10, "the stored point")
        rows = server.writer.sink.query("SELECT equipment, count, mean, ucl, time FROM spc")
    assert rows == [("lane03_A", 2, 20.5, 20.2, int((T0 + 1) * 1e9))]


async def test_influxdb_2_api_through_the_whole_server(
    mosquitto_url: str, victoria_metrics_url: str, publisher: Publisher
) -> None:
    site = f"p{uuid.uuid4().hex[:8]}"
    cfg = plant(
        mosquitto_url,
        site={"id": site},
        influxdb={
            "url": victoria_metrics_url,
            "version": 2,
            "token": "t",
            "org": "o",
            "bucket": "cw",
            "gzip": True,
            "flush_interval_s": 0.05,
        },
    )
    stats = Stats(KEY, T0, T0 + 1, 2, 20.5, 20.4, 20.6, 0, 20.45, 19.8, 20.2)
    async with CentralServer(cfg) as server:
        await server.wait_subscribed(10)
        topic_ = topic(cfg.broker.topic_prefix, site, "cells", "line1", "coater", Kind.STATS)
        publisher.publish(topic_, encode(Envelope("gw1", 1, Kind.STATS, T0, (stats,))))
        await until(lambda: server.counters()["points_written"] == 1, 10, "the written point")
        assert server.counters()["series_sink"] == f"influxdb2 {victoria_metrics_url} bucket=cw"
    await until(lambda: vm_export(victoria_metrics_url, f'{{site="{site}"}}'), 10, "the export")
    got = {
        s["metric"]["__name__"]: s["values"]
        for s in vm_export(victoria_metrics_url, f'{{site="{site}"}}')
    }
    assert got["spc_count"] == [2] and got["spc_ucl"] == [20.2]


async def test_port_in_use_raises_a_one_line_error(mosquitto_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = plant(
            mosquitto_url, server={"host": "127.0.0.1", "port": port, "db_path": ":memory:"}
        )
        with pytest.raises(ServerError) as info:
            async with CentralServer(cfg):
                pass
    assert isinstance(info.value, OSError)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "\n" not in message
    assert paho_threads() == []


async def test_state_survives_a_restart_on_the_same_file(
    mosquitto_url: str, publisher: Publisher, tmp_path
) -> None:
    cfg = plant(mosquitto_url, server={"port": 0, "db_path": str(tmp_path / "cw.sqlite")})
    envelope = encode(
        Envelope(
            "gw1", 7, Kind.DETECTION, T0, (Detection(KEY, T0, "ewma", 20.9, 20.7, 1, 20.0, 0.1),)
        )
    )
    where = station_topic(cfg.broker.topic_prefix, Kind.DETECTION)
    async with CentralServer(cfg) as server:
        await server.wait_subscribed(10)
        publisher.publish(where, envelope)
        await until(lambda: server.counters()["detections"] == 1, 10, "the detection")
    async with CentralServer(cfg) as server:
        await server.wait_subscribed(10)
        publisher.publish(where, envelope)  # redelivered after the restart
        await until(lambda: server.counters()["duplicates"] == 1, 10, "the duplicate")
        assert [a["count"] for a in server.counters()["alerts"]] == [1]


async def test_starts_and_stops_while_the_broker_is_down(caplog: pytest.LogCaptureFixture) -> None:
    cfg = plant(f"mqtt://127.0.0.1:{free_port()}")
    async with CentralServer(cfg) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            health = (await http.get("/api/health")).json()
        assert health["status"] == "ok" and health["broker_connected"] is False
        started = time.monotonic()
    assert time.monotonic() - started < 2.0
    assert "not reachable yet" in caplog.text
    assert paho_threads() == []
