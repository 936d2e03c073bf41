"""The alert lifecycle: open, repeat, acknowledge, close, reopen."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator

import pytest

from models.messages import Detection, SeriesKey
from server.alerts import AlertBook, AlertStateError, AlertStatus, UnknownAlertError
from server.store import Store

KEY = SeriesKey("line1", "coater", "lane03_A", "areal_weight")
OTHER = SeriesKey("line1", "coater", "lane04_A", "areal_weight")


def det(ts: float, key: SeriesKey = KEY, rule: str = "ewma", value: float = 20.9) -> Detection:
    return Detection(key, ts, rule, value, 20.7, 1, 20.0, 0.1, f"high at {ts}")


@pytest.fixture
def book() -> Iterator[AlertBook]:
    ticks = itertools.count(1000)
    with Store(":memory:") as store:
        yield AlertBook(store, clock=lambda: float(next(ticks)))


def test_first_detection_opens_an_alert(book: AlertBook) -> None:
    a = book.observe(det(10.0))
    assert a.status is AlertStatus.OPEN
    assert (a.key, a.rule, a.count, a.first_ts, a.last_ts) == (KEY, "ewma", 1, 10.0, 10.0)
    assert (a.last_value, a.limit, a.direction, a.message) == (20.9, 20.7, 1, "high at 10.0")


def test_repeats_increment_the_open_alert(book: AlertBook) -> None:
    first = book.observe(det(10.0))
    book.observe(det(11.0, value=21.0))
    a = book.observe(det(12.0, value=21.2))
    assert a.id == first.id
    assert (a.count, a.first_ts, a.last_ts, a.last_value) == (3, 10.0, 12.0, 21.2)
    assert a.message == "high at 12.0"
    assert len(book.select()) == 1


def test_other_series_or_rule_get_their_own_alerts(book: AlertBook) -> None:
    a = book.observe(det(1.0))
    b = book.observe(det(1.0, key=OTHER))
    c = book.observe(det(1.0, rule="cusum"))
    assert len({a.id, b.id, c.id}) == 3
    assert [x.id for x in book.select()] == [c.id, b.id, a.id]  # newest first


def test_acknowledged_alert_keeps_counting(book: AlertBook) -> None:
    a = book.observe(det(1.0))
    acked = book.acknowledge(a.id)
    assert acked.status is AlertStatus.ACKNOWLEDGED and acked.acked_ts == 1000.0
    again = book.observe(det(2.0))
    assert (again.id, again.count, again.status) == (a.id, 2, AlertStatus.ACKNOWLEDGED)
    assert book.acknowledge(a.id).acked_ts == 1000.0  # acknowledging twice changes nothing


def test_close_then_a_new_detection_opens_a_new_alert(book: AlertBook) -> None:
    a = book.observe(det(1.0))
    closed = book.close(a.id)
    assert closed.status is AlertStatus.CLOSED and closed.closed_ts is not None
    b = book.observe(det(5.0))
    assert b.id != a.id and b.status is AlertStatus.OPEN and b.count == 1
    assert book.get(a.id).count == 1  # the closed one did not count the new detection
    assert [x.id for x in book.select(AlertStatus.OPEN)] == [b.id]
    assert [x.id for x in book.select(AlertStatus.CLOSED)] == [a.id]


def test_closed_alert_cannot_be_acknowledged(book: AlertBook) -> None:
    a = book.observe(det(1.0))
    book.close(a.id)
    with pytest.raises(AlertStateError, match="closed"):
        book.acknowledge(a.id)
    assert book.close(a.id).status is AlertStatus.CLOSED


def test_unknown_ids_raise(book: AlertBook) -> None:
    with pytest.raises(UnknownAlertError, match="42"):
        book.acknowledge(42)
    with pytest.raises(UnknownAlertError):
        book.close(42)


def test_store_refuses_a_second_active_alert_for_a_key(book: AlertBook) -> None:
    book.observe(det(1.0))
    with pytest.raises(sqlite3.IntegrityError):
        book.store.insert_alert(det(2.0))


def test_as_json_is_ready_for_the_api(book: AlertBook) -> None:
    j = book.observe(Detection(KEY, 0.0, "ewma", float("nan"), 20.7, -1, 20.0, 0.1)).as_json()
    assert j["tag"] == "line1/coater/lane03_A/areal_weight"
    assert j["last_value"] is None and j["direction"] == -1
    assert j["first_time"] == "1970-01-01T00:00:00.000+00:00"


def test_an_impossible_device_time_does_not_break_the_alert_views() -> None:
    """A device sending milliseconds where seconds are configured gives ts ~ 1.7e12 (year 55840)."""
    from server.api import _time

    book = AlertBook(Store(":memory:"))
    k = SeriesKey("line1", "coater", "lane03_A", "areal_weight")
    alert = book.observe(Detection(k, 1.7e12, "ewma", 20.9, 20.7, 1, 20.0, 0.1))
    shown = alert.as_json()
    assert shown["first_ts"] == 1.7e12 and shown["first_time"] is None
    assert _time(1.7e12) == "invalid time 1700000000000.0"
