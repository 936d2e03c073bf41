"""The series writer: buffering, batching, backoff and splitting in front of any sink.

Ingest hands frames to `SeriesWriter.add` and gets a `Ticket`, which completes once every
point of them is settled: stored by the sink, or refused by the server and counted. Ingest
acknowledges the MQTT message only then, so until InfluxDB has a point the broker keeps it.

A background task sends batches of at most ``batch_size`` points, oldest first: when that
many are waiting, when the oldest has waited ``flush_interval_s``, or at once after `kick`
(ingest kicks when unacknowledged messages pile up, so they never wait for a timer). Up to
``in_flight`` requests run at once. A batch's points count as pending until the sink has
answered:

* `server.sink.SinkRetry` (outage, 429, 5xx): the batch stays; the next try waits what the
  server's ``Retry-After`` says, else an exponential backoff (``retry_min_s`` doubling to
  ``retry_max_s``). Each failure is counted and logged.
* `server.sink.SinkTooLarge` (413): the batch is halved until the server takes it, and the
  batch limit stays halved; a single point too large is refused and counted.
* `server.sink.SinkRefused` (400): halves are sent until every refused line is alone; each is
  logged with the server's reason and counted, the rest is stored. Rewriting a point
  InfluxDB already took is harmless: the same series and time replace it.

Nothing is dropped silently: the encoder's skipped and rejected rows, refused lines and what
is still pending at exit are all counted and logged. `full` says the buffer holds
``max_pending`` points (ingest then asks for a write at once; its own window of
unacknowledged messages is what bounds memory), and `add_room_listener` callbacks say when
written points have made room again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from server.coerce import coerce
from server.frame import Frame
from server.lineprotocol import encode
from server.sink import Batch, Sink, SinkRefused, SinkRetry, SinkTooLarge

__all__ = ["SeriesWriter", "Ticket"]

log = logging.getLogger("cellwatch.server.writer")

_EXIT_DEADLINE_S = 1.0
_DROPPED = re.compile(r"dropped=(\d+)")


class Ticket:
    """Completes when every point handed over in one `SeriesWriter.add` call is settled."""

    __slots__ = ("_callbacks", "_done", "_parts")

    def __init__(self) -> None:
        self._parts = 0
        self._done = False
        self._callbacks: list[Callable[[], None]] = []

    @property
    def done(self) -> bool:
        return self._done

    def add_done_callback(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` when settled (at once when it already is)."""
        if self._done:
            fn()
        else:
            self._callbacks.append(fn)

    def _settle_part(self) -> None:
        self._parts -= 1
        if self._parts <= 0 and not self._done:
            self._done = True
            callbacks, self._callbacks = self._callbacks, []
            for fn in callbacks:
                try:
                    fn()
                except Exception:  # a fault of the listener must not stop the writer
                    log.exception("a ticket callback failed")


@dataclass(slots=True)
class _Item:
    batch: Batch
    ticket: Ticket
    since: float
    order: int  # position in arrival order, to put a failed batch back where it was


def _all_refused(reason: str, n: int) -> bool:
    """True when a 400 says every line of the request was refused (no split needed).

    InfluxDB 1.x counts refused points of a partial write in ``dropped=N``.
    """
    m = _DROPPED.search(reason)
    return m is not None and int(m.group(1)) >= n


