"""The embedded series store: the InfluxDB schema in one SQLite file, for sites without one.

The demo and small sites run with nothing installed, so without an InfluxDB URL the server
keeps the same series here: one table per measurement of `server.schema`, a column per tag
(``''`` when absent, as InfluxDB treats an empty tag) and per field (typed as declared), and
the time in integer nanoseconds. A point is keyed, as in InfluxDB, by its series and time: a
second write of the same point merges its fields into the first instead of adding a row, so
MQTT redeliveries never count twice. `export_lp` reads the tables back as line protocol for
a later import into InfluxDB (``influx write`` or ``curl --data-binary @file .../write``).

SQLite work runs in a worker thread (one connection, one batch at a time), so a large batch
does not stall the event loop. WAL mode lets reports and exports read while the server
writes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from server.coerce import coerce
from server.frame import Frame
from server.lineprotocol import encode_frame
from server.schema import MEASUREMENTS, FieldType, Measurement
from server.sink import Batch, SinkRetry

__all__ = ["SeriesFile", "export_lp", "series_path_for"]

_SQL_TYPE = {
    FieldType.FLOAT: "REAL",
    FieldType.INTEGER: "INTEGER",
    FieldType.STRING: "TEXT",
    FieldType.BOOLEAN: "INTEGER",
}


def series_path_for(db_path: str) -> str:
    """The default series file next to the server's store: ``x.sqlite`` -> ``x-series.sqlite``.

    Examples:
        >>> series_path_for("/var/lib/cellwatch/cellwatch.sqlite")
        '/var/lib/cellwatch/cellwatch-series.sqlite'
        >>> series_path_for(":memory:")
        ':memory:'
    """
    if db_path == ":memory:":
        return db_path
    p = Path(db_path)
    return str(p.with_name(f"{p.stem}-series{p.suffix or '.sqlite'}"))


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _ddl(m: Measurement) -> str:
    cols = ["time INTEGER NOT NULL"]
    cols += [f"{_q(t)} TEXT NOT NULL DEFAULT ''" for t in m.tags]
    cols += [f"{_q(k)} {_SQL_TYPE[t]}" for k, t in m.fields]
    key = ", ".join([*(_q(t) for t in m.tags), "time"])
    return f"CREATE TABLE IF NOT EXISTS {_q(m.name)} ({', '.join(cols)}, PRIMARY KEY ({key}))"


class SeriesFile:
    """The series tables in one SQLite file; a `server.sink.Sink` taking frames.

    Examples:
        >>> import asyncio
        >>> async def demo():
        ...     async with SeriesFile(":memory:") as s:
        ...         f = Frame.from_columns("spc", {"line": ["l1"]}, {"count": [3]}, [5])
        ...         await s.write(Batch(frames=(f, f)))
        ...         return s.query("SELECT line, count, time FROM spc")
        >>> asyncio.run(demo())
        [('l1', 3, 5)]
    """

    wants_lines = False

    def __init__(self, path: str, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self.name = f"sqlite {path}"
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def __aenter__(self) -> SeriesFile:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> SeriesFile:
        """Open the file, creating the tables (read-only: they must exist already)."""
        if self.readonly:
            if self.path != ":memory:" and not Path(self.path).is_file():
                raise FileNotFoundError(f"no series file at {self.path}")
            self._db = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, check_same_thread=False
            )
            return self
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for m in MEASUREMENTS.values():
                db.execute(_ddl(m))
        except sqlite3.Error:
            db.close()
            raise
        self._db = db
        return self

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    async def write(self, batch: Batch) -> None:
        try:
            await asyncio.to_thread(self.write_frames, batch.frames)
        except sqlite3.Error as e:  # a full disk, a locked file: may pass
            raise SinkRetry(f"SQLite: {e}") from None

    def write_frames(self, frames: tuple[Frame, ...] | list[Frame]) -> int:
        """Insert (or merge into existing points) every typed row; returns rows written.

        Rows that break a field type or have no field are left out, as the encoder does.
        """
        with self._lock:
            db = self._db
            if db is None:
                raise sqlite3.ProgrammingError("the series file is closed")
            written = 0
            db.execute("BEGIN IMMEDIATE")
            try:
                for f in frames:
                    written += self._insert(db, f)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return written

    def _insert(self, db: sqlite3.Connection, frame: Frame) -> int:
        if not len(frame):
            return 0
        typed = coerce(frame)
        m = typed.schema
        fields = list(typed.columns)
        any_field = np.zeros(len(frame), dtype=bool)
        for c in fields:
            any_field |= c.present
        rows = np.flatnonzero(any_field & ~typed.rejected)
        if not rows.size:
            return 0
        tag_rows = [dict(s) for s in frame.series]
        tag_cols = [[t.get(k, "") for t in tag_rows] for k in m.tags]
        idx = frame.series_index[rows].tolist()
        cols: list[list[object]] = [frame.ts_ns[rows].tolist()]
        cols += [[tc[i] for i in idx] for tc in tag_cols]
        for c in fields:
            vals = c.values[rows]
            if c.kind is FieldType.BOOLEAN:
                vals = vals.astype(np.int64)
            present = c.present[rows].tolist()
            cols.append([v if p else None for v, p in zip(vals.tolist(), present, strict=True)])
        names = ["time", *m.tags, *(c.key for c in fields)]
        key = ", ".join([*(_q(t) for t in m.tags), "time"])
        updates = ", ".join(
            f"{_q(c.key)} = coalesce(excluded.{_q(c.key)}, {_q(c.key)})" for c in fields
        )
        sql = (
            f"INSERT INTO {_q(m.name)} ({', '.join(_q(n) for n in names)}) "
            f"VALUES ({', '.join('?' * len(names))}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
        )
        db.executemany(sql, zip(*cols, strict=True))
        return int(rows.size)

    def query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only SQL query (the report queries use this)."""
        with self._lock:
            if self._db is None:
                raise sqlite3.ProgrammingError("the series file is closed")
            return self._db.execute(sql, args).fetchall()

    def frames(self, measurement: str, rows_per_frame: int = 50_000) -> Iterator[Frame]:
        """The stored points of one measurement as frames, in time order."""
        m = MEASUREMENTS[measurement]
        names = ["time", *m.tags, *(k for k, _ in m.fields)]
        sql = f"SELECT {', '.join(_q(n) for n in names)} FROM {_q(m.name)} ORDER BY time"
        with self._lock:
            if self._db is None:
                raise sqlite3.ProgrammingError("the series file is closed")
            cur = self._db.execute(sql)
            while True:
                chunk = cur.fetchmany(rows_per_frame)
                if not chunk:
                    return
                yield _frame(m, chunk)


