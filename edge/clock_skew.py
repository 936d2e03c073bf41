"""Clock skew of a device against the gateway, from the timestamps of live samples.

Readings carry the device's source timestamp as their time, so a PLC clock that runs minutes
off puts every sample at the wrong place on a chart without any error anywhere. The skew is
estimated as the median of ``source_ts - received_ts`` over the last live samples: positive
when the device's clock runs ahead of the gateway's. The difference also holds the transit time
(sampling to publish to receipt, at most about one publishing interval), so the estimate reads
a little low by that; the median keeps a single odd timestamp from moving it. Samples that are
not live (the initial value of a new subscription, backfilled history) say nothing about the
clock and must not be fed in.

One node can be off on its own (a sensor or a sub-PLC with its own clock behind a gateway
server): each node's offset is also smoothed (exponentially, weight `ALPHA`) and compared with
the source's median; a node further off than the limit is named in the log.

Warnings are logged once when an estimate leaves ``warn_s`` and once when it comes back, not
per sample.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Hashable

__all__ = ["SkewEstimator"]

#: Live samples the median is taken over.
WINDOW = 255
#: Weight of a new sample in a node's smoothed offset.
ALPHA = 0.1
#: Seconds between two checks of the per-node offsets (a scan over every node).
NODE_CHECK_S = 1.0


class SkewEstimator:
    """Running median of clock offsets with logged thresholds; see the module docstring.

    Examples:
        >>> est = SkewEstimator("plc", warn_s=2.0, log=logging.getLogger("doctest"))
        >>> for off in (30.1, 29.9, 30.0, -500.0):
        ...     est.add(off)
        >>> est.update(0.0), est.exceeded
        (29.95, True)
    """

    def __init__(
        self,
        source_id: str,
        warn_s: float,
        log: logging.Logger,
        name: Callable[[Hashable], str] = str,
    ) -> None:
        self.source_id = source_id
        self.warn_s = warn_s
        self.log = log
        self.name = name
        self.exceeded = False
        self.estimate: float | None = None
        #: Nodes whose own offset is off the source's by more than ``warn_s`` now.
        self.off: dict[Hashable, float] = {}
        self._offsets: deque[float] = deque(maxlen=WINDOW)
        self._per_key: dict[Hashable, float] = {}
        self._added = 0
        self._checked = -1e18

    def add(self, offset_s: float, key: Hashable | None = None) -> None:
        """One live sample's ``source_ts - received_ts`` (of node ``key``, when given)."""
        self._offsets.append(offset_s)
        self._added += 1
        if key is not None:
            prev = self._per_key.get(key)
            self._per_key[key] = offset_s if prev is None else prev + ALPHA * (offset_s - prev)

    def update(self, now: float) -> float | None:
        """Recompute the estimate (when new samples came) and log threshold crossings;
        ``now`` (monotonic seconds) paces the per-node check."""
        if self._added:
            self._added = 0
            self._source()
        if self.estimate is not None and now - self._checked >= NODE_CHECK_S:
            self._checked = now
            self._nodes(self.estimate)
        return self.estimate

    def _source(self) -> None:
        ordered = sorted(self._offsets)
        n = len(ordered)
        mid = n // 2
        median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
        self.estimate = round(median, 3)
        over = abs(median) > self.warn_s
        if over and not self.exceeded:
            side = "ahead of" if median > 0 else "behind"
            self.log.warning(
                "source %s: the device clock runs %.3f s %s the gateway's (median of the last "
                "%d samples; the limit is %.3g s); its readings carry the device's timestamps",
                self.source_id, abs(median), side, n, self.warn_s,
            )  # fmt: skip
        elif self.exceeded and not over:
            self.log.info(
                "source %s: device clock skew back within %.3g s (%.3f s)",
                self.source_id, self.warn_s, median,
            )  # fmt: skip
        self.exceeded = over

    def _nodes(self, median: float) -> None:
        for key, offset in self._per_key.items():
            off = abs(offset - median) > self.warn_s
            if off and key not in self.off:
                self.log.warning(
                    "source %s: timestamps of %s run %.3f s off the source's clock (%.3f s "
                    "against the gateway; the limit is %.3g s)",
                    self.source_id, self.name(key), offset - median, offset, self.warn_s,
                )  # fmt: skip
            elif not off and key in self.off:
                self.log.info(
                    "source %s: timestamps of %s back in line", self.source_id, self.name(key)
                )
            if off:
                self.off[key] = offset
            else:
                self.off.pop(key, None)
