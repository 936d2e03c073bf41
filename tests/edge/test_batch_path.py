"""The columnar path from source to frame: payload columns, the batch queue, admission and the
framer's batch layout, each checked against the one-reading-at-a-time semantics it replaces."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import defaultdict

import numpy as np
import pytest

from edge.framer import Framer
from edge.monitor import Monitor
from edge.payload import Columns, PayloadReader
from edge.source import QueuedSource
from models.batch import Batch
from models.configfile import ConfigError
from models.messages import Quality, Reading, SeriesKey
from models.plant import MqttPayload, PlantConfig
from tests.edge.plants import plant

QUALITIES = [Quality.GOOD] * 6 + [Quality.UNCERTAIN, Quality.BAD]


def random_readings(seed: int, n: int = 400) -> list[Reading]:
    """Readings of 3 params x 7 equipment in random arrival order, with bad quality, NaN and
    inf values mixed in."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        eq = f"e{int(rng.integers(7))}"
        param = ("voltage", "current", "cell_temperature")[int(rng.integers(3))]
        value = float(rng.normal())
        roll = rng.random()
        if roll < 0.03:
            value = math.nan
        elif roll < 0.05:
            value = math.inf
        q = QUALITIES[int(rng.integers(len(QUALITIES)))]
        out.append(
            Reading(
                SeriesKey("l1", "formation", eq, param),
                100.0 + i * 0.01,
                value,
                q,
                received_ts=200.0 + i,
            )
        )
    return out


