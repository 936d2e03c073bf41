"""InfluxDB 1.6 goes away for 30 s while an edge publishes 10,000 points a second: when it is
back, every point is in it exactly once, and the server's buffer stayed bounded meanwhile.

The edge is a separate process publishing QoS 1 envelopes of 100 readings, 100 a second,
through a real Mosquitto; the server side is the real ingest (persistent session, manual
acknowledgement) and writer in front of a real influxd, stopped and started on the same port
and data directory.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from models.messages import Envelope, Kind, Reading, SeriesKey
from models.plant import InfluxConfig
from models.wire import encode, topic
from server.alerts import AlertBook
from server.influx1 import Influx1Sink
from server.ingest import MAX_UNACKED, Ingest
from server.store import Store
from server.writer import SeriesWriter
from tests.server.conftest import influxql, plant
from tests.servers import free_port, influxd
from tests.waiting import eventually as until

pytestmark = pytest.mark.integration

RATE_MSGS = 100  # envelopes per second
PER_MSG = 100  # readings per envelope: 10,000 points per second
T0 = 1_700_000_000.0
OUTAGE_S = 30.0


def publish(url: str, where: str, seconds: float, started: multiprocessing.Event) -> None:
    """The edge: ``RATE_MSGS`` envelopes a second for ``seconds``, each point unique."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    u = urlsplit(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="")
    client.max_queued_messages_set(0)
    client.connect(u.hostname or "127.0.0.1", u.port or 1883)
    client.loop_start()
    total = int(seconds * RATE_MSGS)
    start = time.monotonic()
    started.set()
    info = None
    for seq in range(1, total + 1):
        delay = start + seq / RATE_MSGS - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the load, not waiting for anything
        readings = tuple(
            Reading(
                SeriesKey("line1", "formation", f"cab{i % 10:02d}-ch{i // 10:02d}", "v"),
                T0 + seq * 0.01 + i * 1e-5,
                float(seq * PER_MSG + i),
            )
            for i in range(PER_MSG)
        )
        info = client.publish(
            where, encode(Envelope("edge1", seq, Kind.TELEMETRY, T0, readings)), qos=1
        )
    if info is not None:
        info.wait_for_publish(timeout=120)
    client.disconnect()
    client.loop_stop()


async def test_influx_outage_loses_nothing_and_duplicates_nothing(
    mosquitto_url: str, tmp_path: Path
) -> None:
    port = free_port()
    cfg = plant(mosquitto_url)
    where = topic(
        cfg.broker.topic_prefix, cfg.site.id, "cells", "line1", "formation", Kind.TELEMETRY
    )
    influx = InfluxConfig(url=f"http://127.0.0.1:{port}", database="outage", timeout_s=2)
    before, after = 5.0, 5.0
    seconds = before + OUTAGE_S + after
    expected = int(seconds * RATE_MSGS) * PER_MSG
    peak = 0

    async def watch(w: SeriesWriter) -> None:
        nonlocal peak
        while True:
            peak = max(peak, w.pending)
            await asyncio.sleep(0.05)

    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    edge = ctx.Process(target=publish, args=(mosquitto_url, where, seconds, started))
    first, second = ExitStack(), ExitStack()
    with Store(":memory:") as store, first, second:
        await asyncio.to_thread(first.enter_context, influxd(tmp_path, port=port))
        writer = SeriesWriter(
            Influx1Sink(influx), flush_interval_s=0.2, retry_min_s=0.2, retry_max_s=1.0
        )
        async with writer as w, Ingest(cfg, store, AlertBook(store), w) as ing:
            await ing.wait_subscribed(10)
            sampler = asyncio.create_task(watch(w))
            edge.start()
            try:
                await asyncio.to_thread(started.wait, 30)
                await until(
                    lambda: w.points_written >= before * 10_000 * 0.5,
                    20,
                    "points before the outage",
                )
                await asyncio.to_thread(first.close)  # influxd stops
                stopped = w.points_written
                await asyncio.sleep(OUTAGE_S)  # the outage itself, not a wait for an event
                assert w.points_written == stopped and w.write_errors > 0
                await asyncio.to_thread(second.enter_context, influxd(tmp_path, port=port))
                await asyncio.to_thread(edge.join, 120)
                assert edge.exitcode == 0
                await until(
                    lambda: ing.acked == int(seconds * RATE_MSGS),
                    120,
                    "every envelope stored and acknowledged",
                )
            finally:
                sampler.cancel()
                if edge.is_alive():
                    edge.terminate()
        assert influx.url is not None
        [s] = influxql(influx.url, "outage", "SELECT count(value), sum(value) FROM telemetry")
    n_msgs = int(seconds * RATE_MSGS)
    count, total = s["values"][0][1], s["values"][0][2]
    assert count == expected
    assert total == sum(
        float(seq * PER_MSG + i) for seq in range(1, n_msgs + 1) for i in range(PER_MSG)
    )
    assert stopped < expected
    # Back-pressure: at most the ingest window of envelopes waited in memory, never the
    # 300,000 points published during the outage (those waited at the broker).
    assert peak <= MAX_UNACKED * PER_MSG
    assert (ing.rejected, ing.failed, w.points_refused, w.points_rejected) == (0, 0, 0, 0)
