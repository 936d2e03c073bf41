"""The writer's policy at the one-method sink seam: batching, backoff, Retry-After, splits.

The sink here is a plain function behind `server.sink.Sink` (the seam the writer is built
on); the real InfluxDB and VictoriaMetrics paths are in test_influx.py and test_influx2.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from server.frame import Frame
from server.sink import Batch, SinkRefused, SinkRetry, SinkTooLarge, retry_after_s
from server.writer import SeriesWriter
from tests.waiting import eventually as until


class FunctionSink:
    """A sink that calls ``fn(batch)``; what it raises is the server's answer."""

    name = "function"

    def __init__(self, fn: Callable[[Batch], Awaitable[None]], wants_lines: bool = True) -> None:
        self.fn = fn
        self.wants_lines = wants_lines
        self.calls: list[tuple[float, int]] = []

    async def __aenter__(self) -> FunctionSink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def write(self, batch: Batch) -> None:
        self.calls.append((time.monotonic(), batch.size))
        await self.fn(batch)


def telemetry(n: int, start: int = 0) -> Frame:
    return Frame.from_columns(
        "telemetry",
        {"line": ["l1"] * n},
        {"value": np.arange(start, start + n, dtype=float)},
        np.arange(start, start + n),
    )


def values(body: bytes) -> list[int]:
    return [int(line.split(b" ")[1].split(b"=")[1]) for line in body.split(b"\n")[:-1]]


async def test_batches_respect_the_size_and_tickets_complete_when_written() -> None:
    stored: list[int] = []

    async def ok(batch: Batch) -> None:
        stored.extend(values(batch.body))

    sink = FunctionSink(ok)
    async with SeriesWriter(sink, batch_size=100, flush_interval_s=0.05) as w:
        tickets = [w.add([telemetry(70, 70 * i)]) for i in range(5)]
        assert not any(t.done for t in tickets)
        await until(lambda: all(t.done for t in tickets), 5, "every ticket")
    assert stored == list(range(350))
    assert all(size <= 100 for _, size in sink.calls)
    assert (w.points_written, w.pending, w.write_errors) == (350, 0, 0)


async def test_a_partial_batch_waits_at_most_the_flush_interval() -> None:
    async def ok(batch: Batch) -> None:
        return None

    sink = FunctionSink(ok)
    async with SeriesWriter(sink, batch_size=1000, flush_interval_s=0.3) as w:
        t0 = time.monotonic()
        ticket = w.add([telemetry(5)])
        await until(lambda: ticket.done, 5, "the timed flush")
        waited = time.monotonic() - t0
        assert 0.25 <= waited < 1.0
        kicked = w.add([telemetry(5)])
        w.kick()
        t1 = time.monotonic()
        await until(lambda: kicked.done, 5, "the kicked flush")
        assert time.monotonic() - t1 < 0.2


async def test_retry_after_is_honoured_and_points_are_kept() -> None:
    answers = [SinkRetry("HTTP 429: slow down", retry_after=0.4), SinkRetry("HTTP 503", 0.2)]

    async def busy(batch: Batch) -> None:
        if answers:
            raise answers.pop(0)

    sink = FunctionSink(busy)
    async with SeriesWriter(sink, batch_size=10, flush_interval_s=0.01) as w:
        ticket = w.add([telemetry(10)])
        await until(lambda: ticket.done, 5, "the write after two refusals")
    (t1, _), (t2, _), (t3, _) = sink.calls
    assert t2 - t1 >= 0.4 and t3 - t2 >= 0.2
    assert (w.points_written, w.write_errors, w.pending) == (10, 2, 0)


def refusing(failures: int) -> FunctionSink:
    """A sink that refuses its first ``failures`` writes as a store that is down would."""
    left = failures

    async def down(batch: Batch) -> None:
        nonlocal left
        if left:
            left -= 1
            raise SinkRetry("ConnectError: refused")

    return FunctionSink(down)


async def test_backoff_doubles_without_retry_after() -> None:
    sink = refusing(4)
    async with SeriesWriter(sink, flush_interval_s=0.01, retry_min_s=0.05, retry_max_s=1) as w:
        ticket = w.add([telemetry(3)])
        await until(lambda: ticket.done, 5, "the write after the outage")
    gaps = np.diff([t for t, _ in sink.calls])
    # 0.05, 0.1, 0.2, 0.4 s, each with +-20 % jitter.
    expected = 0.05 * 2.0 ** np.arange(4)
    assert np.all(gaps >= 0.8 * expected) and np.all(gaps < 1.2 * expected + 0.1)