def reference(readings: list[Reading]) -> dict[tuple[str, str, str], dict[str, object]]:
    """The frame layout spelled out one reading at a time (the framer's documented contract)."""
    groups: dict[tuple[str, str, str], dict[str, list[Reading]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in readings:
        groups[(r.key.line, r.key.station, r.key.param)][r.key.equipment].append(r)
    out = {}
    for g, cols in groups.items():
        eqs = sorted(cols)
        usable = [[r for r in cols[e] if r.usable] for e in eqs]
        t = max(len(u) for u in usable)
        values = np.full((t, len(eqs)), np.nan)
        for j, u in enumerate(usable):
            values[: len(u), j] = [r.value for r in u]
        out[g] = {
            "equipment": tuple(eqs),
            "values": values,
            "count": [len(u) for u in usable],
            "bad": [len(cols[e]) - len(u) for e, u in zip(eqs, usable, strict=True)],
            "ts_start": [min(r.ts for r in cols[e]) for e in eqs],
            "ts_end": [max(r.ts for r in cols[e]) for e in eqs],
            "samples": [r for e in eqs for r in cols[e]],
        }
    return out


def fields(r: Reading) -> tuple[object, ...]:
    v = "nan" if math.isnan(r.value) else r.value
    return (r.key, r.ts, v, r.quality, r.received_ts, r.server_ts, r.backfilled)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("chunk", [1, 7, 400])
def test_batches_frame_exactly_as_the_readings_one_by_one(seed: int, chunk: int) -> None:
    readings = random_readings(seed)
    framer = Framer()
    for a in range(0, len(readings), chunk):
        framer.add_batch(Batch.of(readings[a : a + chunk]))
    assert len(framer) == len(readings)
    frames = framer.cut()
    want = reference(readings)
    assert [f.group for f in frames] == sorted(want)
    for f in frames:
        w = want[f.group]
        assert f.equipment == w["equipment"]
        np.testing.assert_array_equal(f.values, w["values"])
        assert f.count.tolist() == w["count"]
        assert f.bad.tolist() == w["bad"]
        assert f.ts_start.tolist() == w["ts_start"]
        assert f.ts_end.tolist() == w["ts_end"]
        assert [fields(r) for r in f.readings] == [fields(r) for r in w["samples"]]  # type: ignore[attr-defined]
    bad = sum(1 for r in readings if not r.usable)
    assert framer.excluded == bad
    assert framer.nonfinite == sum(
        1 for r in readings if r.quality is Quality.GOOD and not math.isfinite(r.value)
    )
    assert framer.cut() == [] and len(framer) == 0


def test_single_readings_and_batches_mix_in_one_window() -> None:
    readings = random_readings(4, 60)
    framer = Framer()
    for i, r in enumerate(readings):
        if i % 2:
            framer.add(r)
        else:
            framer.add_batch(Batch.of([r]))
    got = {f.group: f for f in framer.cut()}
    # Arrival order within a column holds for batches; single readings are packed at the cut,
    # so compare the multiset of each column's samples.
    for g, w in reference(readings).items():
        assert sorted(map(repr, got[g].readings)) == sorted(map(repr, w["samples"]))  # type: ignore[arg-type]


def test_a_batch_sample_without_a_finite_time_is_refused_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    k = SeriesKey("l1", "formation", "e1", "voltage")
    framer = Framer()
    with caplog.at_level(logging.WARNING, "cellwatch.edge.framer"):
        framer.add_batch(
            Batch.of([Reading(k, math.nan, 1.0), Reading(k, 5.0, 2.0), Reading(k, math.inf, 3.0)])
        )
    assert framer.rejected == 2
    assert len(caplog.records) == 1  # logged once per series
    [f] = framer.cut()
    assert f.values.tolist() == [[2.0]]


def test_many_series_keep_their_sorted_layout_as_new_ones_appear() -> None:
    framer = Framer()
    k = lambda e: SeriesKey("l1", "formation", e, "voltage")  # noqa: E731
    framer.add_batch(Batch.of([Reading(k("z"), 1.0, 1.0), Reading(k("m"), 1.0, 2.0)]))
    assert framer.cut()[0].equipment == ("m", "z")
    framer.add_batch(Batch.of([Reading(k("a"), 2.0, 3.0), Reading(k("z"), 2.0, 4.0)]))
    [f] = framer.cut()
    assert f.equipment == ("a", "z") and f.values.tolist() == [[3.0, 4.0]]


# -- payload columns ---------------------------------------------------------------------------

SPEC = MqttPayload(timestamp="ts", timestamp_unit="ms", values={"v": "m.v", "i": "i"})


@pytest.mark.parametrize("seed", range(5))
def test_clean_batches_read_as_columns_equal_the_sample_path(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    ts = (1.7e12 + np.cumsum(rng.integers(1, 500, n))).tolist()
    v = rng.normal(3.7, 0.1, n).tolist()
    i = rng.integers(-5, 5, n).tolist()  # JSON integers are numbers too
    data = json.dumps({"ts": ts, "m": {"v": v}, "i": i}).encode()
    reader = PayloadReader(SPEC)
    cols = reader.read_columns(data)
    assert isinstance(cols, Columns)
    slow = reader.read(data)
    assert slow.rejections == ()
    flat = [
        (p, t, x)
        for p, row in zip(cols.params, cols.values.tolist(), strict=True)
        for t, x in zip(cols.ts.tolist(), row, strict=True)
    ]
    assert sorted(flat) == sorted((s.param, s.ts, s.value) for s in slow.samples)


@pytest.mark.parametrize(
    "body",
    [
        {"ts": [1, 2], "m": {"v": [1.0, True]}, "i": [1, 2]},
        {"ts": [1, 2], "m": {"v": [1.0, "2"]}, "i": [1, 2]},
        {"ts": [1, 2], "m": {"v": [1.0, None]}, "i": [1, 2]},
        {"ts": [1, 2], "m": {"v": [1.0]}, "i": [1, 2]},
        {"ts": [1, "x"], "m": {"v": [1.0, 2.0]}, "i": [1, 2]},
        {"ts": [1, 2], "m": {"v": [1.0, 2.0]}},
        {"ts": [1, 2], "m": {"v": [1.0, 10**400]}, "i": [1, 2]},
    ],
)
def test_anything_unclean_goes_the_sample_path_with_its_reasons(body: dict) -> None:
    data = json.dumps(body).encode()
    reader = PayloadReader(SPEC)
    got = reader.read_columns(data)
    assert not isinstance(got, Columns)
    assert got == reader.read(data)
    assert got.rejections


def test_nan_in_a_batch_is_rejected_not_read_as_a_column() -> None:
    data = b'{"ts": [1, 2], "m": {"v": [1.0, NaN]}, "i": [1, 2]}'
    got = PayloadReader(SPEC).read_columns(data)
    assert not isinstance(got, Columns)
    assert got.rejections == ("v[1]: not a finite number: nan",)
    assert len(got.samples) == 3


# -- the queue of batches ----------------------------------------------------------------------


def test_a_batch_that_does_not_fit_is_rejected_whole_and_counted_per_value() -> None:
    src = QueuedSource("s", logging.getLogger("test"), queue_size=10)
    k = SeriesKey("l1", "formation", "e1", "voltage")
    batch = Batch.of([Reading(k, float(i), 1.0) for i in range(8)])
    src._emit_batch(batch)
    src._emit_batch(batch)
    assert (src.readings, src.rejected) == (8, 8)


def test_single_readings_emitted_in_one_turn_become_one_batch_in_order() -> None:
    async def main() -> list[Batch]:
        src = QueuedSource("s", logging.getLogger("test"))
        k = SeriesKey("l1", "formation", "e1", "voltage")
        for i in range(5):
            src._emit(Reading(k, float(i), 1.0))
        src._emit_batch(Batch.of([Reading(k, 5.0, 1.0)]))
        src._emit(Reading(k, 6.0, 1.0))
        src._close_stream()
        out = []
        while (b := await src.next_batch()) is not None:
            out.append(b)
        return out

    batches = asyncio.run(main())
    assert [b.ts.tolist() for b in batches] == [[0.0, 1.0, 2.0, 3.0, 4.0], [5.0], [6.0]]


def test_iterating_a_source_still_yields_single_readings() -> None:
    async def main() -> list[float]:
        src = QueuedSource("s", logging.getLogger("test"))
        k = SeriesKey("l1", "formation", "e1", "voltage")
        src._emit_batch(Batch.of([Reading(k, 1.0, 1.0), Reading(k, 2.0, 1.0)]))
        src._emit(Reading(k, 3.0, 1.0))
        src._close_stream()
        return [r.ts async for r in src]

    assert asyncio.run(main()) == [1.0, 2.0, 3.0]


# -- admission and config ----------------------------------------------------------------------


def test_admit_batch_drops_undeclared_parameters_counted() -> None:
    m = Monitor(plant())
    cfg = plant()
    line = cfg.lines[0]
    st = line.stations[0]
    declared = st.params[0].id
    ok = SeriesKey(line.id, st.id, "e1", declared)
    no = SeriesKey(line.id, st.id, "e1", "not_declared")
    b = Batch.of([Reading(ok, 1.0, 1.0), Reading(no, 1.0, 1.0), Reading(no, 2.0, 1.0)])
    got = m.admit_batch(b)
    assert [r.key for r in got.readings()] == [ok]
    assert m.rejected == 2


def test_receive_maximum_needs_mqtt_5() -> None:
    body = plant().model_dump(mode="json")
    body["sources"]["mqtt"] = [
        {
            "id": "m",
            "topic": "a/+",
            "line": body["lines"][0]["id"],
            "station": body["lines"][0]["stations"][0]["id"],
            "equipment": "{1}",
            "payload": {"timestamp": "ts", "values": {"x": "x"}},
            "receive_maximum": 1000,
        }
    ]
    with pytest.raises((ConfigError, ValueError), match="receive_maximum"):
        PlantConfig.model_validate(body)
    body["sources"]["mqtt"][0]["protocol"] = 5
    assert PlantConfig.model_validate(body).sources.mqtt[0].receive_maximum == 1000


@pytest.mark.parametrize("seed", [5, 6])
def test_window_summary_matches_each_column_computed_alone(seed: int) -> None:
    readings = random_readings(seed, 300)
    framer = Framer()
    framer.add_batch(Batch.of(readings))
    monitor = Monitor(plant())
    for f in framer.cut():
        got = {s.key.equipment: s for s in monitor.process(f).stats}
        assert set(got) == set(f.equipment)
        for j, eq in enumerate(f.equipment):
            x = f.values[: f.count[j], j]
            s = got[eq]
            assert (s.count, s.bad) == (int(f.count[j]), int(f.bad[j]))
            if x.size:
                assert s.mean == pytest.approx(float(x.mean()), rel=1e-12, abs=1e-12)
                assert (s.minimum, s.maximum) == (float(x.min()), float(x.max()))
            else:
                assert math.isnan(s.mean) and math.isnan(s.minimum) and math.isnan(s.maximum)
