"""Field values brought to the schema's pinned types, a whole column at a time.

Both stores (line protocol for InfluxDB, the embedded SQLite file) must hold a field as the
one type `server.schema` declares, or InfluxDB answers "field type conflict" and the file
drifts from it. This module decides, for every row, whether a field has a value, what that
value is as the declared type, or why the row must be rejected. Numeric columns are converted
whole with numpy; ``object`` columns (mixed input) go value by value. The rules: a float
field takes floats and integers; an integer field takes integers and floats with no fraction
(``3.0`` -> ``3``); a boolean field takes only booleans; a string field takes only strings.
``None``, ``NaN`` and infinities are absent values, not errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from server.frame import Frame, TagSet
from server.schema import MEASUREMENTS, FieldType, Measurement, SchemaError

__all__ = ["Typed", "TypedColumn", "coerce"]

_MAX_REASONS = 5
#: Series tuples whose tag keys were checked (frames of one source share the tuple).
_CHECKED: dict[tuple[str, int], tuple[TagSet, ...]] = {}
_NUMPY: dict[FieldType, type] = {
    FieldType.FLOAT: np.float64,
    FieldType.INTEGER: np.int64,
    FieldType.BOOLEAN: np.bool_,
    FieldType.STRING: object,
}


@dataclass(frozen=True, slots=True)
class TypedColumn:
    """One field of a frame as its declared type: ``values`` where ``present`` is True."""

    key: str
    kind: FieldType
    values: np.ndarray  # float64, int64, bool, or object holding str
    present: np.ndarray


@dataclass(frozen=True, slots=True)
class Typed:
    """A frame's fields as declared types (sorted by key), and the rows that broke a type."""

    schema: Measurement
    columns: tuple[TypedColumn, ...]
    rejected: np.ndarray  # bool per row
    reasons: tuple[str, ...]


def coerce(frame: Frame) -> Typed:
    """The frame's fields as the schema's types; raises `SchemaError` for undeclared names.

    Examples:
        >>> f = Frame.from_columns("spc", {}, {"count": [3.0, 2.5, None]}, [1, 2, 3])
        >>> t = coerce(f)
        >>> t.columns[0].values.tolist(), t.columns[0].present.tolist(), t.rejected.tolist()
        ([3, 0, 0], [True, False, False], [False, True, False])
    """
    schema = MEASUREMENTS.get(frame.measurement)
    if schema is None:
        raise SchemaError(
            f"no measurement {frame.measurement!r} in the schema; known: {', '.join(MEASUREMENTS)}"
        )
    seen = (frame.measurement, id(frame.series))
    if _CHECKED.get(seen) is not frame.series:
        schema.check_tags({k for tags in frame.series for k, _ in tags})
        if len(_CHECKED) >= 64:
            _CHECKED.clear()
        _CHECKED[seen] = frame.series
    reject = np.zeros(len(frame), dtype=bool)
    reasons: list[str] = []
    cols = []
    for key, col in sorted(frame.fields, key=lambda kc: kc[0]):
        kind = schema.field_type(key)
        values, present = _column(key, np.asarray(col), kind, reject, reasons)
        cols.append(TypedColumn(key, kind, values, present))
    out = tuple(TypedColumn(c.key, c.kind, c.values, c.present & ~reject) for c in cols)
    return Typed(schema, out, reject, tuple(reasons))


def _column(
    key: str, col: np.ndarray, kind: FieldType, reject: np.ndarray, reasons: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    n = len(col)
    dk = col.dtype.kind

    def bad(rows: np.ndarray, what: str) -> None:
        if rows.any():
            reject[rows] = True
            if len(reasons) < _MAX_REASONS:
                first = col[np.flatnonzero(rows)[0]]
                reasons.append(f"field {key!r} is {kind.value}, got {what} {first!r}")

    if kind is FieldType.FLOAT:
        if dk == "f":
            v = col.astype(np.float64, copy=False)
            return v, np.isfinite(v)
        if dk in "iu":
            return col.astype(np.float64), np.ones(n, dtype=bool)
    elif kind is FieldType.INTEGER:
        if dk == "i":
            return col.astype(np.int64, copy=False), np.ones(n, dtype=bool)
        if dk == "u":
            big = col > np.iinfo(np.int64).max
            bad(big, "an integer beyond int64,")
            return np.where(big, 0, col).astype(np.int64), ~big
        if dk == "f":
            finite = np.isfinite(col)
            whole = finite & (np.floor(np.where(finite, col, 0)) == col)
            whole &= np.abs(np.where(finite, col, 0)) < 2.0**63
            bad(finite & ~whole, "a fractional or out-of-range number,")
            return np.where(whole, col, 0).astype(np.int64), whole
    elif kind is FieldType.BOOLEAN and dk == "b":
        return col, np.ones(n, dtype=bool)
    elif kind is FieldType.STRING and dk == "U":
        return col.astype(object), np.ones(n, dtype=bool)
    if dk != "O":
        bad(np.ones(n, dtype=bool), f"a {col.dtype} column, e.g.")
        return np.zeros(n, dtype=_NUMPY[kind]), np.zeros(n, dtype=bool)
    return _objects(key, col, kind, reject, reasons)


def _objects(
    key: str, col: np.ndarray, kind: FieldType, reject: np.ndarray, reasons: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    n = len(col)
    present = np.zeros(n, dtype=bool)
    out: np.ndarray = np.zeros(n, dtype=_NUMPY[kind])
    for i, v in enumerate(col.tolist()):
        if isinstance(v, np.generic):
            v = v.item()
        if v is None:
            continue
        ok = False
        if kind is FieldType.STRING:
            ok = isinstance(v, str)
        elif isinstance(v, bool):
            ok = kind is FieldType.BOOLEAN
        elif isinstance(v, int | float) and kind is not FieldType.BOOLEAN:
            f = float(v)
            if not math.isfinite(f):
                continue  # absent: line protocol has no spelling for it
            if kind is FieldType.FLOAT:
                ok, v = True, f
            elif isinstance(v, int):
                ok = -(2**63) <= v < 2**63
            elif f == math.floor(f) and abs(f) < 2.0**63:
                ok, v = True, int(f)
        if ok:
            present[i] = True
            out[i] = v
        else:
            reject[i] = True
            if len(reasons) < _MAX_REASONS:
                reasons.append(f"field {key!r} is {kind.value}, got {type(v).__name__} {v!r}")
    return out, present
