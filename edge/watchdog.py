"""Watchdogs of a subscription and of its nodes, and the escalation ladder they drive.

A collector that looks connected but ingests nothing is the most common complaint about OPC UA
collectors (subscriptions that stay silent after a server restart or a network hiccup). Two
silences are told apart here:

* the subscription's: neither data nor a keepalive arrived within the keepalive deadline, so
  the server (or the session, or the link) has lost it; `keepalive_deadline` gives that time;
* a node's: keepalives keep coming but one node delivers no new sample for ``stale_after_s``
  (a frozen PLC tag, a stuck driver); `StaleWatchdog` marks it and counts it.

Either can ask the `Escalation` ladder for the next action: resubscribe, then a new session on
the same client, then a new client (asyncua's reconnect of one client object can hang, so the
last rung throws the client away). Fresh data resets the ladder.

Pure logic: the clock (monotonic seconds) is passed in, so all of it is tested without servers.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

__all__ = ["Action", "Escalation", "StaleWatchdog", "keepalive_deadline"]

#: Grace beyond the keepalive interval, at least: servers send keepalives late by a few
#: intervals under load, and a busy event loop can stall a few hundred milliseconds; neither
#: must look like a dead subscription.
MIN_GRACE_S = 0.5


def keepalive_deadline(publishing_interval_ms: float, keepalive_count: int) -> float:
    """Seconds after the last publish response at which a subscription counts as dead.

    The server sends a keepalive after ``keepalive_count`` publishing intervals without data;
    two more intervals (at least `MIN_GRACE_S`) are allowed for lateness and transit.

    Examples:
        >>> keepalive_deadline(250, 10)
        3.0
        >>> keepalive_deadline(50, 3)
        0.65
    """
    interval = publishing_interval_ms / 1000.0
    return round(keepalive_count * interval + max(2 * interval, MIN_GRACE_S), 6)


class Action(StrEnum):
    """A rung of the escalation ladder, mildest first."""

    RESUBSCRIBE = "resubscribe"
    NEW_SESSION = "new session"
    NEW_CLIENT = "new client"


_LADDER = (Action.RESUBSCRIBE, Action.NEW_SESSION, Action.NEW_CLIENT)


class Escalation:
    """Which recovery to try next: each trigger climbs one rung, the top rung repeats.

    `healthy` (fresh data arrived) starts over at the bottom, and so does a trigger that comes
    more than ``reset_after_s`` after the previous action, because then the earlier action
    evidently worked for a while.

    Examples:
        >>> e = Escalation(reset_after_s=300)
        >>> [e.next(t).value for t in (0, 1, 2, 3)]
        ['resubscribe', 'new session', 'new client', 'new client']
        >>> e.healthy(); e.next(4).value
        'resubscribe'
        >>> e.next(400).value
        'resubscribe'
    """

    def __init__(self, reset_after_s: float = 300.0) -> None:
        self.reset_after_s = reset_after_s
        self.level = 0
        self.last_action_at: float | None = None

    def next(self, now: float) -> Action:
        if self.last_action_at is not None and now - self.last_action_at > self.reset_after_s:
            self.level = 0
        action = _LADDER[min(self.level, len(_LADDER) - 1)]
        self.level += 1
        self.last_action_at = now
        return action

    def healthy(self) -> None:
        self.level = 0


class StaleWatchdog:
    """Per-node liveness: a node is stale once its limit passes without a new sample.

    ``limits`` maps the handles of watched nodes to their ``stale_after_s``; other handles are
    ignored. `seen` records a new sample (and says whether the node was stale until then),
    `check` returns the handles that went stale since the last check. `all_stale` is true when
    every watched node is stale, no earlier than one limit after `restart` (a new subscription
    gets a full period to deliver before it is judged).

    Examples:
        >>> w = StaleWatchdog({1: 5.0, 2: 5.0}, now=0.0)
        >>> w.check(4.0), w.check(6.0), w.all_stale(6.0)
        ([], [1, 2], True)
        >>> w.seen(1, 7.0), sorted(w.stale), w.all_stale(7.0)
        (True, [2], False)
    """

    def __init__(self, limits: dict[int, float], now: float) -> None:
        self._limits = dict(limits)
        self.active: dict[int, float] = dict(self._limits)
        self.stale: set[int] = set()
        self._seen = dict.fromkeys(self.active, now)
        self._judge_after = now + max(self.active.values(), default=0.0)

    def __bool__(self) -> bool:
        return bool(self.active)

    def seen(self, handle: int, now: float) -> bool:
        if handle not in self._seen:
            return False
        self._seen[handle] = now
        if handle in self.stale:
            self.stale.discard(handle)
            return True
        return False

    def check(self, now: float) -> list[int]:
        limits = self.active
        newly = [
            h for h, last in self._seen.items() if h not in self.stale and now - last > limits[h]
        ]
        self.stale.update(newly)
        return newly

    def all_stale(self, now: float) -> bool:
        return (
            bool(self.active) and now >= self._judge_after and len(self.stale) == len(self.active)
        )

    def restart(self, now: float, handles: Iterable[int]) -> None:
        """A new subscription holding ``handles``: watch those of them that have a limit, and
        judge them (and `all_stale`) again only after a full period, since a reconnect
        gap is not the node's fault. Stale marks stay until the node delivers.
        """
        self.active = {h: self._limits[h] for h in handles if h in self._limits}
        self._seen = dict.fromkeys(self.active, now)
        self.stale &= set(self.active)
        self._judge_after = now + max(self.active.values(), default=0.0)
