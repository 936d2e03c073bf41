"""Payload reading: single samples, batches, units, nesting, and every kind of malformed input."""

from __future__ import annotations

import json

import pytest

from edge.payload import PayloadReader, Sample
from models.plant import MqttPayload

SPEC = MqttPayload(timestamp="ts", values={"voltage": "v", "current": "i"})


def read(obj: object, spec: MqttPayload = SPEC) -> tuple[list[Sample], list[str]]:
    p = PayloadReader(spec).read(json.dumps(obj).encode() if not isinstance(obj, bytes) else obj)
    return list(p.samples), list(p.rejections)


def test_single_sample() -> None:
    samples, rej = read({"ts": 1.7e9, "v": 3.71, "i": 2})
    assert samples == [Sample("voltage", 1.7e9, 3.71), Sample("current", 1.7e9, 2.0)]
    assert rej == []


def test_batch_with_milliseconds_and_nested_fields() -> None:
    spec = MqttPayload(timestamp="meta.t", timestamp_unit="ms", values={"voltage": "m.v"})
    samples, rej = read({"meta": {"t": [1000, 1500]}, "m": {"v": [3.7, 3.8]}}, spec)
    assert samples == [Sample("voltage", 1.0, 3.7), Sample("voltage", 1.5, 3.8)]
    assert rej == []


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ([1, 2], "must be a JSON object"),
        ({"v": 1.0, "i": 1.0}, "missing timestamp field 'ts'"),
        ({"ts": "noon", "v": 1.0, "i": 1.0}, "timestamp 'ts': not a finite number"),
        ({"ts": True, "v": 1.0, "i": 1.0}, "timestamp 'ts': not a finite number"),
    ],
)
def test_whole_payload_rejections(payload: object, reason: str) -> None:
    samples, rej = read(payload)
    assert samples == []
    assert len(rej) == 1 and reason in rej[0]


def test_field_rejections_keep_the_other_fields() -> None:
    samples, rej = read({"ts": 5.0, "v": "high", "i": 1.5})
    assert samples == [Sample("current", 5.0, 1.5)]
    assert rej == ["voltage: not a finite number: 'high'"]
    samples, rej = read({"ts": 5.0, "i": None})
    assert samples == []
    assert rej == ["voltage: missing field 'v'", "current: not a finite number: None"]
    samples, rej = read({"ts": 5.0, "v": [1.0], "i": 1.0})
    assert [s.param for s in samples] == ["current"] and "is an array" in rej[0]


def test_nan_and_infinity_are_rejected() -> None:
    samples, rej = read(b'{"ts": [1, 2, 3], "v": [NaN, 1.0, Infinity], "i": [1, 2, 3]}')
    assert [(s.param, s.ts) for s in samples] == [
        ("voltage", 2.0), ("current", 1.0), ("current", 2.0), ("current", 3.0),
    ]
    assert rej == ["voltage[0]: not a finite number: nan", "voltage[2]: not a finite number: inf"]


def test_batch_length_mismatch_and_bad_timestamp_elements() -> None:
    samples, rej = read({"ts": [1, 2, 3], "v": [1.0, 2.0], "i": [1, 2, 3]})
    assert [s.param for s in samples] == ["current"] * 3
    assert rej == ["voltage: 2 values for 3 timestamps"]
    samples, rej = read({"ts": [1, None, 3], "v": [1.0, 2.0, 3.0], "i": 7})
    assert [(s.param, s.ts) for s in samples] == [("voltage", 1.0), ("voltage", 3.0)]
    assert rej == ["timestamp[1]: not a finite number: None",
                   "current: field 'i' is not an array but the timestamp is"]


def test_json_the_parser_refuses_is_a_counted_rejection_not_an_exception() -> None:
    reader = PayloadReader(SPEC)
    huge_int = b'{"ts": 1' + b"1" * 5000 + b', "v": 1}'  # Python caps int digits at 4300
    deep = b"[" * 100_000 + b"]" * 100_000
    for payload in (huge_int, deep):
        parsed = reader.read(payload)
        assert parsed.samples == () and parsed.rejections[0].startswith("not JSON")
