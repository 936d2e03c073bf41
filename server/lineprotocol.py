"""InfluxDB line protocol from frames, built a block of rows at a time with numpy.

Every writer (InfluxDB 1.x and 2.x, the embedded file's export) sends what this module
encodes, so escaping and types are decided in one place. The rules, from the InfluxDB line
protocol reference: measurements escape commas and spaces; tag keys, tag values and field keys
also escape equals signs; string field values escape double quotes and backslashes and are
quoted; integers carry an ``i`` suffix; timestamps are integer nanoseconds. Tags are sorted by
key and fields by key, as InfluxDB stores them (and as influxdb-client's ``Point`` writes
them, which the tests use as the reference).

InfluxDB 1.x reads a backslash in a name literally except before a character it escapes, so
a name with a backslash before such a character (or at its end), a newline or carriage
return, a NUL, or a leading ``#`` in the measurement cannot be written faithfully: such a
row is skipped and counted, never bent into a different series. Non-finite floats and absent
values (``None``, ``NaN``) leave the field out; empty tag values leave the tag out (InfluxDB
treats them as absent); a row left with no field, or with a string holding a newline,
carriage return or NUL, is skipped and counted. A value that contradicts the field's type in
`server.schema` rejects its row, counted with the reason.

Speed: a tag set is escaped once per distinct series; numbers are formatted by
`server.digits` for whole columns; each block of rows is laid out as a byte matrix, one row
per line, NUL-padded in fixed columns, and the NULs are deleted in one ``bytes.translate``.
The commonest shape, one float field in every row with nanosecond timestamps of this
century, has its own narrower layout (`_fast_blocks`): the number column is only as wide as
its longest text, so few NULs remain and ``bytes.replace`` removes them by copying the runs
between them. Both layouts write the same bytes.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from server.coerce import TypedColumn, coerce
from server.digits import FLOAT_WIDTH, INT_WIDTH, digit_words, float_text, int_text
from server.frame import Frame, TagSet
from server.schema import FieldType, SchemaError

__all__ = ["Block", "Encoded", "encode", "encode_frame", "escape_name"]

_BLOCK_ROWS = 8000
_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ "})
_NAME = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING = str.maketrans({"\\": "\\\\", '"': '\\"'})
_TRUE_FALSE = np.zeros((2, 5), dtype=np.uint8)
_TRUE_FALSE[0, :5] = np.frombuffer(b"false", dtype=np.uint8)
_TRUE_FALSE[1, :4] = np.frombuffer(b"true", dtype=np.uint8)
_COMMA, _SPACE, _NEWLINE, _I = ord(","), ord(" "), ord("\n"), ord("i")
_MAX_REASONS = 5
_WIDTH = {FieldType.FLOAT: FLOAT_WIDTH, FieldType.INTEGER: INT_WIDTH, FieldType.BOOLEAN: 5}


@dataclass(frozen=True, slots=True)
class Block:
    """Consecutive lines, each ending in a newline: ``lines`` of them in ``body``."""

    body: bytes
    lines: int


@dataclass(frozen=True, slots=True)
class Encoded:
    """Lines ready for write requests and what could not become a line.

    The lines come in blocks of at most a few thousand, so a writer cuts requests at block
    boundaries without searching for newlines, and a million points never need one buffer.
    ``skipped`` rows had nothing writable (no field with a value, or a name InfluxDB cannot
    read back); ``rejected`` rows carried a value the schema's field type cannot hold;
    ``reasons`` describes the first few rejections for the log.
    """

    blocks: tuple[Block, ...]
    skipped: int = 0
    rejected: int = 0
    reasons: tuple[str, ...] = ()

    @property
    def lines(self) -> int:
        return sum(b.lines for b in self.blocks)

    @property
    def body(self) -> bytes:
        """All lines in one piece."""
        return b"".join(b.body for b in self.blocks)


def _writable(name: str, specials: str) -> bool:
    """False for names InfluxDB 1.x cannot read back exactly (see the module docstring)."""
    if not name or "\n" in name or "\r" in name or "\0" in name:
        return False
    if "\\" not in name:
        return True
    if name.endswith("\\"):
        return False
    return not any(name[i] == "\\" and name[i + 1] in specials for i in range(len(name) - 1))


def escape_name(name: str, *, measurement: bool = False) -> str | None:
    """A measurement, tag or field name escaped for line protocol; None when not writable.

    Examples:
        >>> escape_name("lane 3,A=1")
        'lane\\\\ 3\\\\,A\\\\=1'
        >>> escape_name("ends\\\\") is None
        True
    """
    if measurement:
        if name.startswith("#") or not _writable(name, ", "):
            return None
        return name.translate(_MEASUREMENT)
    if not _writable(name, ",= "):
        return None
    return name.translate(_NAME)


#: Escaped series prefixes by (measurement, tag set). Series are small closed sets, so this
#: stays small; it is emptied if a misbehaving source ever floods it with new series.
_PREFIXES: dict[tuple[str, TagSet], bytes | None] = {}
_PREFIXES_MAX = 200_000


def _prefix(measurement: str, tags: TagSet) -> bytes | None:
    """``measurement,k=v,... `` for one series, from the cache or escaped once."""
    key = (measurement, tags)
    try:
        return _PREFIXES[key]
    except KeyError:
        pass
    if len(_PREFIXES) >= _PREFIXES_MAX:
        _PREFIXES.clear()
    p = _PREFIXES[key] = _escape_prefix(measurement, tags)
    return p


#: The last prefix tables, by the identity of a frame's series tuple: frames cut from one
#: source share it, so a table of thousands of series is built once, not once per frame.
_TABLES: dict[int, tuple[str, tuple[TagSet, ...], np.ndarray, np.ndarray]] = {}


def _table(measurement: str, series: tuple[TagSet, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The NUL-padded prefix matrix of a frame's series, and which series are writable."""
    hit = _TABLES.get(id(series))
    if hit is not None and hit[0] == measurement and hit[1] is series:
        return hit[2], hit[3]
    prefixes = [_prefix(measurement, tags) for tags in series]
    ok = np.array([p is not None for p in prefixes], dtype=bool)
    table = _matrix([p or b"" for p in prefixes])
    if len(_TABLES) >= 64:
        _TABLES.clear()
    _TABLES[id(series)] = (measurement, series, table, ok)
    return table, ok


