"""What every data source of the gateway looks like, and the queue-backed base they share.

A `Source` is an async context manager you iterate for `Reading`s: ``async with src`` starts
its connection (and keeps reconnecting until the block ends), ``async for r in src`` yields
readings until it is closed. Connection handling runs in the background and feeds a bounded
queue, so a slow consumer never stalls a network callback and a lost connection never ends the
iteration. `QueuedSource` holds that queue and the counters a status report needs; rejections
are counted and logged (throttled, so a device sending garbage at 100 Hz cannot flood the log).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol, Self, runtime_checkable

from models.messages import Quality, Reading, SourceStatus

__all__ = ["QueuedSource", "Source"]

#: Readings held for the consumer before new ones are rejected (counted) instead of queued.
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
    """Base of the sources: a bounded reading queue, counters and throttled rejection logs.

    Subclasses call `_emit` for every reading and `_reject` for every input they refuse, set
    ``state`` to ``connecting``/``connected``/``disconnected`` and call `_close_stream` when
    they are closed. All of these must run on the event loop thread.
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
        self._queue: asyncio.Queue[Reading | None] = asyncio.Queue(maxsize=queue_size)
        self._closed = False
        self._last_log = -1e9
        self._suppressed = 0

    # -- producer side --------------------------------------------------------------------

    def _emit(self, reading: Reading) -> None:
        try:
            self._queue.put_nowait(reading)
        except asyncio.QueueFull:
            # An overloaded gateway rejects many readings a second: the message is built only
            # when it is logged (once a second), so rejecting stays cheap.
            self._reject(
                lambda: f"reading queue full ({self._queue.maxsize}); dropped {reading.key}"
            )
            return
        self.readings += 1
        self.last_reading_ts = reading.ts
        if reading.quality is not Quality.GOOD:
            self.bad_quality += 1

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
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:
            pass  # the consumer is not waiting: it sees _closed once the queue drains

    # -- consumer side --------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Reading]:
        return self

    async def __anext__(self) -> Reading:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        return item

    def drain(self) -> list[Reading]:
        """Take every reading queued right now without waiting (for a final flush)."""
        out: list[Reading] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                out.append(item)
        return out

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
