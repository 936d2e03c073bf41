"""Wire format: every message kind round-trips; malformed payloads are rejected with a reason."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.messages import (
    Detection,
    EdgeStatus,
    Envelope,
    Kind,
    Quality,
    Reading,
    SeriesKey,
    SourceStatus,
    Stats,
)
from models.wire import WireError, decode, encode, status_topic, topic

KEY = SeriesKey("line1", "coater", "lane03_A", "areal_weight")

names = st.text(min_size=1, max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(
    key=st.builds(SeriesKey, names, names, names, names),
    ts=finite,
    value=finite,
    quality=st.sampled_from(list(Quality)),
    received=st.none() | finite,
    seq=st.integers(0, 2**53),
)
def test_reading_envelope_round_trips(key, ts, value, quality, received, seq) -> None:
    env = Envelope("gw", seq, Kind.TELEMETRY, 1.5, (Reading(key, ts, value, quality, received),))
    assert decode(encode(env)) == env


def test_stats_detection_status_round_trip() -> None:
    envs = [
        Envelope(
            "gw",
            1,
            Kind.STATS,
            2.0,
            (
                Stats(KEY, 1.0, 2.0, 4, 20.0, 19.9, 20.1, 1, 20.02, 19.8, 20.2),
                Stats(KEY, 1.0, 2.0, 0, math.nan, math.nan, math.nan),
            ),
        ),
        Envelope(
            "gw",
            2,
            Kind.DETECTION,
            2.0,
            (Detection(KEY, 1.5, "ewma", 20.3, 20.2, 1, 20.0, 0.1, "above UCL"),),
        ),
        Envelope(
            "gw",
            3,
            Kind.STATUS,
            2.0,
            (EdgeStatus(2.0, 10.0, (SourceStatus("plc", "connected", 5, 1, 2, "x"),), 7, 1, 0, 3),),
        ),
    ]
    for env in envs:
        back = decode(encode(env))
        assert back.kind is env.kind and back.seq == env.seq
        assert encode(back) == encode(env)


def test_nan_value_travels_as_null_and_comes_back_nan() -> None:
    env = Envelope("gw", 1, Kind.TELEMETRY, 1.0, (Reading(KEY, 1.0, math.nan, Quality.BAD),))
    raw = encode(env)
    assert json.loads(raw)["items"][0][2] is None
    assert math.isnan(decode(raw).items[0].value)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[]", "an envelope must be an object"),
        (b'{"schema": 99}', "schema must be 1, got 99"),
        (b'{"schema": 1, "kind": "gossip"}', "kind must be one of"),
        (b'{"schema": 1, "kind": "telemetry", "items": 3}', "items must be a list"),
        (
            b'{"schema":1,"kind":"telemetry","edge_id":"g","seq":1,"sent_ts":1,"items":[[1]]}',
            "5-element list",
        ),
        (
            b'{"schema":1,"kind":"telemetry","edge_id":"g","seq":"1","sent_ts":1,"items":[]}',
            "seq must be an integer",
        ),
        (
            b'{"schema":1,"kind":"telemetry","edge_id":"g","seq":1,"sent_ts":1,'
            b'"items":[[["a","b","c","d"],1,"x","good",null]]}',
            "value must be a finite number",
        ),
        (
            b'{"schema":1,"kind":"telemetry","edge_id":"g","seq":1,"sent_ts":NaN,"items":[]}',
            "not JSON: NaN is not allowed",
        ),
        (
            b'{"schema":1,"kind":"telemetry","edge_id":"g","seq":1,"sent_ts":1e400,"items":[]}',
            "sent_ts must be a finite number",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (
            b'{"schema":1,"kind":"status","edge_id":"g","seq":1,"sent_ts":1,"items":[{"ts":1,'
            b'"uptime_s":1,"published":0,"pending":0,"dropped":0,"detections":0,"sources":3}]}',
            "sources must be a list",
        ),
        (
            b'{"schema":1,"kind":"telemetry","edge_id":"g","seq":1,"sent_ts":1,'
            b'"items":[[["a","b","c","d"],1,2,"great",null]]}',
            "quality must be good",
        ),
        (
            b'{"schema":1,"kind":"detection","edge_id":"g","seq":1,"sent_ts":1,"items":[{}]}',
            "detection item lacks 'key'",
        ),
    ],
)
def test_malformed_payload_is_rejected_with_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        decode(payload)


def test_topics_follow_the_isa95_namespace() -> None:
    assert topic("cellwatch/v1", "p", "cells", "line1", "coater", Kind.STATS) == (
        "cellwatch/v1/p/cells/line1/coater/stats"
    )
    assert status_topic("cellwatch/v1", "p", "gw1") == "cellwatch/v1/p/_edge/gw1/status"
