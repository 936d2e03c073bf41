"""The alert lifecycle: detections open alerts, people acknowledge and close them.

A detector signals on every out-of-control sample, so a drifting series produces a stream of
detections; people need one alert per problem, not one per sample. An alert is therefore keyed
by ``(series, rule)``: the first detection opens it, later ones raise its count and move its
last time while it is active (open or acknowledged: acknowledging means "someone is on it", not
"it is over"), and only after it is closed does a new detection open a new alert. The logic is
pure over `server.store.Store`, which keeps at most one active alert per key.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from models.messages import Detection, SeriesKey

if TYPE_CHECKING:
    from server.store import Store

__all__ = ["Alert", "AlertBook", "AlertStateError", "AlertStatus", "UnknownAlertError"]


class AlertStatus(StrEnum):
    """Where an alert stands; ``open`` and ``acknowledged`` are both active."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"


class UnknownAlertError(LookupError):
    """No alert has the given id."""


class AlertStateError(ValueError):
    """The transition is not allowed from the alert's current status."""


def _iso(ts: float | None) -> str | None:
    """ISO 8601 UTC, or None for a time no calendar can show (a device clock gone wrong)."""
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    except (OverflowError, ValueError, OSError):
        return None


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as stored; ``count`` is the number of detections it gathered.

    Examples:
        >>> k = SeriesKey("line1", "coater", "lane03_A", "areal_weight")
        >>> a = Alert(1, k, "ewma", AlertStatus.OPEN, 10.0, 12.0, 3, 20.9, 20.7, 1, "high")
        >>> a.as_json()["tag"]
        'line1/coater/lane03_A/areal_weight'
    """

    id: int
    key: SeriesKey
    rule: str
    status: AlertStatus
    first_ts: float
    last_ts: float
    count: int
    last_value: float | None
    limit: float | None
    direction: int
    message: str
    acked_ts: float | None = None
    closed_ts: float | None = None

    @property
    def active(self) -> bool:
        return self.status is not AlertStatus.CLOSED

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite numbers as null, times also as ISO 8601 UTC)."""
        k = self.key
        return {
            "id": self.id,
            "tag": str(k),
            "line": k.line,
            "station": k.station,
            "equipment": k.equipment,
            "param": k.param,
            "rule": self.rule,
            "status": self.status.value,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "first_time": _iso(self.first_ts),
            "last_time": _iso(self.last_ts),
            "count": self.count,
            "last_value": _num(self.last_value),
            "limit": _num(self.limit),
            "direction": self.direction,
            "message": self.message,
            "acked_ts": self.acked_ts,
            "closed_ts": self.closed_ts,
        }


class AlertBook:
    """Applies detections and people's decisions to the alerts in a store.

    ``clock`` stamps acknowledgements and closures (wall time, seconds since the epoch); alert
    first and last times are the detections' own sample times.

    Examples:
        >>> from server.store import Store
        >>> book = AlertBook(Store(":memory:"))
        >>> k = SeriesKey("line1", "coater", "lane03_A", "areal_weight")
        >>> d = Detection(k, 5.0, "ewma", 20.9, 20.7, 1, 20.0, 0.1)
        >>> book.observe(d).count, book.observe(d).count
        (1, 2)
        >>> book.close(1).status
        <AlertStatus.CLOSED: 'closed'>
        >>> book.observe(d).id
        2
        >>> book.store.close()
    """

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock

    def observe(self, d: Detection) -> Alert:
        """Open an alert for the detection's series and rule, or count it on the active one."""
        current = self.store.active_alert(d.key, d.rule)
        if current is None:
            return self.store.insert_alert(d)
        return self.store.repeat_alert(current.id, d)

    def get(self, alert_id: int) -> Alert:
        alert = self.store.alert(alert_id)
        if alert is None:
            raise UnknownAlertError(f"no alert with id {alert_id}")
        return alert

    def acknowledge(self, alert_id: int) -> Alert:
        """Mark an open alert as being dealt with; acknowledging twice changes nothing."""
        alert = self.get(alert_id)
        if alert.status is AlertStatus.CLOSED:
            raise AlertStateError(f"alert {alert_id} is closed and cannot be acknowledged")
        if alert.status is AlertStatus.ACKNOWLEDGED:
            return alert
        return self.store.set_alert_status(alert_id, AlertStatus.ACKNOWLEDGED, self._clock())

    def close(self, alert_id: int) -> Alert:
        """Close an alert (from open or acknowledged); closing twice changes nothing."""
        alert = self.get(alert_id)
        if alert.status is AlertStatus.CLOSED:
            return alert
        return self.store.set_alert_status(alert_id, AlertStatus.CLOSED, self._clock())

    def select(self, status: AlertStatus | None = None) -> list[Alert]:
        """Alerts, newest first, all or those with one status."""
        return self.store.alerts(status)
