"""Ingest against a real Mosquitto: decoding, deduplication, rejections, alerts, reconnect,
acknowledgement only after storage, shared subscriptions, back-pressure."""

from __future__ import annotations

import asyncio
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
from server.sink import Batch, SinkRetry
from server.store import Store
from server.writer import SeriesWriter
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

    publisher.publish(
        station_topic(cfg, Kind.TELEMETRY), encode(Envelope("gw1", 1, Kind.TELEMETRY, T0, readings))
    )
    publisher.publish(station_topic(cfg, Kind.DETECTION), first_detection)
    publisher.publish(station_topic(cfg, Kind.DETECTION), first_detection)  # QoS 1 redelivery
    publisher.publish(station_topic(cfg, Kind.DETECTION), b'{"schema": 1, "kind": "detec')
    publisher.publish(
        station_topic(cfg, Kind.STATS), encode(Envelope("gw1", 3, Kind.STATS, T0, (stats,)))
    )
    publisher.publish(
        status_topic(cfg.broker.topic_prefix, cfg.site.id, "gw1"),
        encode(Envelope("gw1", 4, Kind.STATUS, T0, (status,))),
    )
    publisher.publish(
        station_topic(cfg, Kind.DETECTION),
        encode(Envelope("gw1", 5, Kind.DETECTION, T0, (det(T0 + 2),))),
    )
    await until(lambda: ingest.messages == 7, 10, "all seven messages")

    assert ingest.counters() == {
        "messages": 7,
        "rejected": 1,
        "duplicates": 1,
        "readings": 3,
        "detections": 2,
        "failed": 0,
        "acked": 7,
        "unacked": 0,
        "window_waits": 0,
        "rewritten": 0,
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
                        pub.publish(
                            station_topic(cfg, Kind.DETECTION),
                            encode(Envelope("gw1", 1, Kind.DETECTION, T0, (det(T0),))),
                        )
                    finally:
                        pub.close()
                    await until(lambda: ing.detections == 1, 10, "the detection after restart")


# -- acknowledged only once stored ---------------------------------------------------------


class GatedSink:
    """A frame sink that stores into a list, but only while ``open`` is set (an outage)."""

    name = "gated"
    wants_lines = False

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.rows: list[tuple[str, int]] = []

    async def __aenter__(self) -> GatedSink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def write(self, batch: Batch) -> None:
        if not self.open.is_set():
            raise SinkRetry("down")
        for f in batch.frames:
            for j, ts in zip(f.series_index.tolist(), f.ts_ns.tolist(), strict=True):
                self.rows.append((dict(f.series[j])["equipment"], ts))


def telemetry(seq: int, equipment: str = "lane03_A") -> bytes:
    key = SeriesKey("line1", "coater", equipment, "areal_weight")
    readings = tuple(Reading(key, T0 + seq + i / 10, 20.0) for i in range(5))
    return encode(Envelope("gw1", seq, Kind.TELEMETRY, T0, readings))


async def test_messages_stay_with_the_broker_until_stored(
    mosquitto_url: str, publisher: Publisher
) -> None:
    """Nothing is acknowledged while the store is down; a restarted server resumes the
    session, gets the messages again, stores each once and acknowledges them."""
    cfg = plant(mosquitto_url)
    with Store(":memory:") as store:
        sink = GatedSink()
        async with SeriesWriter(
            sink, flush_interval_s=0.02, retry_min_s=0.05, retry_max_s=0.1
        ) as w:
            async with Ingest(cfg, store, AlertBook(store), w) as ing:
                await ing.wait_subscribed(10)
                for seq in (1, 2, 3):
                    publisher.publish(station_topic(cfg, Kind.TELEMETRY), telemetry(seq))
                publisher.publish(station_topic(cfg, Kind.TELEMETRY), telemetry(2))  # QoS 1 dup
                await until(lambda: ing.messages == 4, 10, "the four messages")
                await until(lambda: w.write_errors >= 2, 10, "failed writes")
                assert ing.counters()["unacked"] == 4 and ing.acked == 0 and sink.rows == []
                client_id = ing.client_id
        # The server stops with nothing stored; the broker keeps all four messages.
        sink = GatedSink()
        sink.open.set()
        async with SeriesWriter(sink, flush_interval_s=0.02) as w:
            async with Ingest(cfg, store, AlertBook(store), w, client_id=client_id) as ing:
                await until(lambda: ing.acked == 4, 10, "the redelivered messages acked")
                assert ing.duplicates >= 1 and ing.counters()["unacked"] == 0
    assert sorted(sink.rows) == sorted(
        ("lane03_A", round((T0 + seq + i / 10) * 1e9)) for seq in (1, 2, 3) for i in range(5)
    )


async def test_a_redelivery_while_writing_is_acknowledged_with_the_first_copy(
    mosquitto_url: str, publisher: Publisher
) -> None:
    cfg = plant(mosquitto_url)
    sink = GatedSink()
    with Store(":memory:") as store:
        async with SeriesWriter(
            sink, flush_interval_s=0.02, retry_min_s=0.02, retry_max_s=0.05
        ) as w:
            async with Ingest(cfg, store, AlertBook(store), w) as ing:
                await ing.wait_subscribed(10)
                publisher.publish(station_topic(cfg, Kind.TELEMETRY), telemetry(7))
                publisher.publish(station_topic(cfg, Kind.TELEMETRY), telemetry(7))
                await until(lambda: ing.messages == 2, 10, "both copies")
                assert (ing.duplicates, ing.counters()["unacked"]) == (1, 2)
                sink.open.set()
                await until(lambda: ing.acked == 2, 10, "both copies acknowledged")
    assert len(sink.rows) == 5


async def test_messages_beyond_the_window_wait_at_the_broker_not_in_memory(
    mosquitto_url: str, publisher: Publisher
) -> None:
    cfg = plant(mosquitto_url)
    sink = GatedSink()
    with Store(":memory:") as store:
        async with SeriesWriter(
            sink, flush_interval_s=0.02, retry_min_s=0.02, retry_max_s=0.05
        ) as w:
            async with Ingest(cfg, store, AlertBook(store), w, max_unacked=3) as ing:
                await ing.wait_subscribed(10)
                for seq in range(1, 9):
                    publisher.publish(station_topic(cfg, Kind.TELEMETRY), telemetry(seq))
                await until(lambda: ing.window_waits == 1, 10, "paho waiting for room")
                assert (ing.messages, w.pending) == (3, 15)  # the other five: at the broker
                sink.open.set()
                await until(lambda: ing.acked == 8, 10, "every message stored and acked")
                assert w.pending == 0 and ing.counters()["unacked"] == 0
    assert len(sink.rows) == 40


async def test_a_shared_subscription_splits_the_load(
    mosquitto_url: str, publisher: Publisher
) -> None:
    cfg = plant(mosquitto_url)
    prefix = cfg.broker.topic_prefix.replace("/", "-")
    with Store(":memory:") as s1, Store(":memory:") as s2:
        async with (
            Ingest(
                cfg, s1, AlertBook(s1), share_group="cw", mqtt5=True, client_id=f"{prefix}-r1"
            ) as a,
            Ingest(
                cfg, s2, AlertBook(s2), share_group="cw", mqtt5=True, client_id=f"{prefix}-r2"
            ) as b,
        ):
            await a.wait_subscribed(10)
            await b.wait_subscribed(10)
            assert a.topic_filter == f"$share/cw/{cfg.broker.topic_prefix}/#"
            for seq in range(1, 21):
                publisher.publish(station_topic(cfg, Kind.TELEMETRY), telemetry(seq))
            await until(lambda: a.messages + b.messages == 20, 10, "all twenty messages")
            assert a.messages > 0 and b.messages > 0
            assert a.readings + b.readings == 100 and a.acked + b.acked == 20