def _frame(m: Measurement, rows: list[tuple[Any, ...]]) -> Frame:
    cols = list(zip(*rows, strict=True))
    nt = len(m.tags)
    tags = {k: np.asarray(cols[1 + j], dtype=str) for j, k in enumerate(m.tags)}
    fields = {}
    for j, (k, t) in enumerate(m.fields):
        values = cols[1 + nt + j]
        if all(v is None for v in values):
            continue
        if t is FieldType.FLOAT:
            fields[k] = np.asarray([np.nan if v is None else v for v in values], dtype=float)
            continue
        if t is FieldType.BOOLEAN:
            values = tuple(None if v is None else bool(v) for v in values)
        fields[k] = np.asarray(values, dtype=object)
    return Frame.from_columns(m.name, tags, fields, np.asarray(cols[0], dtype=np.int64))


def export_lp(path: str, out: BinaryIO) -> int:
    """Write every point of the series file ``path`` to ``out`` as line protocol.

    Returns the number of lines written. The file is opened read-only, so a running server
    may keep writing to it.
    """
    store = SeriesFile(path, readonly=True).open()
    try:
        have = {r[0] for r in store.query("SELECT name FROM sqlite_master WHERE type='table'")}
        lines = 0
        for name in MEASUREMENTS:
            if name not in have:
                continue
            for f in store.frames(name):
                enc = encode_frame(f)
                for b in enc.blocks:
                    out.write(b.body)
                lines += enc.lines
        return lines
    finally:
        store.close()
