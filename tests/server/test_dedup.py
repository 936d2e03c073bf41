"""Deduplication memory: exact within the window, bounded whatever the traffic."""

from __future__ import annotations

import pytest

from server.dedup import Dedup


def test_stored_numbers_are_recognised_per_edge() -> None:
    d = Dedup(window=100)
    for seq in (5, 6, 8):
        d.add("gw1", seq)
    assert [d.seen("gw1", s) for s in (5, 6, 7, 8, 9)] == [True, True, False, True, False]
    assert not d.seen("gw2", 5)


def test_late_arrivals_inside_the_window_are_new_older_ones_are_taken_as_stored() -> None:
    d = Dedup(window=10)
    d.add("gw1", 100)
    assert not d.seen("gw1", 95)  # a redelivery that overtook nothing yet: still new
    assert d.seen("gw1", 90)  # 10 or more behind the highest: taken as stored
    assert d.floor("gw1") == 90 and d.floor("gw2") is None


def test_memory_stays_bounded_over_a_million_envelopes() -> None:
    d = Dedup(window=64)
    for seq in range(1_000_000):
        d.add("gw1", seq)
    assert len(d) <= 2 * 64
    assert d.seen("gw1", 999_999) and d.seen("gw1", 5) and not d.seen("gw1", 1_000_000)


def test_sequence_jumps_of_a_fresh_outbox_are_fine() -> None:
    """A fresh edge outbox starts at microseconds since the epoch: a large jump forward."""
    d = Dedup(window=8)
    d.add("gw1", 3)
    d.add("gw1", 1_700_000_000_000_000)
    assert d.seen("gw1", 3) and not d.seen("gw1", 1_700_000_000_000_001)


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window must be a positive number"):
        Dedup(window=0)
