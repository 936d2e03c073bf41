"""A frame: many points of one measurement as numpy columns, the unit the encoder works on.

Series are identified by tags, and tags are small closed sets (ARCHITECTURE.md), so a frame
keeps each distinct tag set once (``series``) and gives every row an index into it
(``series_index``): the encoder escapes a tag set once, not once per point. Fields are numpy
columns (``float64``, ``int64``, ``bool`` or ``object`` for strings and mixed input) and the
timestamps integer nanoseconds. A field value that is absent in a row is ``NaN`` in a float
column or ``None`` in an object column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Frame", "TagSet", "concat"]

#: One series' tags as ``(key, value)`` pairs.
TagSet = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """Rows of one measurement: tag sets, per-row series index, field columns, timestamps.

    Examples:
        >>> f = Frame.from_columns(
        ...     "telemetry", {"line": ["l1", "l1", "l2"]}, {"value": [1.0, 2.0, 3.0]}, [1, 2, 3]
        ... )
        >>> len(f), f.series, f.series_index.tolist()
        (3, ((('line', 'l1'),), (('line', 'l2'),)), [0, 0, 1])
    """

    measurement: str
    series: tuple[TagSet, ...]
    series_index: np.ndarray
    fields: tuple[tuple[str, np.ndarray], ...]
    ts_ns: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.ts_ns)
        if self.ts_ns.dtype != np.int64:
            raise ValueError(f"ts_ns must be int64 nanoseconds, got dtype {self.ts_ns.dtype}")
        if len(self.series_index) != n:
            raise ValueError(f"series_index has {len(self.series_index)} rows, ts_ns has {n}")
        for key, col in self.fields:
            if len(col) != n:
                raise ValueError(f"field {key!r} has {len(col)} rows, ts_ns has {n}")
        if (
            n
            and self.series_index.size
            and (self.series_index.min() < 0 or self.series_index.max() >= len(self.series))
        ):
            raise ValueError(f"series_index must lie in [0, {len(self.series)})")

    def __len__(self) -> int:
        return len(self.ts_ns)

    @classmethod
    def from_columns(
        cls,
        measurement: str,
        tags: Mapping[str, Sequence[str] | np.ndarray],
        fields: Mapping[str, Sequence[Any] | np.ndarray],
        ts_ns: Sequence[int] | np.ndarray,
    ) -> Frame:
        """A frame from per-row tag columns; distinct tag sets are numbered as they appear."""
        ts = np.asarray(ts_ns, dtype=np.int64)
        n = len(ts)
        keys = sorted(tags)
        if keys:
            # Factorised through dicts, not numpy strings: those drop trailing NUL characters
            # and so would merge distinct (if unwritable) tag values.
            codes = np.zeros(n, dtype=np.int64)
            uniques: list[list[str]] = []
            for k in keys:
                seen: dict[str, int] = {}
                col = [seen.setdefault(str(v), len(seen)) for v in _values(tags[k])]
                codes = codes * max(1, len(seen)) + np.asarray(col, dtype=np.int64)
                uniques.append(list(seen))
            combos, index = np.unique(codes, return_inverse=True)
            series = []
            for c in combos.tolist():
                parts = []
                for u in reversed(uniques):
                    c, j = divmod(c, len(u))
                    parts.append(u[j])
                series.append(tuple(zip(keys, reversed(parts), strict=True)))
            idx = index.reshape(-1).astype(np.intp)
        else:
            series, idx = [()], np.zeros(n, dtype=np.intp)
        cols_out = tuple((k, _column(v)) for k, v in fields.items())
        return cls(measurement, tuple(series), idx, cols_out, ts)

    def field(self, key: str) -> np.ndarray | None:
        """The column of field ``key``, or None when the frame has no such field."""
        for k, col in self.fields:
            if k == key:
                return col
        return None

    def take(self, rows: np.ndarray | slice) -> Frame:
        """The frame restricted to ``rows`` (indices, a mask or a slice)."""
        return Frame(
            self.measurement,
            self.series,
            self.series_index[rows],
            tuple((k, c[rows]) for k, c in self.fields),
            self.ts_ns[rows],
        )


def _values(col: Sequence[str] | np.ndarray) -> list[Any]:
    return col.tolist() if isinstance(col, np.ndarray) else list(col)


def _column(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """A numpy column; anything numpy cannot hold as one number type stays ``object``."""
    if isinstance(values, np.ndarray):
        return values
    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":
        return arr
    return np.asarray(values, dtype=object)


def concat(frames: Iterable[Frame]) -> list[Frame]:
    """Frames merged per measurement (in first-seen order), so the encoder runs once per kind."""
    groups: dict[str, list[Frame]] = {}
    for f in frames:
        if len(f):
            groups.setdefault(f.measurement, []).append(f)
    out = []
    for name, group in groups.items():
        if len(group) == 1:
            out.append(group[0])
            continue
        series: dict[TagSet, int] = {}
        index_parts = []
        for f in group:
            remap = np.array([series.setdefault(s, len(series)) for s in f.series], dtype=np.intp)
            index_parts.append(remap[f.series_index] if len(remap) else f.series_index)
        keys: dict[str, None] = {}
        for f in group:
            keys.update((k, None) for k, _ in f.fields)
        cols = []
        for key in keys:
            parts = []
            for f in group:
                col = f.field(key)
                parts.append(_absent(len(f)) if col is None else col)
            cols.append((key, _join(parts)))
        out.append(
            Frame(
                name,
                tuple(series),
                np.concatenate(index_parts),
                tuple(cols),
                np.concatenate([f.ts_ns for f in group]),
            )
        )
    return out


def _absent(n: int) -> np.ndarray:
    return np.full(n, None, dtype=object)


def _join(parts: list[np.ndarray]) -> np.ndarray:
    """One column from parts; parts of different number types stay exact as ``object``."""
    kinds = {p.dtype.kind for p in parts}
    if len(kinds) == 1 and kinds <= set("fiub"):
        return np.concatenate(parts)
    return np.concatenate([p.astype(object) for p in parts])
