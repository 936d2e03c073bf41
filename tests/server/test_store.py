"""The SQLite store: deduplication memory, detections, persistence across reopen."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from models.messages import Detection, SeriesKey
from server.store import Store

KEY = SeriesKey("line1", "coater", "lane03_A", "areal_weight")


def test_mark_seen_reports_duplicates_per_edge() -> None:
    with Store(":memory:") as s:
        assert s.mark_seen("gw1", 1, 0.0)
        assert s.mark_seen("gw1", 2, 0.0)
        assert not s.mark_seen("gw1", 1, 1.0)
        assert s.mark_seen("gw2", 1, 0.0)  # same seq from another edge is new
        assert s.seen_count() == 3


def test_dedup_memory_survives_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "server.sqlite")
    with Store(path) as s:
        assert s.mark_seen("gw1", 41, 0.0)
    with Store(path) as s:
        assert not s.mark_seen("gw1", 41, 0.0)
        mode = s._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_transaction_rolls_back_everything_on_error() -> None:
    with Store(":memory:") as s:
        with pytest.raises(RuntimeError), s.transaction():
            s.mark_seen("gw1", 1, 0.0)
            with s.transaction():  # nested blocks join the outer transaction
                s.mark_seen("gw1", 2, 0.0)
            raise RuntimeError("boom")
        assert s.seen_count() == 0
        assert s.mark_seen("gw1", 1, 0.0)


def test_detections_keep_every_field_and_nan_round_trips() -> None:
    d = Detection(KEY, 12.5, "ewma", 20.9, 20.7, 1, 20.0, math.nan, 'above "ucl"')
    with Store(":memory:") as s:
        s.add_detection("gw1", d, 13.0, None)
        [(edge, got, received)] = s.detections()
    assert (edge, received) == ("gw1", 13.0)
    assert got.key == KEY and got.ts == 12.5 and got.rule == "ewma"
    assert (got.value, got.limit, got.direction, got.center) == (20.9, 20.7, 1, 20.0)
    assert math.isnan(got.sigma) and got.message == 'above "ucl"'
