"""Health reports built from real source counters and fake clocks: rates, lag, skew, outbox."""

from __future__ import annotations

import doctest
import logging

from edge import health
from edge.health import Health, OutboxCounters
from edge.source import QueuedSource
from models.messages import EdgeStatus, Envelope, Kind, Quality, Reading, SeriesKey
from models.wire import decode, encode

KEY = SeriesKey("l1", "coater", "lane01", "weight")


def source(name: str) -> QueuedSource:
    return QueuedSource(name, logging.getLogger(f"test.health.{name}"))


def emit(src: QueuedSource, *stamps: float, quality: Quality = Quality.GOOD) -> None:
    for ts in stamps:
        src._emit(Reading(KEY, ts, 1.0, quality))


def test_rate_counts_readings_since_the_previous_report() -> None:
    plc, mqtt = source("plc"), source("mqtt")
    health = Health(started=50.0)
    emit(plc, *range(100))
    first = health.report([plc, mqtt], OutboxCounters(), 0, now=1e9, mono=60.0)
    assert [s.rate_per_s for s in first.sources] == [10.0, 0.0]  # 100 in 10 s since start
    emit(plc, *range(100, 130))
    emit(mqtt, 1.0, 2.0)
    second = health.report([plc, mqtt], OutboxCounters(), 0, now=1e9, mono=65.0)
    assert [s.rate_per_s for s in second.sources] == [6.0, 0.4]
    assert [s.readings for s in second.sources] == [130, 2]
    third = health.report([plc, mqtt], OutboxCounters(), 0, now=1e9, mono=65.0)
    assert [s.rate_per_s for s in third.sources] == [0.0, 0.0]  # no time passed: no rate
    assert (first.uptime_s, second.uptime_s) == (10.0, 15.0)


def test_lag_is_the_age_of_the_newest_reading_corrected_for_clock_skew() -> None:
    plc = source("plc")
    health = Health(started=0.0)
    assert (
        health.report([plc], OutboxCounters(), 0, now=1000.0, mono=1.0).sources[0].lag_s is None
    )  # nothing received yet
    emit(plc, 990.0, 995.0)
    assert health.report([plc], OutboxCounters(), 0, now=1000.0, mono=2.0).sources[0].lag_s == 5.0
    emit(plc, 900.0)  # a backfilled old sample arrives last: it does not make the source late
    s = health.report([plc], OutboxCounters(), 0, now=1001.0, mono=3.0).sources[0]
    assert s.lag_s == 6.0
    plc.clock_skew_s = 2.0  # the device clock runs 2 s ahead: its stamps read 2 s too new
    s = health.report([plc], OutboxCounters(), 0, now=1001.0, mono=4.0).sources[0]
    assert (s.lag_s, s.clock_skew_s) == (8.0, 2.0)


def test_source_counters_and_outbox_counters_reach_the_report_and_the_wire() -> None:
    plc = source("plc")
    plc.state = "connected"
    emit(plc, 1.0, 2.0)
    emit(plc, 3.0, quality=Quality.BAD)
    emit(plc, 4.0, quality=Quality.UNCERTAIN)
    plc._reject("payload is not JSON")
    plc.reconnects, plc.stale, plc.backfilled = 2, 1, 40

    class Publisher:  # the counters the outbox owner exposes, as plain attributes
        published, pending, dropped, outbox_bytes, lag_s = 120, 7, 3, 4096, 1.5

    status = Health(started=0.0).report(
        [plc], OutboxCounters.of(Publisher()), 9, now=100.0, mono=2.0
    )
    [s] = status.sources
    assert (s.source, s.state, s.readings, s.bad_quality, s.rejected) == (
        "plc",
        "connected",
        4,
        2,
        1,
    )
    assert (s.reconnects, s.stale, s.backfilled, s.rate_per_s, s.lag_s) == (2, 1, 40, 2.0, 96.0)
    assert (status.published, status.pending, status.dropped, status.detections) == (120, 7, 3, 9)
    assert (status.outbox_bytes, status.lag_s, status.ts, status.uptime_s) == (
        4096,
        1.5,
        100.0,
        2.0,
    )
    back = decode(encode(Envelope("gw", 1, Kind.STATUS, 100.0, (status,))))
    assert back.items == (status,)
    assert isinstance(back.items[0], EdgeStatus)


def test_a_publisher_without_byte_or_age_counters_still_reports() -> None:
    class Plain:
        published, pending, dropped = 5, 0, 0

    assert OutboxCounters.of(Plain()) == OutboxCounters(5, 0, 0, 0, None)


def test_docstring_examples() -> None:
    result = doctest.testmod(health)
    assert result.attempted > 0 and result.failed == 0
