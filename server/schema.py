"""The InfluxDB schema: which points an envelope becomes.

Kept apart from the encoder so the schema (measurements, which names are tags and which are
fields) reads in one place and matches ARCHITECTURE.md. Tags are the small closed sets that
identify a series (site, line, station, equipment, param, rule, quality, edge); everything
else is a field, so cardinality stays bounded by the plant layout, not by traffic. Counts are
integer fields and measurements are float fields, always, because InfluxDB fixes a field's type
at its first write and rejects later writes of another type.
"""

from __future__ import annotations

from models.messages import (
    Detection,
    EdgeStatus,
    Envelope,
    Kind,
    Reading,
    SeriesKey,
    Stats,
)
from server.lineprotocol import Point

__all__ = ["points", "ts_ns"]


def ts_ns(ts: float) -> int:
    """Seconds since the epoch as integer nanoseconds (the writer's precision).

    Examples:
        >>> ts_ns(1.5)
        1500000000
    """
    return round(ts * 1_000_000_000)


def _tags(site: str, key: SeriesKey) -> tuple[tuple[str, str], ...]:
    return (
        ("site", site), ("line", key.line), ("station", key.station),
        ("equipment", key.equipment), ("param", key.param),
    )


def _telemetry(site: str, r: Reading) -> Point:
    tags = (*_tags(site, r.key), ("quality", r.quality.value))
    return Point("telemetry", tags, (("value", float(r.value)),), ts_ns(r.ts))


def _spc(site: str, s: Stats) -> Point:
    fields = (
        ("count", s.count), ("mean", s.mean), ("min", s.minimum), ("max", s.maximum),
        ("bad", s.bad), ("statistic", s.statistic), ("lcl", s.lcl), ("ucl", s.ucl),
    )
    return Point("spc", _tags(site, s.key), fields, ts_ns(s.ts_end))


def _detection(site: str, d: Detection) -> Point:
    tags = (*_tags(site, d.key), ("rule", d.rule))
    fields = (
        ("value", d.value), ("limit", d.limit), ("direction", d.direction),
        ("center", d.center), ("sigma", d.sigma), ("message", d.message),
    )
    return Point("detection", tags, fields, ts_ns(d.ts))


def _status(site: str, edge_id: str, e: EdgeStatus) -> Point:
    fields = (
        ("published", e.published), ("pending", e.pending), ("dropped", e.dropped),
        ("detections", e.detections), ("uptime_s", float(e.uptime_s)),
    )
    return Point("edge_status", (("site", site), ("edge", edge_id)), fields, ts_ns(e.ts))


def points(env: Envelope, site: str) -> list[Point]:
    """The points of one envelope; ``site`` comes from the server's configuration.

    Examples:
        >>> k = SeriesKey("line1", "coater", "lane03_A", "areal_weight")
        >>> env = Envelope("gw1", 1, Kind.TELEMETRY, 2.0, (Reading(k, 2.0, 20.5),))
        >>> points(env, "plant1")[0].measurement
        'telemetry'
    """
    items = env.items
    if env.kind is Kind.TELEMETRY:
        return [_telemetry(site, r) for r in items if isinstance(r, Reading)]
    if env.kind is Kind.STATS:
        return [_spc(site, s) for s in items if isinstance(s, Stats)]
    if env.kind is Kind.DETECTION:
        return [_detection(site, d) for d in items if isinstance(d, Detection)]
    return [_status(site, env.edge_id, e) for e in items if isinstance(e, EdgeStatus)]
