"""The InfluxDB schema: measurements, their tags, and the type of every field, pinned.

InfluxDB fixes a field's type at its first write to a shard and refuses every later write of
another type with "field type conflict", which drops the whole request in some clients
(ANCHORS.md, pain point 10). So each field's type is declared here, once, and the encoder
writes what it is given as that type: an integer arriving as a float (``3.0``) is written as
``3i``, an integer for a float field as ``3``; a value that cannot be the declared type (a
string where a number belongs, ``2.5`` for an integer) rejects its row, counted and logged.

Tags are the small closed sets that identify a series (site, line, station, equipment,
param, quality, rule, grade, edge); cell, roll and alert ids are fields, so cardinality stays
bounded by the plant layout, not by production (ARCHITECTURE.md). `frames` turns an envelope
into frames of these measurements; ``cell``, ``energy`` and ``kpi`` are declared for the
writers and reports that produce them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

import numpy as np

from models.messages import Detection, EdgeStatus, Envelope, Kind, Reading, SeriesKey, Stats
from server.frame import Frame, TagSet

__all__ = ["MEASUREMENTS", "FieldType", "Measurement", "SchemaError", "frames", "ts_ns"]


class FieldType(StrEnum):
    """The line-protocol type of a field."""

    FLOAT = "float"
    INTEGER = "integer"
    STRING = "string"
    BOOLEAN = "boolean"


class SchemaError(ValueError):
    """A frame names a measurement, tag or field the schema does not declare (a code fault)."""


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measurement: the tag keys it may carry and its fields with their pinned types.

    Examples:
        >>> MEASUREMENTS["spc"].field_type("count")
        <FieldType.INTEGER: 'integer'>
    """

    name: str
    tags: tuple[str, ...]
    fields: tuple[tuple[str, FieldType], ...]

    def field_type(self, key: str) -> FieldType:
        for k, t in self.fields:
            if k == key:
                return t
        raise SchemaError(
            f"measurement {self.name!r} has no field {key!r}; "
            f"its fields are {', '.join(k for k, _ in self.fields)}"
        )

    def check_tags(self, keys: set[str]) -> None:
        unknown = keys - set(self.tags)
        if unknown:
            raise SchemaError(
                f"measurement {self.name!r} has no tag {sorted(unknown)[0]!r}; "
                f"its tags are {', '.join(self.tags)}"
            )


F, INT, S, B = FieldType.FLOAT, FieldType.INTEGER, FieldType.STRING, FieldType.BOOLEAN
_SERIES = ("site", "line", "station", "equipment", "param")

MEASUREMENTS: Mapping[str, Measurement] = MappingProxyType(
    {
        m.name: m
        for m in (
            Measurement("telemetry", (*_SERIES, "quality"), (("value", F),)),
            Measurement(
                "spc",
                _SERIES,
                (
                    ("count", INT),
                    ("mean", F),
                    ("min", F),
                    ("max", F),
                    ("bad", INT),
                    ("statistic", F),
                    ("lcl", F),
                    ("ucl", F),
                ),
            ),
            Measurement(
                "detection",
                (*_SERIES, "rule"),
                (
                    ("value", F),
                    ("limit", F),
                    ("direction", INT),
                    ("center", F),
                    ("sigma", F),
                    ("message", S),
                    ("alert_id", INT),
                ),
            ),
            Measurement(
                "edge_status",
                ("site", "edge"),
                (
                    ("published", INT),
                    ("pending", INT),
                    ("dropped", INT),
                    ("detections", INT),
                    ("uptime_s", F),
                    ("outbox_bytes", INT),
                    ("lag_s", F),
                ),
            ),
            # One point per finished cell, at its grading time; ``good`` is what yield counts.
            Measurement(
                "cell",
                ("site", "line", "station", "equipment", "grade"),
                (
                    ("cell_id", S),
                    ("roll_id", S),
                    ("lane", INT),
                    ("capacity_ah", F),
                    ("fce", F),
                    ("dcir_mohm", F),
                    ("good", B),
                ),
            ),
            # Energy meter registers (kWh, monotonic) and power; energy per cell divides the
            # increase of the import register by the cells finished in the same window.
            Measurement(
                "energy",
                ("site", "line", "station", "equipment"),
                (("energy_kwh", F), ("export_kwh", F), ("power_kw", F)),
            ),
            Measurement("kpi", ("site", "line", "station", "kpi"), (("value", F),)),
        )
    }
)