async def test_a_long_outage_does_not_stop_the_writer() -> None:
    # 1,100 failed rounds in a row (about 9 hours at the default 30 s maximum): the backoff's
    # 2 ** 1024 once overflowed a float here and ended the writer's task for good.
    sink = refusing(1100)
    async with SeriesWriter(sink, flush_interval_s=0.01, retry_min_s=0.0, retry_max_s=0.0) as w:
        ticket = w.add([telemetry(3)])
        await until(lambda: ticket.done, 10, "the write after the outage")
    assert (w.points_written, len(sink.calls)) == (3, 1101)


async def test_too_large_halves_the_batch_until_it_fits() -> None:
    stored: list[int] = []

    async def small(batch: Batch) -> None:
        if batch.size > 30:
            raise SinkTooLarge("request entity too large")
        stored.extend(values(batch.body))

    sink = FunctionSink(small)
    async with SeriesWriter(sink, batch_size=100, flush_interval_s=0.01) as w:
        ticket = w.add([telemetry(100)])
        await until(lambda: ticket.done, 5, "the split write")
        assert w.limit == 25
        later = w.add([telemetry(100, 100)])
        await until(lambda: later.done, 5, "the next write")
    assert sorted(stored) == list(range(200))
    assert all(size <= 25 for _, size in sink.calls[-4:])  # no more 413s: cut to the limit


async def test_refused_lines_are_isolated_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stored: set[int] = set()
    bad = {17, 42}

    async def picky(batch: Batch) -> None:
        vals = values(batch.body)
        stored.update(v for v in vals if v not in bad)  # InfluxDB keeps the valid lines
        if bad & set(vals):
            raise SinkRefused('partial write: field type conflict: input field "value"')

    sink = FunctionSink(picky)
    async with SeriesWriter(sink, batch_size=64, flush_interval_s=0.01) as w:
        ticket = w.add([telemetry(64)])
        await until(lambda: ticket.done, 5, "the isolating writes")
    assert stored == set(range(64)) - bad
    assert (w.points_written, w.points_refused) == (62, 2)
    refused = [r.getMessage() for r in caplog.records if "refused 1 line(s)" in r.getMessage()]
    assert len(refused) == 2
    assert all("field type conflict" in m for m in refused)
    assert any("value=17 17" in m for m in refused) and any("value=42 42" in m for m in refused)


async def test_a_400_naming_every_line_is_not_split() -> None:
    async def none(batch: Batch) -> None:
        raise SinkRefused(f"partial write: field type conflict dropped={batch.size}")

    sink = FunctionSink(none)
    async with SeriesWriter(sink, batch_size=50, flush_interval_s=0.01) as w:
        ticket = w.add([telemetry(50)])
        await until(lambda: ticket.done, 5, "the refused write")
    assert len(sink.calls) == 1 and w.points_refused == 50


async def test_schema_rejections_and_skips_are_counted_not_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent: list[int] = []

    async def ok(batch: Batch) -> None:
        sent.append(batch.size)

    f = Frame.from_columns(
        "spc", {}, {"count": np.array([1, "x", None, 2.5], dtype=object)}, [1, 2, 3, 4]
    )
    async with SeriesWriter(FunctionSink(ok), flush_interval_s=0.01) as w:
        ticket = w.add([f])
        await until(lambda: ticket.done, 5, "the write")
    assert (w.points_written, w.points_rejected, w.points_skipped) == (1, 2, 1)
    assert "rejected 2 points whose values contradict the schema" in caplog.text


async def test_points_left_at_exit_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def down(batch: Batch) -> None:
        raise SinkRetry("ConnectError")

    async with SeriesWriter(FunctionSink(down), flush_interval_s=60) as w:
        ticket = w.add([telemetry(7)])
    assert not ticket.done
    assert "did not take the last 7 points" in caplog.text


async def test_full_buffer_reports_back_pressure_and_room_again() -> None:
    gate = asyncio.Event()

    async def slow(batch: Batch) -> None:
        await gate.wait()

    rooms: list[int] = []
    async with SeriesWriter(
        FunctionSink(slow), batch_size=10, max_pending=20, flush_interval_s=0.01
    ) as w:
        w.add_room_listener(lambda: rooms.append(w.pending))
        w.add([telemetry(10)])
        w.add([telemetry(10)])
        assert w.full
        gate.set()
        await until(lambda: w.pending == 0, 5, "the buffer to drain")
    assert rooms and rooms[0] < 20


async def test_frame_sinks_get_frames_split_by_rows() -> None:
    rows: list[int] = []

    async def take(batch: Batch) -> None:
        assert batch.frames and not batch.body
        rows.extend(int(t) for f in batch.frames for t in f.ts_ns)

    sink = FunctionSink(take, wants_lines=False)
    async with SeriesWriter(sink, batch_size=40, flush_interval_s=0.01) as w:
        ticket = w.add([telemetry(100)])
        await until(lambda: ticket.done, 5, "the frame writes")
    assert rows == list(range(100)) and max(s for _, s in sink.calls) <= 40


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_s("3") == 3.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after_s(None) is None and retry_after_s("-5") == 0.0
