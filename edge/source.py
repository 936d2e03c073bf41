"""What every data source of the gateway looks like, and the queue-backed base they share.

A `Source` is an async context manager you iterate for `Reading`s: ``async with src`` starts
its connection (and keeps reconnecting until the block ends), ``async for r in src`` yields
readings until it is closed. Connection handling runs in the background and feeds a bounded
queue, so a slow consumer never stalls a network callback and a lost connection never ends the
iteration. `QueuedSource` holds that queue and the counters a status report needs; rejections
are counted and logged (throttled, so a device sending garbage at 100 Hz cannot flood the log).

The queue holds `Batch`es, samples in columns: a source that receives many values at once (a
batched payload) emits them with `_emit_batch`, and the agent takes them with `next_batch`, so
no value becomes a Python object of its own on the way. Sources that produce one reading at a
time call `_emit`; what they emit within one turn of the event loop is packed into one batch.
Iterating a source still yields single readings, for consumers that want them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Protocol, Self, runtime_checkable

import numpy as np

from models.batch import GOOD, Batch
from models.messages import Quality, Reading, SourceStatus

__all__ = ["QueuedSource", "Source"]

#: Values held for the consumer before new ones are rejected (counted) instead of queued.
DEFAULT_QUEUE_SIZE = 100_000


@runtime_checkable
class Source(Protocol):
    """An equipment data source: lifecycle by ``async with``, data by ``async for``."""

    id: str

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def __aiter__(self) -> AsyncIterator[Reading]: ...

    def status(self) -> SourceStatus: ...


class QueuedSource:
    """Base of the sources: a bounded queue of batches, counters and throttled rejection logs.

    Subclasses call `_emit` for a reading or `_emit_batch` for many, `_reject` for every input
    they refuse, set ``state`` to ``connecting``/``connected``/``disconnected`` and call
    `_close_stream` when they are closed. All of these must run on the event loop thread. The
    queue is bounded by values (``queue_size``): a batch that does not fit is rejected whole,
    counted per value.
    """

    def __init__(
        self, source_id: str, logger: logging.Logger, queue_size: int = DEFAULT_QUEUE_SIZE
    ) -> None:
        self.id = source_id
        self.log = logger
        self.state = "disconnected"
        self.readings = 0
        self.rejected = 0
        self.bad_quality = 0
        self.last_error = ""
        self.reconnects = 0
        self.stale = 0
        self.backfilled = 0
        self.clock_skew_s: float | None = None
        self.last_reading_ts: float | None = None
        self.queue_size = queue_size
        self._batches: deque[Batch] = deque()
        self._queued = 0  # values in _batches and _pending
        self._pending: list[Reading] = []
        self._pack_scheduled = False
        self._ready = asyncio.Event()
        self._flat: list[Reading] = []
        self._closed = False
        self._last_log = -1e9
        self._suppressed = 0

    # -- producer side --------------------------------------------------------------------

    def _emit(self, reading: Reading) -> None:
        if self._queued >= self.queue_size:
            # An overloaded gateway rejects many readings a second: the message is built only
            # when it is logged (once a second), so rejecting stays cheap.
            self._reject(lambda: f"reading queue full ({self.queue_size}); dropped {reading.key}")
            return
        self._queued += 1
        self._pending.append(reading)
        self.readings += 1
        self.last_reading_ts = reading.ts
        if reading.quality is not Quality.GOOD:
            self.bad_quality += 1
        if not self._pack_scheduled:
            self._pack_scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self._pack)
            except RuntimeError:  # no loop running (a unit test feeding a source directly)
                self._pack()

    def _pack(self) -> None:
        """Move the readings emitted one by one into the queue as one batch."""
        self._pack_scheduled = False
        if self._pending:
            pending, self._pending = self._pending, []
            self._batches.append(Batch.of(pending))
            self._ready.set()

    def _emit_batch(self, batch: Batch) -> None:
        n = len(batch)
        if not n:
            return
        if self._queued + n > self.queue_size:
            self.rejected += n - 1  # _reject counts the last one
            self._reject(
                lambda: (
                    f"reading queue full ({self.queue_size}); dropped {n} values of "
                    f"{batch.keys[0]}"
                    + (f" and {len(batch.keys) - 1} more series" if len(batch.keys) > 1 else "")
                )
            )
            return
        if self._pending:
            self._pack()  # keep the order of what was emitted
        self._queued += n
        self._batches.append(batch)
        self._ready.set()
        self.readings += n
        self.last_reading_ts = float(batch.ts[-1])
        if batch.quality is not None:
            self.bad_quality += int(np.count_nonzero(batch.quality != GOOD))

    def _reject(self, reason: str | Callable[[], str]) -> None:
        self.rejected += 1
        now = time.monotonic()
        if now - self._last_log >= 1.0:
            more = f" ({self._suppressed} more rejections not logged)" if self._suppressed else ""
            text = reason if isinstance(reason, str) else reason()
            self.log.warning("source %s rejected input: %s%s", self.id, text, more)
            self._last_log = now
            self._suppressed = 0
        else:
            self._suppressed += 1

    def _close_stream(self) -> None:
        self._closed = True
        self.state = "disconnected"
        self._ready.set()

    # -- consumer side --------------------------------------------------------------------

    async def next_batch(self) -> Batch | None:
        """The next batch, waiting for one; None once the source is closed and drained."""
        while True:
            if self._pending:
                self._pack()
            if self._batches:
                b = self._batches.popleft()
                self._queued -= len(b)
                return b
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()

    def __aiter__(self) -> AsyncIterator[Reading]:
        return self

    async def __anext__(self) -> Reading:
        while not self._flat:
            b = await self.next_batch()
            if b is None:
                raise StopAsyncIteration
            self._flat = list(b.readings())[::-1]
        return self._flat.pop()

    def drain_batches(self) -> list[Batch]:
        """Take every batch queued right now without waiting (for a final flush)."""
        self._pack()
        out = list(self._batches)
        self._batches.clear()
        self._queued = 0
        if self._flat:
            out.insert(0, Batch.of(self._flat[::-1]))
            self._flat = []
        return out

    def drain(self) -> list[Reading]:
        """Take every reading queued right now without waiting (for a final flush)."""
        return [r for b in self.drain_batches() for r in b.readings()]

    def status(self) -> SourceStatus:
        """Counters and connection state, for the gateway's status report (the agent adds the
        rate and lag, which need the previous report and the clock)."""
        return SourceStatus(
            self.id,
            self.state,
            self.readings,
            self.rejected,
            self.bad_quality,
            self.last_error,
            reconnects=self.reconnects,
            stale=self.stale,
            backfilled=self.backfilled,
            clock_skew_s=self.clock_skew_s,
        )