def ts_ns(ts: float) -> int:
    """Seconds since the epoch as integer nanoseconds (the writer's precision).

    Examples:
        >>> ts_ns(1.5)
        1500000000
    """
    return round(ts * 1_000_000_000)


class _Rows:
    """Collects rows of one measurement, numbering distinct tag sets as they appear."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.series: dict[TagSet, int] = {}
        self.index: list[int] = []
        self.ts: list[int] = []
        self.cols: dict[str, list[object]] = {k: [] for k, _ in MEASUREMENTS[name].fields}

    def add(self, tags: TagSet, ts: float, **fields: object) -> None:
        self.index.append(self.series.setdefault(tags, len(self.series)))
        self.ts.append(ts_ns(ts))
        for k, col in self.cols.items():
            col.append(fields.get(k))

    def frame(self) -> Frame:
        types = dict(MEASUREMENTS[self.name].fields)
        cols = []
        for k, values in self.cols.items():
            if all(v is None for v in values):
                continue
            cols.append((k, _typed(values, types[k])))
        return Frame(
            self.name,
            tuple(self.series),
            np.asarray(self.index, dtype=np.intp),
            tuple(cols),
            np.asarray(self.ts, dtype=np.int64),
        )


def _typed(values: list[object], t: FieldType) -> np.ndarray:
    """A column of the declared type when every value already has it, else ``object``."""
    if t is FieldType.FLOAT and all(type(v) is float or v is None for v in values):
        return np.asarray([math.nan if v is None else v for v in values], dtype=np.float64)
    if t is FieldType.INTEGER and all(type(v) is int for v in values):
        return np.asarray(values, dtype=np.int64)
    return np.asarray(values, dtype=object)


def _key_tags(site: str, k: SeriesKey) -> TagSet:
    return (
        ("equipment", k.equipment),
        ("line", k.line),
        ("param", k.param),
        ("site", site),
        ("station", k.station),
    )


def frames(env: Envelope, site: str, alert_ids: Sequence[int | None] | None = None) -> list[Frame]:
    """The frames of one envelope; ``site`` comes from the server's configuration.

    ``alert_ids`` gives, per detection, the id of the alert it counted towards (a field).

    Examples:
        >>> k = SeriesKey("line1", "coater", "lane03_A", "areal_weight")
        >>> env = Envelope("gw1", 1, Kind.TELEMETRY, 2.0, (Reading(k, 2.0, 20.5),))
        >>> [(f.measurement, len(f)) for f in frames(env, "plant1")]
        [('telemetry', 1)]
    """
    if env.kind is Kind.TELEMETRY:
        rows = _Rows("telemetry")
        for r in env.items:
            if isinstance(r, Reading):
                tags = (*_key_tags(site, r.key), ("quality", r.quality.value))
                rows.add(tags, r.ts, value=r.value)
    elif env.kind is Kind.STATS:
        rows = _Rows("spc")
        for s in env.items:
            if isinstance(s, Stats):
                rows.add(
                    _key_tags(site, s.key),
                    s.ts_end,
                    count=s.count,
                    mean=s.mean,
                    min=s.minimum,
                    max=s.maximum,
                    bad=s.bad,
                    statistic=s.statistic,
                    lcl=s.lcl,
                    ucl=s.ucl,
                )
    elif env.kind is Kind.DETECTION:
        rows = _Rows("detection")
        for i, d in enumerate(env.items):
            if isinstance(d, Detection):
                rows.add(
                    (*_key_tags(site, d.key), ("rule", d.rule)),
                    d.ts,
                    value=d.value,
                    limit=d.limit,
                    direction=d.direction,
                    center=d.center,
                    sigma=d.sigma,
                    message=d.message,
                    alert_id=None if alert_ids is None else alert_ids[i],
                )
    else:
        rows = _Rows("edge_status")
        for e in env.items:
            if isinstance(e, EdgeStatus):
                rows.add(
                    (("edge", env.edge_id), ("site", site)),
                    e.ts,
                    published=e.published,
                    pending=e.pending,
                    dropped=e.dropped,
                    detections=e.detections,
                    uptime_s=float(e.uptime_s),
                    outbox_bytes=e.outbox_bytes,
                    lag_s=e.lag_s,
                )
    frame = rows.frame()
    return [frame] if len(frame) else []
