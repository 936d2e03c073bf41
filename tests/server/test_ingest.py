"""Ingest against a real Mosquitto: decoding, deduplication, rejections, alerts, reconnect."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from models.messages import (
    Detection,
    EdgeStatus,
    Envelope,
    Kind,
    Reading,
    SeriesKey,
    SourceStatus,
    Stats,
)
from models.plant import PlantConfig
from models.wire import encode, status_topic, topic
from server.alerts import AlertBook, AlertStatus
from server.ingest import Ingest
from server.store import Store
from tests.server.conftest import Publisher, plant
from tests.servers import free_port, mosquitto
from tests.waiting import eventually as until

pytestmark = pytest.mark.integration

KEY = SeriesKey("line1", "coater", "lane03_A", "areal_weight")
T0 = 1_700_000_000.0


def det(ts: float) -> Detection:
    return Detection(KEY, ts, "ewma", 20.9, 20.7, 1, 20.0, 0.1, "EWMA above UCL")


def station_topic(cfg: PlantConfig, kind: Kind) -> str:
    return topic(cfg.broker.topic_prefix, cfg.site.id, "cells", "line1", "coater", kind)


@pytest.fixture
async def ingest(mosquitto_url: str) -> AsyncIterator[Ingest]:
    cfg = plant(mosquitto_url)
    with Store(":memory:") as store:
        async with Ingest(cfg, store, AlertBook(store)) as ing:
            await ing.wait_subscribed(10)
            yield ing


async def test_envelopes_become_readings_alerts_stats_and_status(
    ingest: Ingest, publisher: Publisher, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = ingest.cfg
    readings = tuple(Reading(KEY, T0 + i, 20.0 + i / 10) for i in range(3))
    stats = Stats(KEY, T0, T0 + 3, 3, 20.1, 20.0, 20.2, 0, 20.05, 19.8, 20.3)
    status = EdgeStatus(T0, 12.0, (SourceStatus("coater-plc", "connected", 3),), published=4)
    first_detection = encode(Envelope("gw1", 2, Kind.DETECTION, T0, (det(T0 + 1),)))

    publisher.publish(station_topic(cfg, Kind.TELEMETRY),
                      encode(Envelope("gw1", 1, Kind.TELEMETRY, T0, readings)))
    publisher.publish(station_topic(cfg, Kind.DETECTION), first_detection)
    publisher.publish(station_topic(cfg, Kind.DETECTION), first_detection)  # QoS 1 redelivery
    publisher.publish(station_topic(cfg, Kind.DETECTION), b'{"schema": 1, "kind": "detec')
    publisher.publish(station_topic(cfg, Kind.STATS),
                      encode(Envelope("gw1", 3, Kind.STATS, T0, (stats,))))
    publisher.publish(status_topic(cfg.broker.topic_prefix, cfg.site.id, "gw1"),
                      encode(Envelope("gw1", 4, Kind.STATUS, T0, (status,))))
    publisher.publish(station_topic(cfg, Kind.DETECTION),
                      encode(Envelope("gw1", 5, Kind.DETECTION, T0, (det(T0 + 2),))))
    await until(lambda: ingest.messages == 7, 10, "all seven messages")

    assert ingest.counters() == {
        "messages": 7, "rejected": 1, "duplicates": 1, "readings": 3, "detections": 2,
        "failed": 0,
    }
    [alert] = ingest.alerts.select()
    assert (alert.key, alert.rule, alert.status, alert.count) == (KEY, "ewma", AlertStatus.OPEN, 2)
    assert (alert.first_ts, alert.last_ts) == (T0 + 1, T0 + 2)
    assert len(ingest.store.detections(alert.id)) == 2
    assert ingest.latest == {KEY: stats}
    assert ingest.edges["gw1"].status == status
    assert ingest.store.seen_count() == 5
    rejections = [r for r in caplog.records if "rejected message" in r.getMessage()]
    assert len(rejections) == 1
    assert station_topic(cfg, Kind.DETECTION) in rejections[0].getMessage()
    assert "not JSON" in rejections[0].getMessage()


async def test_bad_values_and_mismatched_topics_are_rejected_not_fatal(
    ingest: Ingest, publisher: Publisher
) -> None:
    cfg = ingest.cfg
    telemetry = encode(Envelope("gw1", 1, Kind.TELEMETRY, T0, (Reading(KEY, T0, math.nan),)))
    publisher.publish(station_topic(cfg, Kind.STATS), telemetry)  # right envelope, wrong topic
    publisher.publish(station_topic(cfg, Kind.TELEMETRY), b"\xff\xfe")
    publisher.publish(station_topic(cfg, Kind.TELEMETRY), b'{"schema": 99}')
    publisher.publish(station_topic(cfg, Kind.TELEMETRY), telemetry)  # NaN travels as null
    await until(lambda: ingest.messages == 4, 10, "all four messages")
    assert (ingest.rejected, ingest.readings, ingest.failed) == (3, 1, 0)


async def test_resubscribes_after_the_broker_restarts(tmp_path: Path) -> None:
    port = free_port()
    with mosquitto(tmp_path, port=port) as (url, _):
        cfg = plant(url)
        with Store(":memory:") as store:
            async with Ingest(cfg, store, AlertBook(store)) as ing:
                await ing.wait_subscribed(10)
                assert ing.connected
    # Same port, fresh broker: it knows nothing of the old subscription.
    with Store(":memory:") as store:
        with mosquitto(tmp_path, port=port) as (url, proc):
            async with Ingest(cfg, store, AlertBook(store)) as ing:
                await ing.wait_subscribed(10)
                proc.terminate()
                proc.wait(5)
                await until(lambda: not ing.connected, 5, "noticing the broker is gone")
                with mosquitto(tmp_path, port=port):
                    await ing.wait_subscribed(10)
                    pub = Publisher(url)
                    try:
                        pub.publish(station_topic(cfg, Kind.DETECTION),
                                    encode(Envelope("gw1", 1, Kind.DETECTION, T0, (det(T0),))))
                    finally:
                        pub.close()
                    await until(lambda: ing.detections == 1, 10, "the detection after restart")
