"""The gateway's health report: one `EdgeStatus` from the sources' and the outbox's counters.

A gateway that looks connected but ingests nothing is the failure users of other collectors
meet most, so the report carries what shows it: per source the connection state, the reading
rate since the previous report, the age of the newest reading (lag), reconnects, stale nodes,
backfilled and bad-quality readings and the device clock's skew; for the outbox its depth in
envelopes and bytes, what it dropped and how old its oldest waiting envelope is. The sources'
counters are cumulative; rates need the previous report, which `Health` keeps. Pure logic:
both clocks are passed in (wall time for ages, a monotonic clock for rates), so tests can use
fake ones; the loop that sends the reports lives in `edge.agent`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from models.messages import EdgeStatus, SourceStatus

__all__ = ["Health", "OutboxCounters", "SourceCounters"]


class SourceCounters(Protocol):
    """What a report reads from a source (`edge.source.QueuedSource` has all of it)."""

    id: str
    readings: int
    last_reading_ts: float | None
    clock_skew_s: float | None

    def status(self) -> SourceStatus: ...


@dataclass(frozen=True, slots=True)
class OutboxCounters:
    """The outbox's counters at one moment: envelopes acknowledged by the broker, waiting,
    dropped by the size bound, bytes waiting, and the age of the oldest waiting (None: empty
    or not known)."""

    published: int = 0
    pending: int = 0
    dropped: int = 0
    bytes: int = 0
    oldest_age_s: float | None = None

    @classmethod
    def of(cls, publisher: object) -> OutboxCounters:
        """Read them from a publisher by name: ``published``, ``pending``, ``dropped``,
        ``outbox_bytes`` and ``lag_s`` (the oldest waiting envelope's age); one it does not
        have reads as 0 (None for the age), so any publisher can report.

        Examples:
            >>> class P:
            ...     published, pending, dropped = 7, 2, 1
            >>> OutboxCounters.of(P())
            OutboxCounters(published=7, pending=2, dropped=1, bytes=0, oldest_age_s=None)
        """
        age = getattr(publisher, "lag_s", None)
        return cls(
            int(getattr(publisher, "published", 0)),
            int(getattr(publisher, "pending", 0)),
            int(getattr(publisher, "dropped", 0)),
            int(getattr(publisher, "outbox_bytes", 0)),
            None if age is None else float(age),
        )


class Health:
    """Builds the status reports of one agent; ``started`` is its start on the monotonic clock.

    The rate of a source is its readings since the previous `report` over the monotonic time
    between the two (for the first report: since ``started``). Its lag is ``now`` minus the
    newest reading time the source has had, corrected by the device's clock skew when known
    (a device clock running 2 s ahead stamps readings 2 s late, not 2 s early); a backfilled
    older reading does not make it look behind.

    Examples:
        >>> from models.messages import SourceStatus
        >>> class Src:
        ...     id, readings, last_reading_ts, clock_skew_s = "plc", 0, None, None
        ...     def status(self):
        ...         return SourceStatus(self.id, "connected", self.readings)
        >>> src, health = Src(), Health(started=100.0)
        >>> src.readings, src.last_reading_ts = 50, 1_000.0
        >>> s = health.report([src], OutboxCounters(), 0, now=1_000.5, mono=110.0)
        >>> s.uptime_s, s.sources[0].rate_per_s, s.sources[0].lag_s
        (10.0, 5.0, 0.5)
    """

    def __init__(self, started: float) -> None:
        self.started = started
        self._mono = started
        self._readings: dict[str, int] = {}
        self._newest: dict[str, float] = {}

    def report(
        self,
        sources: Sequence[SourceCounters],
        outbox: OutboxCounters,
        detections: int,
        *,
        now: float,
        mono: float,
    ) -> EdgeStatus:
        """The report at wall time ``now`` and monotonic time ``mono``; the next report's rates
        count from here."""
        elapsed = mono - self._mono
        out: list[SourceStatus] = []
        for src in sources:
            before = self._readings.get(src.id, 0)
            rate = (src.readings - before) / elapsed if elapsed > 0 else 0.0
            self._readings[src.id] = src.readings
            out.append(
                dataclasses.replace(
                    src.status(), rate_per_s=max(0.0, rate), lag_s=self._lag(src, now)
                )
            )
        self._mono = mono
        return EdgeStatus(
            now,
            mono - self.started,
            tuple(out),
            outbox.published,
            outbox.pending,
            outbox.dropped,
            detections,
            outbox.bytes,
            outbox.oldest_age_s,
        )

    def _lag(self, src: SourceCounters, now: float) -> float | None:
        ts = src.last_reading_ts
        newest = self._newest.get(src.id)
        if ts is not None and (newest is None or ts > newest):
            self._newest[src.id] = newest = ts
        if newest is None:
            return None
        return now - (newest - (src.clock_skew_s or 0.0))
