"""The SQLite store: received and stored envelopes, detections, persistence across reopen."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from models.messages import Detection, SeriesKey
from server.store import Store

KEY = SeriesKey("line1", "coater", "lane03_A", "areal_weight")


def test_received_then_stored_per_edge() -> None:
    with Store(":memory:") as s:
        assert s.mark_received("gw1", 1, 0.0)
        assert not s.mark_received("gw1", 1, 1.0)  # alerts of this envelope are counted
        assert s.mark_received("gw2", 1, 0.0)  # same seq from another edge is new
        assert s.stored_window(100) == []  # received is not stored
        s.mark_stored([("gw1", 1, 0.0), ("gw1", 2, 0.0)])
        assert sorted(s.stored_window(100)) == [("gw1", 1), ("gw1", 2)]
        assert s.seen_count() == 3


def test_stored_window_and_pruning_keep_memory_bounded() -> None:
    with Store(":memory:") as s:
        s.mark_stored([("gw1", q, 0.0) for q in range(1, 101)])
        s.mark_stored([("gw2", q, 0.0) for q in range(1, 6)])
        window = s.stored_window(10)
        assert sorted(q for e, q in window if e == "gw1") == list(range(91, 101))
        assert sorted(q for e, q in window if e == "gw2") == list(range(1, 6))
        assert s.prune_seen("gw1", 90) == 90
        assert s.seen_count() == 15


def test_dedup_memory_survives_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "server.sqlite")
    with Store(path) as s:
        s.mark_stored([("gw1", 41, 0.0)])
        assert s.mark_received("gw1", 42, 0.0)
    with Store(path) as s:
        assert s.stored_window(10) == [("gw1", 41)]
        assert not s.mark_received("gw1", 42, 0.0)
        mode = s._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_a_file_from_before_late_acknowledgement_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE seen (edge_id TEXT NOT NULL, seq INTEGER NOT NULL, "
        "received_ts REAL NOT NULL, PRIMARY KEY (edge_id, seq)) WITHOUT ROWID"
    )
    db.execute("INSERT INTO seen VALUES ('gw1', 5, 0.0)")
    db.commit()
    db.close()
    with Store(str(path)) as s:
        assert s.stored_window(10) == [("gw1", 5)]  # what it had seen was processed then


def test_transaction_rolls_back_everything_on_error() -> None:
    with Store(":memory:") as s:
        with pytest.raises(RuntimeError), s.transaction():
            s.mark_received("gw1", 1, 0.0)
            with s.transaction():  # nested blocks join the outer transaction
                s.mark_received("gw1", 2, 0.0)
            raise RuntimeError("boom")
        assert s.seen_count() == 0
        assert s.mark_received("gw1", 1, 0.0)


def test_detections_keep_every_field_and_nan_round_trips() -> None:
    d = Detection(KEY, 12.5, "ewma", 20.9, 20.7, 1, 20.0, math.nan, 'above "ucl"')
    with Store(":memory:") as s:
        s.add_detection("gw1", d, 13.0, None)
        [(edge, got, received)] = s.detections()
    assert (edge, received) == ("gw1", 13.0)
    assert got.key == KEY and got.ts == 12.5 and got.rule == "ewma"
    assert (got.value, got.limit, got.direction, got.center) == (20.9, 20.7, 1, 20.0)
    assert math.isnan(got.sigma) and got.message == 'above "ucl"'
