"""OPC UA source: one subscription per server, every configured node as a monitored item.

Node ids and browse names are written relative to a namespace URI, and the URI is resolved to
an index at every connect, because a server may number its namespaces differently after a
restart. All nodes go into one subscription with one CreateMonitoredItems call; each item asks
for a queue and the StatusValueTimestamp trigger, so a sample that repeats the previous value
still arrives (equal consecutive measurements are data, not noise). The OPC UA status code
becomes the reading's quality; the source timestamp is the reading's time.

Reconnecting is done here rather than by asyncua's own supervisor so that namespaces and paths
are resolved again on every connect. A failed or lost connection is logged, shown in
`status()`, and retried with a backoff capped at five seconds until the source is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from numbers import Real
from typing import Any, Self

from asyncua import Client, ua
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeEvent, OverflowPolicy, StatusChangeEvent

from edge.source import QueuedSource
from models import plant
from models.messages import Quality, Reading, SeriesKey

__all__ = ["OpcUaSource", "quality_of"]

log = logging.getLogger("cellwatch.edge.opcua")

#: Samples the server may queue per node between two publishes (fast sampling, slow publish).
ITEM_QUEUE_SIZE = 1000
#: Notifications asyncua buffers for us; the pump moves them on at once, so this only fills
#: when the event loop is starved, and then asyncua logs what it drops.
SUBSCRIPTION_BUFFER = 100_000
FIRST_RETRY_S = 0.5
MAX_RETRY_S = 5.0


def quality_of(status: ua.StatusCode | None) -> Quality:
    """Map an OPC UA status code onto a quality by its severity bits (a missing code is Good)."""
    if status is None or status.is_good():
        return Quality.GOOD
    if status.is_uncertain():
        return Quality.UNCERTAIN
    return Quality.BAD


def _epoch(dt: datetime | None) -> float | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass(frozen=True, slots=True)
class _Item:
    """A subscribed node: what it was configured as and where its readings go."""

    node: plant.OpcUaNode
    key: SeriesKey
    where: str


class OpcUaSource(QueuedSource):
    """Readings from the nodes of one OPC UA server; see the module docstring.

    ``unresolved`` is the number of configured nodes that could not be found at the last
    connect (each is logged with the source id and its path).
    """

    def __init__(self, cfg: plant.OpcUaSource, queue_size: int | None = None) -> None:
        super().__init__(cfg.id, log, *(() if queue_size is None else (queue_size,)))
        self.cfg = cfg
        self.unresolved = 0
        self.connects = 0
        self._task: asyncio.Task[None] | None = None
        self._last_ts: dict[int, float] = {}
        self._fresh: set[int] = set()

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=f"opcua-{self.id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._close_stream()

    # -- connection loop --------------------------------------------------------------------

    async def _run(self) -> None:
        delay = FIRST_RETRY_S
        while True:
            self.state = "connecting"
            try:
                await self._session()
                reason = self.last_error or "connection lost"
            except asyncio.CancelledError:
                raise
            except Exception as e:  # any failure means: log, wait, retry
                reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                self.last_error = reason
            if self.state == "connected":
                delay = FIRST_RETRY_S
            self.state = "disconnected"
            log.warning(
                "source %s (%s): %s; retrying in %.1f s", self.id, self.cfg.endpoint, reason, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_S)

    async def _session(self) -> None:
        """One connection: connect, resolve, subscribe, pump until the connection is lost."""
        client = Client(self.cfg.endpoint, timeout=self.cfg.timeout_s)
        lost = asyncio.Event()

        async def on_lost(exc: Exception) -> None:
            self.last_error = f"connection lost: {exc}"
            lost.set()

        client.connection_lost_callback = on_lost
        tasks: list[asyncio.Task[Any]] = []
        try:
            await asyncio.wait_for(client.connect(), self.cfg.timeout_s)
            items = await self._resolve(client)
            sub = await client.create_subscription(
                self.cfg.publishing_interval_ms,
                None,
                queue_maxsize=SUBSCRIPTION_BUFFER,
                overflow=OverflowPolicy.WARN,
            )
            handles = list(items)
            results = await sub.create_monitored_items([items[h][1] for h in handles])
            by_handle: dict[int, _Item] = {}
            for h, res in zip(handles, results, strict=True):
                item = items[h][0]
                if isinstance(res, ua.StatusCode):
                    self._unresolved(item.where, f"server refused to monitor it: {res.name}")
                else:
                    by_handle[h] = item
            self._fresh = set(by_handle)
            self.state = "connected"
            self.connects += 1
            if self.unresolved == 0:
                self.last_error = ""
            log.info(
                "source %s connected to %s: %d of %d nodes subscribed",
                self.id, self.cfg.endpoint, len(by_handle), len(self.cfg.nodes),
            )
            tasks = [
                asyncio.create_task(self._pump(sub, by_handle)),
                asyncio.create_task(lost.wait()),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()  # re-raise what ended the pump
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), self.cfg.timeout_s)

    async def _resolve(
        self, client: Client
    ) -> dict[int, tuple[_Item, ua.MonitoredItemCreateRequest]]:
        """Nodes of the config as monitored-item requests keyed by their client handle."""
        self.unresolved = 0
        uri = self.cfg.namespace_uri
        idx = 0
        if uri is not None:
            try:
                idx = await client.get_namespace_index(uri)
            except ValueError:
                raise LookupError(f"namespace {uri!r} is not on the server") from None
        objects = client.nodes.objects
        out: dict[int, tuple[_Item, ua.MonitoredItemCreateRequest]] = {}
        for i, n in enumerate(self.cfg.nodes):
            key = SeriesKey(self.cfg.line, self.cfg.station, n.equipment, n.param)
            where = (
                f"node_id {n.node_id}" if n.node_id is not None else f"browse_path {n.browse_path}"
            )
            try:
                node = await self._node(client, objects, n, idx)
            except Exception as e:  # a bad path must not stop the other nodes
                self._unresolved(where, f"{type(e).__name__}: {e}")
                continue
            handle = i + 1
            out[handle] = (_Item(n, key, where), self._request(node, handle))
        return out

    async def _node(self, client: Client, objects: Node, n: plant.OpcUaNode, idx: int) -> Node:
        if n.node_id is not None:
            nid = n.node_id
            if self.cfg.namespace_uri is not None and not nid.startswith(("ns=", "nsu=")):
                nid = f"ns={idx};{nid}"
            return client.get_node(ua.NodeId.from_string(nid))
        assert n.browse_path is not None
        names = [ua.QualifiedName(part, idx) for part in n.browse_path.split("/") if part]
        return await objects.get_child(names)

    def _request(self, node: Node, handle: int) -> ua.MonitoredItemCreateRequest:
        params = ua.MonitoringParameters()
        params.ClientHandle = handle
        params.SamplingInterval = 0.0
        params.QueueSize = ITEM_QUEUE_SIZE
        params.DiscardOldest = True
        params.Filter = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValueTimestamp)
        req = ua.MonitoredItemCreateRequest()
        req.ItemToMonitor = ua.ReadValueId(NodeId=node.nodeid, AttributeId=ua.AttributeIds.Value)
        req.MonitoringMode = ua.MonitoringMode.Reporting
        req.RequestedParameters = params
        return req

    def _unresolved(self, where: str, why: str) -> None:
        self.unresolved += 1
        self.last_error = f"{self.unresolved} node(s) not found, last: {where}"
        log.error("source %s: cannot subscribe %s: %s", self.id, where, why)

    # -- data -------------------------------------------------------------------------------

    async def _pump(self, sub: Any, by_handle: dict[int, _Item]) -> None:
        async for ev in sub:
            if isinstance(ev, DataChangeEvent):
                item = by_handle.get(ev.data.monitored_item.ClientHandle)
                if item is not None:
                    self._on_change(ev.data.monitored_item.ClientHandle, item, ev)
            elif isinstance(ev, StatusChangeEvent) and ev.notification.Status.is_bad():
                raise ConnectionError(f"subscription ended with status {ev.notification.Status}")

    def _on_change(self, handle: int, item: _Item, ev: DataChangeEvent) -> None:
        dv = ev.data.monitored_item.Value
        now = time.time()
        if dv is None:
            dv = ua.DataValue()
        quality = quality_of(dv.StatusCode)
        src_ts = _epoch(dv.SourceTimestamp)
        ts = src_ts if src_ts is not None else _epoch(dv.ServerTimestamp)
        if ts is None:
            ts = now
        if handle in self._fresh:
            self._fresh.discard(handle)
            if src_ts is not None and self._last_ts.get(handle) == src_ts:
                return  # the current value, sent again by the new subscription after a reconnect
        value = ev.value
        if isinstance(value, Real) and not isinstance(value, bool):
            number = float(value)
        elif quality is not Quality.GOOD:
            number = math.nan  # a bad sample need not carry a value; its quality says enough
        else:
            self._reject(f"{item.where}: non-numeric value {value!r} ({type(value).__name__})")
            return
        if src_ts is not None:
            self._last_ts[handle] = src_ts
        self._emit(Reading(item.key, ts, number, quality, now))
