"""Where series go: the one-method `Sink` seam and the answers a sink can give.

A sink takes one batch and either stores all of it or raises one of the errors below; it
keeps no buffer and makes no retries of its own, so InfluxDB 1.x, InfluxDB 2.x and the
embedded SQLite file stay small and the policy (buffering, batching, backoff, splitting,
counting) is written once, in `server.writer`. The errors say what the writer should do:
``SinkRetry`` keep the batch and try again later (after ``retry_after`` when the server named
a time), ``SinkTooLarge`` split it, ``SinkRefused`` find and count the lines it will never
accept. A sink states whether it wants line protocol (``wants_lines``) or frames.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Protocol

from server.frame import Frame

__all__ = [
    "Batch",
    "Sink",
    "SinkError",
    "SinkRefused",
    "SinkRetry",
    "SinkTooLarge",
    "retry_after_s",
]


@dataclass(frozen=True, slots=True)
class Batch:
    """What one write carries: line protocol (``body`` with ``lines`` lines) or ``frames``."""

    body: bytes = b""
    lines: int = 0
    frames: tuple[Frame, ...] = ()

    @property
    def size(self) -> int:
        """Lines, or rows when the batch carries frames."""
        return self.lines if not self.frames else sum(len(f) for f in self.frames)

    def halves(self) -> tuple[Batch, Batch]:
        """Two batches with the first and second half of the lines (or rows)."""
        if self.frames:
            mid, acc = self.size // 2, 0
            first: list[Frame] = []
            second: list[Frame] = []
            for f in self.frames:
                if acc + len(f) <= mid:
                    first.append(f)
                elif acc >= mid:
                    second.append(f)
                else:
                    first.append(f.take(slice(0, mid - acc)))
                    second.append(f.take(slice(mid - acc, None)))
                acc += len(f)
            return Batch(frames=tuple(first)), Batch(frames=tuple(second))
        lines = self.body.split(b"\n")[: self.lines]
        mid = self.lines // 2
        head, tail = lines[:mid], lines[mid:]
        return (
            Batch(b"".join(x + b"\n" for x in head), len(head)),
            Batch(b"".join(x + b"\n" for x in tail), len(tail)),
        )


class SinkError(Exception):
    """A batch was not stored; the subclass says what to do about it."""


class SinkRetry(SinkError):
    """Not stored for a reason that may pass (outage, overload, 429, 5xx, a timeout)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class SinkTooLarge(SinkError):
    """The request was too large for the server (HTTP 413): send smaller batches."""


class SinkRefused(SinkError):
    """The server will never accept some lines of the batch (HTTP 400), with its reason.

    InfluxDB stores the valid lines of a request and names one kind of error, so which
    lines were refused is found by sending smaller batches.
    """


class Sink(Protocol):
    """Stores batches of series; ``async with`` opens and closes it."""

    #: A short name for logs and counters, e.g. ``influxdb1 http://host:8086 db=cellwatch``.
    name: str
    #: True for line protocol (``Batch.body``), False for frames (``Batch.frames``).
    wants_lines: bool

    async def __aenter__(self) -> Sink: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def write(self, batch: Batch) -> None:
        """Store the whole batch, or raise a `SinkError` subclass (nothing else)."""
        ...


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date).

    Examples:
        >>> retry_after_s("7")
        7.0
        >>> retry_after_s("Thu, 01 Jan 1970 00:00:10 GMT", now=4.0)
        6.0
        >>> retry_after_s("soon") is None
        True
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
