"""InfluxDB line protocol: the `Point` the server writes and the text it is sent as.

One small encoder serves every writer, so escaping is decided in one place and tested against
the spec and against a real InfluxDB 1.x. The rules: measurements escape commas and spaces; tag
keys, tag values and field keys also escape equals signs; string fields escape double quotes
and backslashes; integers carry an ``i`` suffix; timestamps are integer nanoseconds.
InfluxDB 1.x reads a backslash in a name literally except before a character it escapes, so a
name with a backslash before such a character (or at its end), a newline, or a leading ``#`` in
the measurement cannot be written faithfully: such points are skipped and counted, never bent
into a different series. Non-finite floats and ``None`` fields are omitted (line protocol has
no spelling for them), empty tag values are omitted (InfluxDB treats them as absent), and a
point left with no fields is skipped and counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Encoded", "FieldValue", "Point", "encode", "encode_point"]

FieldValue = float | int | str | bool

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ "})
_NAME = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING = str.maketrans({"\\": "\\\\", '"': '\\"'})


@dataclass(frozen=True, slots=True)
class Point:
    """One point: measurement, tags, fields (``None`` meaning absent) and a ns timestamp.

    Examples:
        >>> p = Point("telemetry", (("param", "areal weight"),), (("value", 20.5),), 10**18)
        >>> encode_point(p)
        'telemetry,param=areal\\\\ weight value=20.5 1000000000000000000'
    """

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, FieldValue | None], ...]
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Encoded:
    """Lines ready for a write request and how many points could not be written."""

    lines: tuple[str, ...]
    skipped: int


def _writable(name: str, specials: str) -> bool:
    """False for names InfluxDB 1.x cannot read back exactly (see the module docstring)."""
    if not name or "\n" in name or "\r" in name:
        return False
    if "\\" not in name:
        return True
    if name.endswith("\\"):
        return False
    return not any(name[i] == "\\" and name[i + 1] in specials for i in range(len(name) - 1))


def _field(value: FieldValue) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    return '"' + value.translate(_STRING) + '"'


def encode_point(point: Point) -> str | None:
    """The line for one point, or ``None`` when it has no writable field or name."""
    if point.measurement.startswith("#") or not _writable(point.measurement, ", "):
        return None
    head = [point.measurement.translate(_MEASUREMENT)]
    for key, value in sorted(point.tags):
        if value == "":
            continue
        if not (_writable(key, ",= ") and _writable(value, ",= ")):
            return None
        head.append(f"{key.translate(_NAME)}={value.translate(_NAME)}")
    fields = []
    for key, value in point.fields:
        text = None if value is None else _field(value)
        if text is None:
            continue
        if not _writable(key, ",= "):
            return None
        fields.append(f"{key.translate(_NAME)}={text}")
    if not fields:
        return None
    return f"{','.join(head)} {','.join(fields)} {point.ts_ns}"


def encode(points: Iterable[Point]) -> Encoded:
    """Encode many points, counting those that had to be skipped.

    Examples:
        >>> nan = Point("spc", (), (("mean", float("nan")),), 1)
        >>> ok = Point("spc", (("line", "l1"),), (("count", 3), ("mean", 1.5)), 2)
        >>> encode([nan, ok])
        Encoded(lines=('spc,line=l1 count=3i,mean=1.5 2',), skipped=1)
    """
    lines: list[str] = []
    skipped = 0
    for p in points:
        line = encode_point(p)
        if line is None:
            skipped += 1
        else:
            lines.append(line)
    return Encoded(tuple(lines), skipped)