def _escape_prefix(measurement: str, tags: TagSet) -> bytes | None:
    """``measurement,k=v,... `` for one series (sorted tags, empty values left out)."""
    head = escape_name(measurement, measurement=True)
    if head is None:
        return None
    parts = [head]
    for key, value in sorted(tags):
        if value == "":
            continue
        k, v = escape_name(key), escape_name(value)
        if k is None or v is None:
            return None
        parts.append(f"{k}={v}")
    return (",".join(parts) + " ").encode()


def _matrix(items: list[bytes]) -> np.ndarray:
    """(len(items), longest) uint8, NUL-padded."""
    width = max((len(b) for b in items), default=0) or 1
    return np.frombuffer(np.array(items, dtype=f"S{width}").tobytes(), dtype=np.uint8).reshape(
        len(items), width
    )


@dataclass(frozen=True, slots=True)
class _Field:
    """One typed field ready for layout: ``key=`` bytes and its text width."""

    key: bytes
    col: TypedColumn
    width: int


def encode_frame(frame: Frame) -> Encoded:
    """Encode one frame; rows keep their order.

    Examples:
        >>> f = Frame.from_columns(
        ...     "spc", {"line": ["l1", "l 2"]}, {"count": [3.0, 2.5], "mean": [1.5, 2]}, [1, 2]
        ... )
        >>> enc = encode_frame(f)
        >>> enc.body, enc.lines, enc.rejected
        (b'spc,line=l1 count=3i,mean=1.5 1\\n', 1, 1)
    """
    n = len(frame)
    if n == 0:
        return Encoded(())
    typed = coerce(frame)
    table, series_ok = _table(frame.measurement, frame.series)
    columns = []
    any_field = np.zeros(n, dtype=bool)
    unsendable = np.zeros(n, dtype=bool)
    for c in typed.columns:
        name = escape_name(c.key)
        if name is None:  # pragma: no cover - schema field names are plain identifiers
            raise SchemaError(f"field name {c.key!r} cannot be written")
        if c.kind is FieldType.STRING:
            c, bad = _quoted(c)
            unsendable |= bad
        width = _WIDTH.get(c.kind) or max((len(v) for v in c.values[c.present].tolist()), default=1)
        columns.append(_Field(f"{name}=".encode(), c, width))
        any_field |= c.present
    keep = series_ok[frame.series_index] & any_field & ~typed.rejected & ~unsendable
    rejected = int(typed.rejected.sum())
    skipped = n - rejected - int(keep.sum())
    if _fits_fast(columns, keep, frame.ts_ns):
        return Encoded(_fast_blocks(frame, table, columns[0]), skipped, rejected, typed.reasons)
    width = table.shape[1] + sum(1 + len(f.key) + f.width + 1 for f in columns) + 22
    buf = np.empty((min(n, _BLOCK_ROWS), width), dtype=np.uint8)  # reused by every block
    blocks = []
    for start in range(0, n, _BLOCK_ROWS):
        rows = slice(start, min(n, start + _BLOCK_ROWS))
        lines = int(keep[rows].sum())
        if lines:
            body = _block(buf[: rows.stop - start], table, frame, columns, keep, rows)
            blocks.append(Block(body, lines))
    return Encoded(tuple(blocks), skipped, rejected, typed.reasons)


