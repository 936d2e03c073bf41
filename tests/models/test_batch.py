"""Batches of readings in columns, and their telemetry item on the wire."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest

from models.batch import Batch, StatsBatch
from models.messages import Envelope, Kind, Quality, Reading, SeriesKey, Stats
from models.wire import WireError, decode, encode


def key(eq: str, param: str = "voltage") -> SeriesKey:
    return SeriesKey("line1", "formation", eq, param)


def mixed() -> list[Reading]:
    return [
        Reading(key("a"), 1.0, 3.7, received_ts=1.25),
        Reading(key("b"), 1.0, math.nan, Quality.BAD, 1.5, server_ts=0.9),
        Reading(key("a"), 2.0, 3.8, Quality.UNCERTAIN, None, backfilled=True),
        Reading(key("c", "current"), 2.5, -1.0e-300, received_ts=2.6),
        Reading(key("b"), 3.0, 1e300),
    ]


def fields(r: Reading) -> tuple[object, ...]:
    v = "nan" if math.isnan(r.value) else r.value
    return (r.key, r.ts, v, r.quality, r.received_ts, r.server_ts, r.backfilled)


def test_of_and_readings_round_trip_every_field() -> None:
    rs = mixed()
    b = Batch.of(rs)
    assert len(b) == 5
    assert b.keys == (key("a"), key("b"), key("c", "current"))
    assert b.series.tolist() == [0, 1, 0, 2, 1]
    assert [fields(r) for r in b.readings()] == [fields(r) for r in rs]


def test_all_good_live_batches_carry_no_optional_columns() -> None:
    b = Batch.of([Reading(key("a"), 1.0, 2.0), Reading(key("b"), 1.0, 2.0)])
    assert b.quality is None and b.server_ts is None and b.backfilled is None
    assert b.usable().tolist() == [True, True]


def test_usable_excludes_bad_quality_and_non_finite_values() -> None:
    assert Batch.of(mixed()).usable().tolist() == [True, False, False, True, True]
    b = Batch.of([Reading(key("a"), 1.0, math.inf), Reading(key("a"), 2.0, 1.0)])
    assert b.usable().tolist() == [False, True]


def test_concat_merges_key_tables_and_fills_missing_columns() -> None:
    first = Batch.of([Reading(key("a"), 1.0, 1.0), Reading(key("b"), 1.0, 2.0)])
    second = Batch.of(mixed())
    both = Batch.concat([first, second])
    assert both.keys == (key("a"), key("b"), key("c", "current"))
    expected = [fields(r) for r in [*first.readings(), *second.readings()]]
    assert [fields(r) for r in both.readings()] == expected
    assert both.quality is not None and both.quality[:2].tolist() == [0, 0]


def test_take_keeps_the_key_table() -> None:
    b = Batch.of(mixed())
    t = b.take(np.array([4, 0]))
    assert t.keys == b.keys
    assert [fields(r) for r in t.readings()] == [fields(mixed()[4]), fields(mixed()[0])]


def envelope(b: Batch) -> Envelope:
    return Envelope("gw1", 7, Kind.TELEMETRY, 10.0, (b,))


def test_wire_batch_item_decodes_to_the_same_readings_sorted_by_series() -> None:
    rs = mixed()
    got = decode(encode(envelope(Batch.of(rs)))).items
    order = sorted(range(len(rs)), key=lambda i: Batch.of(rs).series[i])
    assert [fields(r) for r in got] == [fields(rs[i]) for i in order]  # type: ignore[arg-type]


def test_wire_batch_item_is_compact_for_a_clean_batch() -> None:
    rng = np.random.default_rng(1)
    rs = [
        Reading(key(f"ch{j}"), 1.7e9 + i / 8, float(x), received_ts=1.7e9 + 1)
        for j in range(64)
        for i, x in enumerate(rng.normal(3.7, 0.01, 8))
    ]
    item = json.loads(encode(envelope(Batch.of(rs))))["items"][0]
    assert set(item) == {"keys", "count", "ts", "value", "received_ts"}
    assert item["count"] == [8] * 64
    assert len(base64.b64decode(item["value"])) == 8 * len(rs)


def bad_item(**change: object) -> bytes:
    body = json.loads(encode(envelope(Batch.of(mixed()))))
    body["items"][0].update(change)
    body["items"][0] = {k: v for k, v in body["items"][0].items() if v is not None}
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ts": "@@@"}, "not base64"),
        ({"value": base64.b64encode(b"\0" * 8).decode()}, "bytes for 5 samples"),
        ({"count": [1, 1, 1]}, "bytes for 3 samples"),
        ({"count": [1, 1]}, "one count"),
        ({"count": [6, -1, 0]}, "one count"),
        ({"ts": None}, "lacks 'ts'"),
        ({"extra": 1}, "unknown field"),
        ({"quality": base64.b64encode(bytes([0, 0, 0, 3, 0])).decode()}, "quality codes"),
        ({"backfilled": base64.b64encode(bytes([0, 2, 0, 0, 0])).decode()}, "backfilled"),
        ({"ts": base64.b64encode(np.full(5, np.nan).tobytes()).decode()}, "finite"),
        ({"value": [1, 2, 3, 4, 5]}, "base64 string"),
        ({"keys": [["a", "b"]]}, "key must be"),
    ],
)
def test_wire_rejects_a_broken_batch_item_with_the_reason(change: dict, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        decode(bad_item(**change))


def test_a_batch_cannot_be_sent_as_stats() -> None:
    env = Envelope("gw1", 1, Kind.STATS, 1.0, (Batch.of(mixed()),))
    with pytest.raises(TypeError, match="stats"):
        encode(env)


# -- window summaries --------------------------------------------------------------------------


def summary() -> StatsBatch:
    return StatsBatch(
        "line1",
        "formation",
        "voltage",
        ("a", "b", "c"),
        np.array([1.0, 1.0, 2.0]),
        np.array([1.5, 1.9, 2.0]),
        np.array([3, 0, 1]),
        np.array([3.7, np.nan, 3.6]),
        np.array([3.6, np.nan, 3.6]),
        np.array([3.8, np.nan, 3.6]),
        np.array([0, 2, 0]),
        np.array([3.71, np.nan, np.nan]),
        np.array([3.5, np.nan, np.nan]),
        np.array([3.9, np.nan, np.nan]),
    )


def stats_fields(s: Stats) -> tuple[object, ...]:
    nan = lambda x: "nan" if isinstance(x, float) and math.isnan(x) else x  # noqa: E731
    return (
        s.key,
        s.ts_start,
        s.ts_end,
        s.count,
        nan(s.mean),
        nan(s.minimum),
        nan(s.maximum),
        s.bad,
        s.statistic,
        s.lcl,
        s.ucl,
    )


def test_a_summary_decodes_to_one_stats_per_series() -> None:
    sb = summary()
    env = Envelope("gw1", 3, Kind.STATS, 10.0, (sb,))
    got = decode(encode(env)).items
    assert [stats_fields(s) for s in got] == [stats_fields(s) for s in sb.items()]  # type: ignore[arg-type]
    a, b, _ = sb.items()
    assert (a.statistic, a.lcl, a.ucl) == (3.71, 3.5, 3.9)
    assert (b.count, b.bad, b.statistic) == (0, 2, None)


def test_a_summary_without_charted_series_leaves_the_limits_out() -> None:
    sb = summary()
    nan = np.full(3, np.nan)
    bare = StatsBatch(
        *[getattr(sb, f) for f in StatsBatch.__dataclass_fields__][:11], nan, nan, nan
    )
    item = json.loads(encode(Envelope("gw1", 3, Kind.STATS, 10.0, (bare,))))["items"][0]
    assert not {"statistic", "lcl", "ucl"} & set(item)
    assert all(
        s.ucl is None for s in decode(encode(Envelope("gw1", 3, Kind.STATS, 1.0, (bare,)))).items
    )  # type: ignore[union-attr]


def bad_summary(**change: object) -> bytes:
    body = json.loads(encode(Envelope("gw1", 3, Kind.STATS, 10.0, (summary(),))))
    body["items"][0].update(change)
    body["items"][0] = {k: v for k, v in body["items"][0].items() if v is not None}
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"count": base64.b64encode(np.array([1, -1, 0], "<i8").tobytes()).decode()}, "negative"),
        (
            {"ts_end": base64.b64encode(np.array([1, np.inf, 0], "<f8").tobytes()).decode()},
            "finite",
        ),
        ({"mean": None}, "lacks 'mean'"),
        ({"line": None}, "lacks 'line'"),
        ({"equipment": ["a", "b"]}, "bytes for 2 samples"),
        ({"oops": 1}, "unknown field"),
    ],
)
def test_a_broken_summary_is_rejected_with_the_reason(change: dict, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        decode(bad_summary(**change))


def test_a_summary_cannot_be_sent_as_telemetry() -> None:
    with pytest.raises(TypeError, match="telemetry"):
        encode(Envelope("gw1", 1, Kind.TELEMETRY, 1.0, (summary(),)))
