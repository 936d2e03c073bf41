"""The server's SQLite store: envelopes seen, detections received, alerts and their status.

SQLite because the server must keep alerts and its deduplication memory across restarts with
nothing installed, and one file is easy to back up. One connection, used only from the asyncio
thread (every call is a short local transaction, so it does not stall the loop in practice),
in WAL mode so a backup or an inspecting ``sqlite3`` shell can read while the server writes.
`transaction` groups the writes of one envelope, so an envelope is marked received together
with the detections it carried, or not at all; it is marked stored once its points are in the
series store (the memory for deduplication, bounded per edge: `server.dedup`). A partial
unique index keeps at most one active alert per series and rule, whatever the calling code
does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from models.messages import Detection, SeriesKey
from server.alerts import Alert, AlertStatus

__all__ = ["Store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    edge_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    received_ts REAL NOT NULL,
    stored INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (edge_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    line TEXT NOT NULL,
    station TEXT NOT NULL,
    equipment TEXT NOT NULL,
    param TEXT NOT NULL,
    rule TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'acknowledged', 'closed')),
    first_ts REAL NOT NULL,
    last_ts REAL NOT NULL,
    count INTEGER NOT NULL,
    last_value REAL,
    "limit" REAL,
    direction INTEGER NOT NULL,
    message TEXT NOT NULL,
    acked_ts REAL,
    closed_ts REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_active
    ON alerts (line, station, equipment, param, rule) WHERE status != 'closed';
CREATE TABLE IF NOT EXISTS detections (
    id INTEGER PRIMARY KEY,
    edge_id TEXT NOT NULL,
    line TEXT NOT NULL,
    station TEXT NOT NULL,
    equipment TEXT NOT NULL,
    param TEXT NOT NULL,
    ts REAL NOT NULL,
    rule TEXT NOT NULL,
    value REAL,
    "limit" REAL,
    direction INTEGER NOT NULL,
    center REAL,
    sigma REAL,
    message TEXT NOT NULL,
    received_ts REAL NOT NULL,
    alert_id INTEGER REFERENCES alerts (id)
);
CREATE INDEX IF NOT EXISTS detections_by_series
    ON detections (line, station, equipment, param, ts);
"""

_ALERT_COLUMNS = (
    "id, line, station, equipment, param, rule, status, first_ts, last_ts, count, last_value, "
    '"limit", direction, message, acked_ts, closed_ts'
)


def _alert(row: tuple[Any, ...]) -> Alert:
    return Alert(
        id=row[0],
        key=SeriesKey(row[1], row[2], row[3], row[4]),
        rule=row[5],
        status=AlertStatus(row[6]),
        first_ts=row[7],
        last_ts=row[8],
        count=row[9],
        last_value=row[10],
        limit=row[11],
        direction=row[12],
        message=row[13],
        acked_ts=row[14],
        closed_ts=row[15],
    )