def _block(
    m: np.ndarray,
    table: np.ndarray,
    frame: Frame,
    columns: list[_Field],
    keep: np.ndarray,
    rows: slice,
) -> bytes:
    """Lay out the lines of ``rows`` in the byte matrix ``m`` and squeeze out the NULs.

    Every column of ``m`` is written for every row (``m`` is reused between blocks).
    """
    idx = frame.series_index[rows]
    at = table.shape[1]
    np.take(table, idx, axis=0, out=m[:, :at])
    seen = None  # rows that have a field before this one: they need a comma
    for f in columns:
        c = f.col
        present = c.present[rows]
        everywhere = bool(present.all())
        if seen is None:
            m[:, at] = 0
        else:
            np.multiply(seen & present, _COMMA, out=m[:, at], casting="unsafe")
        at += 1
        k = len(f.key)
        m[:, at : at + k] = np.frombuffer(f.key, dtype=np.uint8)
        text = m[:, at + k : at + k + f.width]
        _text(c, rows, text)
        if c.kind is FieldType.INTEGER:
            m[:, at + k + f.width] = _I
        end = at + k + f.width + (c.kind is FieldType.INTEGER)
        if not everywhere:
            m[~present, at:end] = 0
        at = end
        seen = present if seen is None else (seen | present)
    m[:, at] = _SPACE
    int_text(frame.ts_ns[rows], out=m[:, at + 1 : at + 21])
    m[:, at + 21] = _NEWLINE
    m[:, at + 22 :] = 0
    kept = keep[rows]
    if not kept.all():
        m[~kept] = 0
    return m.tobytes().translate(None, b"\0")


def _quoted(c: TypedColumn) -> tuple[TypedColumn, np.ndarray]:
    """A string column as quoted, escaped UTF-8, and the rows whose string cannot be sent.

    A newline or carriage return inside a string would let the request be cut in the wrong
    place (batches are split at newlines), and a NUL is not text: such rows are skipped.
    """
    values = np.empty(len(c.values), dtype=object)
    bad = np.zeros(len(c.values), dtype=bool)
    for i in np.flatnonzero(c.present).tolist():
        v = c.values[i]
        if "\n" in v or "\r" in v or "\0" in v:
            bad[i] = True
        else:
            values[i] = ('"' + v.translate(_STRING) + '"').encode()
    return TypedColumn(c.key, c.kind, values, c.present & ~bad), bad


def _text(c: TypedColumn, rows: slice, out: np.ndarray) -> None:
    values = c.values[rows]
    if c.kind is FieldType.FLOAT:
        present = c.present[rows]
        float_text(values if present.all() else np.where(present, values, 0.0), out=out)
    elif c.kind is FieldType.INTEGER:
        int_text(values, out=out)
    elif c.kind is FieldType.BOOLEAN:
        np.take(_TRUE_FALSE, values.astype(np.intp), axis=0, out=out)
    else:
        present = c.present[rows]
        text = _matrix([v if p else b"" for v, p in zip(values.tolist(), present, strict=True)])
        out[:, : text.shape[1]] = text
        out[:, text.shape[1] :] = 0


def encode(frames: Iterable[Frame]) -> Encoded:
    """Encode many frames, adding up what was skipped and rejected."""
    parts = [encode_frame(f) for f in frames]
    return Encoded(
        tuple(b for p in parts for b in p.blocks),
        sum(p.skipped for p in parts),
        sum(p.rejected for p in parts),
        tuple(r for p in parts for r in p.reasons)[:_MAX_REASONS],
    )


#: Timestamps from here on (2001-09-09) have 19 digits, up to the largest int64.
_TS19 = 10**18
#: Rows of the fast layout formatted at once: numpy's per-call cost is spread over more
#: rows, while each temporary column (8 bytes a row) stays under glibc's default mmap
#: threshold of 128 KiB, so it is reused from the heap instead of mapped and page-faulted.
_FAST_CHUNK = 2 * _BLOCK_ROWS
_SCRATCH = threading.local()


def _fits_fast(columns: list[_Field], keep: np.ndarray, ts: np.ndarray) -> bool:
    """True for the common telemetry shape that `_fast_blocks` lays out.

    One float field with a value in every row, every row kept, and 19-digit timestamps.
    """
    return (
        sys.byteorder == "little"
        and len(columns) == 1
        and columns[0].col.kind is FieldType.FLOAT
        and bool(keep.all())
        and int(ts.min()) >= _TS19
    )


