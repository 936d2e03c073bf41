"""Prometheus metrics of one gateway, served on ``/metrics`` from a registry of its own.

The scrape runs on the HTTP server's thread, but the sources, the monitor and the outbox
belong to the event loop (an SQLite outbox cannot even be read from another thread). So the
agent hands `EdgeMetrics` an immutable `Snapshot` from the loop after every window, and a
scrape reads only the latest snapshot: values are at most one window old, and a scrape can
never race the loop or slow it down. The window duration is a histogram observed on the loop
(prometheus-client locks it). Each agent has its own `CollectorRegistry`, so several agents
(tests, or two gateways in one process) never share or clash over metric names.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Histogram, start_wsgi_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from models.messages import EdgeStatus

__all__ = ["EdgeMetrics", "Snapshot"]

#: Window durations worth telling apart: a healthy window takes milliseconds; one near
#: ``window_s`` means the gateway cannot keep up.
WINDOW_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The agent's counters at the end of one window.

    ``status`` is a health report (per source counters, outbox); ``detections`` counts per
    rule; ``excluded`` samples left out of the statistics (bad or uncertain quality,
    non-finite), ``refused`` readings of undeclared parameters or without a valid time,
    ``windows`` cut so far, ``window_errors`` of them that failed and ``fit_errors`` Phase I
    baselines rejected.
    """

    status: EdgeStatus
    detections: tuple[tuple[str, int], ...] = ()
    excluded: int = 0
    refused: int = 0
    windows: int = 0
    window_errors: int = 0
    fit_errors: int = 0


class EdgeMetrics:
    """The metrics of one agent: `update` from the loop, `serve` to expose them over HTTP.

    Examples:
        >>> from prometheus_client import generate_latest
        >>> from models.messages import EdgeStatus, SourceStatus
        >>> m = EdgeMetrics("gw1")
        >>> m.update(Snapshot(EdgeStatus(0.0, 1.0, (SourceStatus("plc", "connected", 42),))))
        >>> 'cellwatch_edge_source_readings_total{source="plc"} 42.0' in generate_latest(
        ...     m.registry).decode()
        True
    """

    def __init__(self, edge_id: str) -> None:
        self.edge_id = edge_id
        self.registry = CollectorRegistry()
        self.window_seconds = Histogram(
            "cellwatch_edge_window_seconds",
            "Time one framing window took: framing, detection and handing envelopes to the outbox.",
            buckets=WINDOW_BUCKETS,
            registry=self.registry,
        )
        self._snapshot: Snapshot | None = None
        self.registry.register(_SnapshotCollector(self))
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    def update(self, snapshot: Snapshot) -> None:
        """Publish a new snapshot (one reference swap; safe while a scrape runs)."""
        self._snapshot = snapshot

    def observe_window(self, seconds: float) -> None:
        self.window_seconds.observe(seconds)

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` (0: any free port) from a daemon thread; returns
        the port. Raises `OSError` when the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError("metrics are already served")
        self._server, self._thread = start_wsgi_server(port, host, self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving (blocks for up to half a second while the server notices)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(5.0)


class _SnapshotCollector(Collector):
    """Turns the latest snapshot into metric families at scrape time."""

    def __init__(self, owner: EdgeMetrics) -> None:
        self._owner = owner

    def describe(self) -> Iterable[Metric]:
        return []  # families depend on the snapshot; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        snap = self._owner.snapshot
        info = GaugeMetricFamily(
            "cellwatch_edge_info", "The gateway this agent runs as.", labels=["edge"]
        )
        info.add_metric([self._owner.edge_id], 1.0)
        yield info
        if snap is None:
            return
        yield from _sources(snap.status)
        yield from _outbox(snap.status)
        det = CounterMetricFamily(
            "cellwatch_edge_detections", "Detections emitted, per rule.", labels=["rule"]
        )
        for rule, n in snap.detections:
            det.add_metric([rule], n)
        yield det
        for name, doc, value in (
            (
                "excluded",
                "Samples left out of the statistics: bad or uncertain quality, or a "
                "value that is not a finite number.",
                snap.excluded,
            ),
            (
                "refused",
                "Readings refused before framing: undeclared parameter or no valid time.",
                snap.refused,
            ),
            ("windows", "Framing windows cut.", snap.windows),
            ("window_errors", "Framing windows that failed (logged).", snap.window_errors),
            (
                "fit_errors",
                "Phase I baselines rejected (flat signal) and collected again.",
                snap.fit_errors,
            ),
        ):
            yield CounterMetricFamily(f"cellwatch_edge_{name}", doc, value=value)
        yield GaugeMetricFamily(
            "cellwatch_edge_uptime_seconds",
            "Seconds since the agent started.",
            value=snap.status.uptime_s,
        )


def _sources(status: EdgeStatus) -> Iterable[Metric]:
    counters = {
        "readings": "Readings taken from the source.",
        "rejected": "Inputs the source refused (malformed payloads, unknown aliases, a full "
        "queue), each counted and logged.",
        "bad_quality": "Readings of bad or uncertain quality (forwarded, kept out of the "
        "statistics).",
        "reconnects": "Connections re-established after a loss.",
        "backfilled": "Readings recovered from the device's history after a gap.",
    }
    for name, doc in counters.items():
        fam = CounterMetricFamily(f"cellwatch_edge_source_{name}", doc, labels=["source"])
        for s in status.sources:
            fam.add_metric([s.source], getattr(s, name))
        yield fam
    gauges: dict[str, tuple[str, str]] = {
        "stale": ("stale", "Nodes or topics silent past their watchdog now."),
        "connected": ("state", "1 while the source is connected, else 0."),
        "lag_seconds": ("lag_s", "Age of the newest reading."),
        "clock_skew_seconds": (
            "clock_skew_s",
            "How far the device clock runs ahead of the gateway's.",
        ),
    }
    for name, (attr, doc) in gauges.items():
        gauge = GaugeMetricFamily(f"cellwatch_edge_source_{name}", doc, labels=["source"])
        for s in status.sources:
            value = getattr(s, attr)
            if attr == "state":
                value = 1.0 if value == "connected" else 0.0
            if value is not None:
                gauge.add_metric([s.source], float(value))
        yield gauge


def _outbox(status: EdgeStatus) -> Iterable[Metric]:
    yield CounterMetricFamily(
        "cellwatch_edge_published", "Envelopes the broker acknowledged.", value=status.published
    )
    yield CounterMetricFamily(
        "cellwatch_edge_dropped",
        "Envelopes the outbox dropped to stay within its bound (each counted and logged).",
        value=status.dropped,
    )
    yield GaugeMetricFamily(
        "cellwatch_edge_outbox_pending", "Envelopes waiting for the broker.", value=status.pending
    )
    yield GaugeMetricFamily(
        "cellwatch_edge_outbox_bytes", "Bytes of the envelopes waiting.", value=status.outbox_bytes
    )
    if status.lag_s is not None:
        yield GaugeMetricFamily(
            "cellwatch_edge_outbox_lag_seconds",
            "Age of the oldest envelope waiting.",
            value=status.lag_s,
        )