class Store:
    """SQLite tables of the server; ``path`` may be ``":memory:"`` for tests.

    Examples:
        >>> with Store(":memory:") as s:
        ...     s.mark_received("gw1", 1, 0.0), s.mark_received("gw1", 1, 0.0)
        (True, False)
    """

    def __init__(self, path: str) -> None:
        self.path = path
        # Autocommit mode: transactions are opened explicitly by `transaction`.
        self._db = sqlite3.connect(path, isolation_level=None)
        self._depth = 0
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(seen)")}
            if "stored" not in columns:  # a file from before envelopes were acknowledged late
                self._db.execute("ALTER TABLE seen ADD COLUMN stored INTEGER NOT NULL DEFAULT 1")
        except sqlite3.Error:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes: all of them are committed, or none if the block raises. Nests."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._depth = 0

    # -- deduplication ---------------------------------------------------------------------

    def mark_received(self, edge_id: str, seq: int, received_ts: float) -> bool:
        """Record that an envelope arrived; False when it arrived before (its alerts counted).

        An envelope is received, then stored (`mark_stored`) once its points are in the series
        store. One received but not stored came before a restart: its detections were applied
        to the alerts then, its points must still be written.
        """
        cur = self._db.execute(
            "INSERT OR IGNORE INTO seen (edge_id, seq, received_ts) VALUES (?, ?, ?)",
            (edge_id, seq, received_ts),
        )
        return cur.rowcount == 1

    def mark_stored(self, keys: list[tuple[str, int, float]]) -> None:
        """Record envelopes ``(edge_id, seq, received_ts)`` whose points are stored."""
        with self.transaction():
            self._db.executemany(
                "INSERT INTO seen (edge_id, seq, received_ts, stored) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (edge_id, seq) DO UPDATE SET stored = 1",
                keys,
            )

    def stored_window(self, window: int) -> list[tuple[str, int]]:
        """Stored envelopes within ``window`` of each edge's highest stored one."""
        return [
            (r[0], int(r[1]))
            for r in self._db.execute(
                "SELECT s.edge_id, s.seq FROM seen s JOIN (SELECT edge_id, max(seq) AS top "
                "FROM seen WHERE stored = 1 GROUP BY edge_id) t ON s.edge_id = t.edge_id "
                "WHERE s.stored = 1 AND s.seq > t.top - ?",
                (window,),
            )
        ]

    def prune_seen(self, edge_id: str, floor: int) -> int:
        """Forget stored envelopes of an edge at or below ``floor``; returns how many."""
        cur = self._db.execute(
            "DELETE FROM seen WHERE edge_id = ? AND seq <= ? AND stored = 1", (edge_id, floor)
        )
        return cur.rowcount

    def seen_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM seen").fetchone()[0])

    # -- detections ----------------------------------------------------------------------------

    def add_detection(
        self, edge_id: str, d: Detection, received_ts: float, alert_id: int | None
    ) -> int:
        """Keep one detection with where it came from and the alert it counted towards."""
        k = d.key
        cur = self._db.execute(
            "INSERT INTO detections (edge_id, line, station, equipment, param, ts, rule, value, "
            '"limit", direction, center, sigma, message, received_ts, alert_id) '
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                edge_id,
                k.line,
                k.station,
                k.equipment,
                k.param,
                d.ts,
                d.rule,
                d.value,
                d.limit,
                d.direction,
                d.center,
                d.sigma,
                d.message,
                received_ts,
                alert_id,
            ),
        )
        return int(cur.lastrowid or 0)

    def detections(self, alert_id: int | None = None) -> list[tuple[str, Detection, float]]:
        """Stored detections in arrival order as ``(edge_id, detection, received_ts)``."""
        sql = (
            'SELECT edge_id, line, station, equipment, param, ts, rule, value, "limit", '
            "direction, center, sigma, message, received_ts FROM detections"
        )
        args: tuple[int, ...] = ()
        if alert_id is not None:
            sql += " WHERE alert_id = ?"
            args = (alert_id,)
        out = []
        for r in self._db.execute(sql + " ORDER BY id", args):
            nan = float("nan")
            d = Detection(
                SeriesKey(r[1], r[2], r[3], r[4]),
                r[5],
                r[6],
                nan if r[7] is None else r[7],
                nan if r[8] is None else r[8],
                r[9],
                nan if r[10] is None else r[10],
                nan if r[11] is None else r[11],
                r[12],
            )
            out.append((r[0], d, r[13]))
        return out

    # -- alerts --------------------------------------------------------------------------------

    def alert(self, alert_id: int) -> Alert | None:
        row = self._db.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = ?", (alert_id,)
        ).fetchone()
        return None if row is None else _alert(row)

    def active_alert(self, key: SeriesKey, rule: str) -> Alert | None:
        """The open or acknowledged alert of a series and rule, if any."""
        row = self._db.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE line = ? AND station = ? "
            "AND equipment = ? AND param = ? AND rule = ? AND status != 'closed'",
            (key.line, key.station, key.equipment, key.param, rule),
        ).fetchone()
        return None if row is None else _alert(row)

    def insert_alert(self, d: Detection) -> Alert:
        """A new open alert started by its first detection."""
        k = d.key
        cur = self._db.execute(
            "INSERT INTO alerts (line, station, equipment, param, rule, status, first_ts, "
            'last_ts, count, last_value, "limit", direction, message) '
            "VALUES (?, ?, ?, ?, ?, 'open', ?, ?, 1, ?, ?, ?, ?)",
            (
                k.line,
                k.station,
                k.equipment,
                k.param,
                d.rule,
                d.ts,
                d.ts,
                d.value,
                d.limit,
                d.direction,
                d.message,
            ),
        )
        return self._must(int(cur.lastrowid or 0))

    def repeat_alert(self, alert_id: int, d: Detection) -> Alert:
        """Count one more detection on an alert and keep its latest value and message."""
        self._db.execute(
            "UPDATE alerts SET count = count + 1, last_ts = max(last_ts, ?), "
            'first_ts = min(first_ts, ?), last_value = ?, "limit" = ?, direction = ?, '
            "message = ? WHERE id = ?",
            (d.ts, d.ts, d.value, d.limit, d.direction, d.message, alert_id),
        )
        return self._must(alert_id)

    def set_alert_status(self, alert_id: int, status: AlertStatus, ts: float) -> Alert:
        """Move an alert to ``status``, stamping when it was acknowledged or closed."""
        column = "acked_ts" if status is AlertStatus.ACKNOWLEDGED else "closed_ts"
        self._db.execute(
            f"UPDATE alerts SET status = ?, {column} = ? WHERE id = ?",
            (status.value, ts, alert_id),
        )
        return self._must(alert_id)

    def alerts(self, status: AlertStatus | None = None) -> list[Alert]:
        """Alerts, newest first (by id, which grows with every alert opened)."""
        sql = f"SELECT {_ALERT_COLUMNS} FROM alerts"
        args: tuple[str, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            args = (status.value,)
        return [_alert(r) for r in self._db.execute(sql + " ORDER BY id DESC", args)]

    def _must(self, alert_id: int) -> Alert:
        alert = self.alert(alert_id)
        if alert is None:  # pragma: no cover - the row was written in this same call
            raise LookupError(f"alert {alert_id} vanished")
        return alert