def _fast_blocks(frame: Frame, table: np.ndarray, field: _Field) -> tuple[Block, ...]:
    """Blocks of ``<prefix><field>=<number> <timestamp>\\n`` lines with little padding.

    The general layout pads every number to its widest possible text, so deleting the
    padding costs a pass over every byte (``bytes.translate``). Here the number column is
    only as wide as the longest text in the chunk, found by OR-ing the texts together, so
    most rows carry no NUL at all; ``bytes.replace`` then copies the runs between the few
    NULs with ``memcpy``. Columns are written as whole 8-byte words where they can be: a
    word may run into the next row, which is written after it (and the scratch buffer has
    room past the last row).
    """
    n = len(frame)
    keyed, gaps = _keyed(table, field.key)
    pw = keyed.shape[1]
    values, ts = field.col.values, frame.ts_ns
    rows = min(n, _FAST_CHUNK)
    numbers = _scratch("numbers", rows * FLOAT_WIDTH)[: rows * FLOAT_WIDTH].reshape(rows, -1)
    buf = _scratch("lines", rows * (pw + FLOAT_WIDTH + 21) + 32)
    blocks = []
    for start in range(0, n, _FAST_CHUNK):
        stop = min(n, start + _FAST_CHUNK)
        k = stop - start
        text = float_text(values[start:stop], out=numbers[:k])
        words = text.view(np.uint64)
        union = np.array([np.bitwise_or.reduce(words[:, j]) for j in range(3)], dtype=np.uint64)
        widest = int(union.view(np.uint8).nonzero()[0][-1]) + 1  # the longest text
        width = pw + widest + 21  # prefix and key, number, space, 19 digits, newline
        m = buf[: k * width].reshape(k, width)
        _words_at(buf, pw, k, width)[...] = words
        digit_words(ts[start:stop], 19, out=_words_at(buf, pw + widest + 1, k, width))
        m[:, pw + widest] = _SPACE
        m[:, width - 1] = _NEWLINE
        m[:, :pw] = np.take(keyed, frame.series_index[start:stop], axis=0, mode="clip")
        # NULs to delete: replace pays per NUL, translate per byte; with up to about one
        # NUL in 24 bytes replace is the cheaper
        nuls = k * widest - np.count_nonzero(text[:, :widest])
        if gaps is not None:
            nuls += int(gaps[frame.series_index[start:stop]].sum())
        few = nuls * 24 < k * width
        for a in range(0, k, _BLOCK_ROWS):
            b = min(k, a + _BLOCK_ROWS)
            raw = buf[a * width : b * width].tobytes()
            body = raw.replace(b"\0", b"") if few else raw.translate(None, b"\0")
            blocks.append(Block(body, b - a))
    return tuple(blocks)


def _words_at(buf: np.ndarray, offset: int, rows: int, width: int) -> np.ndarray:
    """(rows, 3) uint64 over 24 bytes at ``offset`` of each ``width``-byte row of ``buf``.

    The 24 bytes may reach into the next row (the caller writes that afterwards).
    """
    view = np.lib.stride_tricks.as_strided(
        buf[offset:], shape=(rows, 24), strides=(width, 1), writeable=True
    )
    return view.view(np.uint64)


def _scratch(name: str, size: int) -> np.ndarray:
    """A per-thread byte buffer of at least ``size``, kept between calls: a fresh one
    would be mapped and page-faulted anew every time."""
    buf: np.ndarray | None = getattr(_SCRATCH, name, None)
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=np.uint8)
        setattr(_SCRATCH, name, buf)
    return buf


#: Prefix tables with a field key appended (``<prefix><key>=``, NUL padding between them)
#: and the padding per series (None when all prefixes have one length), by table and key.
_KEYED: dict[tuple[int, bytes], tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}


def _keyed(table: np.ndarray, key: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """A frame's prefix table with ``key`` appended, and its NULs per series, built once."""
    hit = _KEYED.get((id(table), key))
    if hit is not None and hit[0] is table:
        return hit[1], hit[2]
    out = np.empty((table.shape[0], table.shape[1] + len(key)), dtype=np.uint8)
    out[:, : table.shape[1]] = table
    out[:, table.shape[1] :] = np.frombuffer(key, dtype=np.uint8)
    gaps = np.count_nonzero(table == 0, axis=1)
    if len(_KEYED) >= 64:
        _KEYED.clear()
    _KEYED[(id(table), key)] = (table, out, gaps if gaps.any() else None)
    return out, _KEYED[(id(table), key)][2]