class SeriesWriter:
    """Buffers frames for one sink and writes them in batches; use as ``async with``.

    Counters: ``points_written`` (stored), ``points_refused`` (refused by the server),
    ``points_rejected`` (values contrary to the schema), ``points_skipped`` (nothing
    writable), ``write_errors`` (failed requests), ``pending`` (points waiting).
    """

    def __init__(
        self,
        sink: Sink,
        *,
        batch_size: int = 5000,
        flush_interval_s: float = 1.0,
        max_pending: int = 200_000,
        retry_min_s: float = 0.5,
        retry_max_s: float = 30.0,
        retry_after_max_s: float = 300.0,
        in_flight: int = 2,
    ) -> None:
        self.sink = sink
        self.in_flight = in_flight
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.retry_after_max_s = retry_after_max_s
        self.limit = batch_size  # halved by every 413
        self.points_written = 0
        self.points_refused = 0
        self.points_rejected = 0
        self.points_skipped = 0
        self.write_errors = 0
        self.last_error = ""
        self._items: deque[_Item] = deque()
        self._pending = 0
        self._kicked = False
        self._wake = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._room: list[Callable[[], None]] = []
        self._failures = 0
        self._order = 0

    # -- state -------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Points waiting to be written."""
        return self._pending

    @property
    def full(self) -> bool:
        """True when ``max_pending`` points wait: callers should hold new input back."""
        return self._pending >= self.max_pending

    def counters(self) -> dict[str, Any]:
        return {
            "sink": self.sink.name,
            "points_written": self.points_written,
            "points_refused": self.points_refused,
            "points_rejected": self.points_rejected,
            "points_skipped": self.points_skipped,
            "write_errors": self.write_errors,
            "pending": self._pending,
            "batch_limit": self.limit,
            "last_error": self.last_error,
        }

    def add_room_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` whenever written points free room after the buffer was full."""
        self._room.append(fn)

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> SeriesWriter:
        await self.sink.__aenter__()
        self._task = asyncio.create_task(self._run(), name="cellwatch-series-writer")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            if self._items:
                async with asyncio.timeout(_EXIT_DEADLINE_S):
                    await self.flush()
        except (TimeoutError, SinkRetry) as err:
            log.error(
                "%s did not take the last %d points before exit (%s); their MQTT "
                "messages stay unacknowledged, so the broker delivers them again",
                self.sink.name,
                self._pending,
                str(err) or "timed out",
            )
        finally:
            await self.sink.__aexit__(et, e, tb)

    # -- input -------------------------------------------------------------------------------

    def add(self, frames: Iterable[Frame]) -> Ticket:
        """Queue frames for writing (never blocks); the ticket completes once they settle."""
        ticket = Ticket()
        now = time.monotonic()
        was_empty = not self._items
        if self.sink.wants_lines:
            enc = encode(frames)
            self._count_unwritable(enc.skipped, enc.rejected, enc.reasons)
            body: list[bytes] = []
            lines = 0
            for b in enc.blocks:
                if lines and lines + b.lines > self.limit:
                    self._queue(Batch(b"".join(body), lines), ticket, now)
                    body, lines = [], 0
                body.append(b.body)
                lines += b.lines
            if lines:
                self._queue(Batch(b"".join(body), lines), ticket, now)
        else:
            for f in frames:
                f = self._typed_rows(f)
                for start in range(0, len(f), self.limit):
                    self._queue(
                        Batch(frames=(f.take(slice(start, start + self.limit)),)), ticket, now
                    )
        if ticket._parts == 0:
            ticket._parts = 1
            ticket._settle_part()
        if self._pending >= self.limit or (was_empty and self._items):
            self._wake.set()  # a full batch, or the first point: its flush timer starts now
        return ticket

    def kick(self) -> None:
        """Write what is waiting now rather than after ``flush_interval_s``."""
        self._kicked = True
        self._wake.set()

    def _typed_rows(self, f: Frame) -> Frame:
        """The rows of a frame a frame sink can store; the others counted like the encoder's."""
        typed = coerce(f)
        any_field = np.zeros(len(f), dtype=bool)
        for c in typed.columns:
            any_field |= c.present
        keep = any_field & ~typed.rejected
        rejected = int(typed.rejected.sum())
        self._count_unwritable(len(f) - rejected - int(keep.sum()), rejected, typed.reasons)
        return f if keep.all() else f.take(keep)

    def _count_unwritable(self, skipped: int, rejected: int, reasons: tuple[str, ...]) -> None:
        if skipped:
            self.points_skipped += skipped
            log.debug("skipped %d points with nothing writable", skipped)
        if rejected:
            self.points_rejected += rejected
            log.warning(
                "rejected %d points whose values contradict the schema: %s",
                rejected,
                "; ".join(reasons),
            )

    def _queue(self, batch: Batch, ticket: Ticket, now: float) -> None:
        ticket._parts += 1
        self._order += 1
        self._items.append(_Item(batch, ticket, now, self._order))
        self._pending += batch.size

    # -- output ------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write everything waiting now; raises `SinkRetry` (points kept) on failure.

        Up to ``in_flight`` requests run at once, so the server never idles between a
        response and the next request while this side encodes and settles. A batch that
        fails goes back where it was; the error is raised once the others have answered.
        """
        async with self._send_lock:
            running: set[asyncio.Task[None]] = set()
            failure: BaseException | None = None
            try:
                while True:
                    while self._items and len(running) < self.in_flight and failure is None:
                        running.add(asyncio.create_task(self._deliver(self._take())))
                    if not running:
                        break
                    done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        exc = task.exception()
                        if exc is not None and (failure is None or isinstance(failure, SinkRetry)):
                            failure = exc
            except asyncio.CancelledError:
                # Stopping (or an exit deadline): the requests in flight are abandoned and
                # their items go back to the queue, counted as pending.
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
                raise
            if failure is not None:
                raise failure

    async def _run(self) -> None:
        while True:
            await self._wait_for_work()
            try:
                await self.flush()
                self._failures = 0
            except SinkRetry as e:
                self._failures += 1
                delay = self._delay(e.retry_after)
                log.warning(
                    "%s: write failed (%s); %d points kept, retry in %.1f s",
                    self.sink.name,
                    e,
                    self._pending,
                    delay,
                )
                await asyncio.sleep(delay)
            except Exception:
                # A fault of ours, not of the server: log it with its traceback and keep the
                # writer alive (the points stay; the next round tries again).
                self._failures += 1
                self.write_errors += 1
                log.exception("%s: unexpected failure while writing", self.sink.name)
                await asyncio.sleep(self._delay(None))

    def _delay(self, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_max_s)
        # The exponent is capped where a float still holds 2.0 ** n: past it (after ~1000
        # failures in a row) the backoff raised OverflowError and stopped the writer.
        base = min(self.retry_max_s, self.retry_min_s * 2.0 ** min(self._failures - 1, 1023))
        return base * random.uniform(0.8, 1.2)

    async def _wait_for_work(self) -> None:
        while True:
            if self._items and (
                self._kicked
                or self._pending >= self.limit
                or time.monotonic() - self._items[0].since >= self.flush_interval_s
            ):
                self._kicked = False
                return
            timeout = None
            if self._items:
                timeout = self.flush_interval_s - (time.monotonic() - self._items[0].since)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, timeout) if timeout is not None else None):
                    await self._wake.wait()

    def _take(self) -> list[_Item]:
        """Take the oldest items, up to the batch limit, out of the queue."""
        if self._items[0].batch.size > self.limit:
            self._split_head()
        taken: list[_Item] = []
        size = 0
        while self._items:
            item = self._items[0]
            if taken and size + item.batch.size > self.limit:
                break
            taken.append(self._items.popleft())
            size += item.batch.size
        return taken

    def _put_back(self, taken: list[_Item]) -> None:
        """Return items of a failed batch to the queue, in arrival order with the rest."""
        merged = sorted([*taken, *self._items], key=lambda i: i.order)
        self._items.clear()
        self._items.extend(merged)

    async def _deliver(self, taken: list[_Item]) -> None:
        """Send taken items as one batch and settle them once answered."""
        size = sum(i.batch.size for i in taken)
        if len(taken) == 1:
            batch = taken[0].batch
        elif self.sink.wants_lines:
            batch = Batch(b"".join(i.batch.body for i in taken), size)
        else:
            batch = Batch(frames=tuple(f for i in taken for f in i.batch.frames))
        try:
            written, refused = await self._send(batch, top=True)
        except BaseException:
            self._put_back(taken)
            raise
        was_full = self.full
        self._pending -= size
        self.points_written += written
        self.points_refused += refused
        for item in taken:
            item.ticket._settle_part()
        if was_full and not self.full:
            for fn in self._room:
                fn()

    def _split_head(self) -> None:
        """Cut the oldest item into pieces of at most ``limit`` points (after a 413)."""
        head = self._items.popleft()
        b = head.batch
        if b.frames:
            pieces = [
                Batch(frames=(f.take(slice(i, i + self.limit)),))
                for f in b.frames
                for i in range(0, len(f), self.limit)
            ]
        else:
            lines = b.body.split(b"\n")[: b.lines]
            pieces = [
                Batch(
                    b"".join(x + b"\n" for x in lines[i : i + self.limit]),
                    len(lines[i : i + self.limit]),
                )
                for i in range(0, len(lines), self.limit)
            ]
        head.ticket._parts += len(pieces) - 1
        for piece in reversed(pieces):
            self._items.appendleft(_Item(piece, head.ticket, head.since, head.order))

    async def _send(self, batch: Batch, *, top: bool = False) -> tuple[int, int]:
        """Write a batch, isolating what the server refuses; returns (written, refused)."""
        try:
            await self.sink.write(batch)
            return batch.size, 0
        except SinkRetry as e:
            self.write_errors += 1
            self.last_error = str(e)
            raise
        except SinkTooLarge as e:
            self.write_errors += 1
            if batch.size <= 1:
                log.error(
                    "%s refused a point as too large (%s): %.300r",
                    self.sink.name,
                    e,
                    batch.body or batch.frames,
                )
                return 0, batch.size
            new = max(1, batch.size // 2)
            if new < self.limit:
                self.limit = new
                log.warning(
                    "%s: request too large (%s); batches now hold at most %d points",
                    self.sink.name,
                    e,
                    new,
                )
        except SinkRefused as e:
            self.write_errors += 1
            self.last_error = str(e)
            if batch.size <= 1 or _all_refused(str(e), batch.size):
                log.error(
                    "%s refused %d line(s): %s; first: %.300r",
                    self.sink.name,
                    batch.size,
                    e,
                    batch.body.split(b"\n", 1)[0] if batch.body else batch.frames,
                )
                return 0, batch.size
            if top:
                log.warning(
                    "%s refused part of a batch of %d (%s); isolating the lines",
                    self.sink.name,
                    batch.size,
                    e,
                )
        first, second = batch.halves()
        w1, r1 = await self._send(first)
        w2, r2 = await self._send(second)
        return w1 + w2, r1 + r2
