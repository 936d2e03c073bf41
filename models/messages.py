"""The messages that cross process boundaries: readings, statistics, detections, status.

Every value that leaves a gateway or reaches the server is one of these frozen, slotted
dataclasses. They carry plain Python values only (no numpy scalars), so that `models.wire` can
turn them into JSON and back without loss, and so that edge and server agree on one shape
without importing each other.

A series is identified by ``(line, station, equipment, param)``: ``param`` is what is measured
(``areal_weight``), ``equipment`` is which instance measures it (``lane03_A``, ``cab01-ch02``).
Both are small closed sets per plant, which keeps InfluxDB cardinality low.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # models.batch imports this module
    from models.batch import Batch, StatsBatch

__all__ = [
    "SCHEMA_VERSION",
    "Detection",
    "EdgeStatus",
    "Envelope",
    "Kind",
    "Payload",
    "Quality",
    "Reading",
    "SeriesKey",
    "SourceStatus",
    "Stats",
]

#: Version of the envelope layout; bumped on any incompatible change of the wire format.
SCHEMA_VERSION = 1


class Quality(StrEnum):
    """OPC UA style quality of a sample: only ``good`` samples feed the statistics."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class Kind(StrEnum):
    """What an envelope carries; also the last level of its MQTT topic."""

    TELEMETRY = "telemetry"
    STATS = "stats"
    DETECTION = "detection"
    STATUS = "status"


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """Where a value comes from: line, station, equipment instance and measured parameter."""

    line: str
    station: str
    equipment: str
    param: str

    def __str__(self) -> str:
        return f"{self.line}/{self.station}/{self.equipment}/{self.param}"


@dataclass(frozen=True, slots=True)
class Reading:
    """One sample of one series.

    ``ts`` is the source timestamp (seconds since the Unix epoch) as the equipment stamped it;
    ``received_ts`` is when the gateway got it, so clock skew stays visible. ``server_ts`` is
    the OPC UA server's timestamp when the server gave one. ``backfilled`` marks a sample
    recovered from the device's history after a gap rather than received live.

    Examples:
        >>> r = Reading(SeriesKey("line1", "coater", "lane03_A", "areal_weight"), 1.7e9, 20.1)
        >>> r.quality
        <Quality.GOOD: 'good'>
    """

    key: SeriesKey
    ts: float
    value: float
    quality: Quality = Quality.GOOD
    received_ts: float | None = None
    server_ts: float | None = None
    backfilled: bool = False

    @property
    def usable(self) -> bool:
        """True when the sample may enter statistics: good quality and a finite value."""
        return self.quality is Quality.GOOD and math.isfinite(self.value)


@dataclass(frozen=True, slots=True)
class Stats:
    """Summary of one series over one framing window, as computed on the gateway.

    ``statistic`` and the limits are those of the series' detector (for EWMA the smoothed value
    and its control limits); they are ``None`` while the detector is still in Phase I.
    """

    key: SeriesKey
    ts_start: float
    ts_end: float
    count: int
    mean: float
    minimum: float
    maximum: float
    bad: int = 0
    statistic: float | None = None
    lcl: float | None = None
    ucl: float | None = None


@dataclass(frozen=True, slots=True)
class Detection:
    """A detector decided that a series is out of control.

    ``rule`` names the detector and rule (``ewma``), ``ts`` is the time of the sample that
    signalled, ``value`` the plotted statistic and ``limit`` the limit it crossed.
    ``direction`` is ``+1`` above the upper limit, ``-1`` below the lower.
    """

    key: SeriesKey
    ts: float
    rule: str
    value: float
    limit: float
    direction: int
    center: float
    sigma: float
    message: str = ""


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """Health of one data source on a gateway.

    ``reconnects`` counts connections re-established after a loss, ``stale`` the nodes or
    topics that have gone quiet past their watchdog, ``backfilled`` readings recovered from
    the device's history after a gap, ``rate_per_s`` readings per second since the last
    report, ``lag_s`` the age of the newest reading, and ``clock_skew_s`` how far the device's
    clock runs ahead of the gateway's (None when unknown).
    """

    source: str
    state: str
    readings: int = 0
    rejected: int = 0
    bad_quality: int = 0
    last_error: str = ""
    reconnects: int = 0
    stale: int = 0
    backfilled: int = 0
    rate_per_s: float = 0.0
    lag_s: float | None = None
    clock_skew_s: float | None = None


@dataclass(frozen=True, slots=True)
class EdgeStatus:
    """Periodic health report of an edge agent.

    ``pending`` envelopes wait in the outbox (``outbox_bytes`` of them), ``dropped`` were
    discarded by its size bound, and ``lag_s`` is the age of the oldest one waiting.
    """

    ts: float
    uptime_s: float
    sources: tuple[SourceStatus, ...] = ()
    published: int = 0
    pending: int = 0
    dropped: int = 0
    detections: int = 0
    outbox_bytes: int = 0
    lag_s: float | None = None


Payload = Reading | Stats | Detection | EdgeStatus


@dataclass(frozen=True, slots=True)
class Envelope:
    """What goes on the wire: a batch of messages of one kind from one edge, in sequence.

    ``seq`` increases by one per envelope per edge; with ``edge_id`` it is the key the server
    deduplicates on (QoS 1 means a message can arrive twice).
    """

    edge_id: str
    seq: int
    kind: Kind
    sent_ts: float
    items: tuple[Payload | Batch | StatsBatch, ...] = field(default_factory=tuple)
    schema: int = SCHEMA_VERSION
