"""Which envelopes are stored already, per edge, in bounded memory.

QoS 1 delivers at least once, so the server deduplicates on ``(edge_id, seq)``. An edge's
sequence numbers only grow (`edge.outbox` never reuses one, across restarts too) and the
broker delivers an edge's messages in order, redelivering unacknowledged ones first after a
reconnect. So per edge it is enough to keep the highest stored number and the stored numbers
within ``window`` below it: anything older than the window is taken as stored. Memory is
then at most ``2 * window`` numbers per edge, whatever the traffic, and the store keeps the
same window on disk (`server.store.Store.stored_window`) so a restart remembers it.

Examples:
    >>> d = Dedup(window=4)
    >>> d.add("gw1", 10); d.add("gw1", 12)
    >>> d.seen("gw1", 10), d.seen("gw1", 11), d.seen("gw1", 7), d.seen("gw2", 10)
    (True, False, True, False)
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["Dedup"]


class Dedup:
    """Per edge: the highest stored sequence number and the stored ones in a window below."""

    def __init__(self, window: int = 4096) -> None:
        if window < 1:
            raise ValueError(f"window must be a positive number of envelopes, got {window}")
        self.window = window
        self._high: dict[str, int] = {}
        self._recent: dict[str, set[int]] = {}

    def seen(self, edge_id: str, seq: int) -> bool:
        """True when ``(edge_id, seq)`` was stored (or is older than the window)."""
        high = self._high.get(edge_id)
        if high is None:
            return False
        return seq <= high - self.window or seq in self._recent[edge_id]

    def add(self, edge_id: str, seq: int) -> None:
        """Remember that ``(edge_id, seq)`` is stored."""
        high = self._high.get(edge_id)
        recent = self._recent.setdefault(edge_id, set())
        if high is None or seq > high:
            self._high[edge_id] = high = seq
        recent.add(seq)
        if len(recent) > 2 * self.window:
            floor = high - self.window
            self._recent[edge_id] = {s for s in recent if s > floor}

    def load(self, rows: Iterable[tuple[str, int]]) -> None:
        """Remember stored envelopes read back from the store at start."""
        for edge_id, seq in rows:
            self.add(edge_id, seq)

    def floor(self, edge_id: str) -> int | None:
        """Sequence numbers at or below this are taken as stored (None: nothing yet)."""
        high = self._high.get(edge_id)
        return None if high is None else high - self.window

    def __len__(self) -> int:
        return sum(len(s) for s in self._recent.values())
