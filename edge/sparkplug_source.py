"""Sparkplug B source: the gateway as a host application of one Sparkplug group.

Reading Sparkplug is more than decoding protobuf (ANCHORS.md, pain point 9): DATA messages
carry metrics by alias only, so a host that missed the birth has numbers without names, and a
collector that cannot ask for a new birth stays blind until the edge node happens to restart.
This source keeps the session state a host needs, per edge node:

* NBIRTH starts a node session (its ``bdSeq`` and ``seq``), DBIRTH registers a device: alias ->
  (device, metric name, datatype). The values a birth carries are readings too, unless the
  series already has a reading that new (a rebirth repeats values already received);
* DDATA and NDATA are decoded with the birth's datatypes and mapped through ``metrics`` (metric
  name -> parameter) to readings of the equipment ``equipment`` names (``{node}``, ``{device}``);
  a null value is a bad-quality reading, a metric of a non-numeric type a counted rejection;
* ``seq`` must advance by one (mod 256) per message of a node; a gap, a DATA message from a node
  or device without a birth, or an unknown alias make the source publish a rebirth request
  (NCMD ``Node Control/Rebirth`` = true), at most one per node per ``rebirth_timeout_s``, and
  count it. What could not be decoded meanwhile is counted as rejected, never dropped silently;
* NDEATH (with the ``bdSeq`` of the current session; a stale will of an earlier session is
  ignored) and DDEATH mark the node's or device's series offline: readings stop, ``stale``
  counts the offline devices and ``offline()`` names them, until the next birth;
* a payload that is not Sparkplug B, or a topic that is not a node's, is counted and logged
  with the topic and the reason, and the source goes on;
* after the source reconnects to the broker it asks every node it knew for a rebirth, since it
  cannot know what it missed.

A Sparkplug host connects with a clean session (the births it would need are QoS 0 and never
queued for it), so ``persistent_session`` defaults to false here. The node does not wait for a
primary host's STATE message; publishing one is not done here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Self

from edge.mqtt_session import MqttEndpoint, MqttSession
from edge.source import QueuedSource
from models import plant
from models.messages import Quality, Reading, SeriesKey
from models.sparkplug import (
    BD_SEQ,
    NAMESPACE,
    NUMERIC,
    REBIRTH,
    DataType,
    SparkplugMetric,
    SparkplugPayload,
    datatype_name,
    decode_payload,
    encode_payload,
    parse_topic,
    require_codec,
    sparkplug_topic,
)

__all__ = ["NodeState", "SparkplugSource", "quality_of"]

log = logging.getLogger("cellwatch.edge.sparkplug")

#: Metric property some edge nodes (Ignition) use for an OPC-style quality code.
QUALITY_PROPERTY = "Quality"


def quality_of(properties: object) -> Quality:
    """The quality an OPC DA style ``Quality`` property gives (192 and up good, 64 and up
    uncertain, below bad); good when there is none.

    Examples:
        >>> quality_of({"Quality": 192}), quality_of({"Quality": 0}), quality_of({})
        (<Quality.GOOD: 'good'>, <Quality.BAD: 'bad'>, <Quality.GOOD: 'good'>)
    """
    code = properties.get(QUALITY_PROPERTY) if isinstance(properties, dict) else None
    if isinstance(code, bool) or not isinstance(code, int):
        return Quality.GOOD
    if code >= 192:
        return Quality.GOOD
    return Quality.UNCERTAIN if code >= 64 else Quality.BAD


@dataclass(slots=True)
class NodeState:
    """What the host knows of one edge node's current session."""

    node: str
    alive: bool = False
    bd_seq: int | None = None
    seq: int | None = None
    #: alias -> (device, metric name, datatype); device None for the node's own metrics
    aliases: dict[int, tuple[str | None, str, int]] = field(default_factory=dict)
    #: (device, metric name) -> datatype, for metrics sent by name
    names: dict[tuple[str | None, str], int] = field(default_factory=dict)
    #: devices born in this session -> alive
    devices: dict[str, bool] = field(default_factory=dict)
    rebirth_at: float | None = None

    def datatypes(self) -> dict[int, int]:
        return {alias: dt for alias, (_d, _n, dt) in self.aliases.items()}


class SparkplugSource(QueuedSource):
    """Readings from one Sparkplug B group; see the module docstring.

    ``broker_url``, ``username``, ``password`` and ``keepalive_s`` are the plant's broker, used
    unless the config has a ``broker`` of its own. ``clock`` is monotonic seconds, for the
    rebirth request interval.
    """

    def __init__(
        self,
        cfg: plant.SparkplugSource,
        broker_url: str = "mqtt://127.0.0.1:1883",
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        keepalive_s: int = 30,
        queue_size: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(cfg.id, log, *(() if queue_size is None else (queue_size,)))
        require_codec()  # a missing extra is an error at start, not at the first message
        self.cfg = cfg
        endpoint = MqttEndpoint.of(cfg.broker, broker_url, username, password, keepalive_s)
        self.session = MqttSession.for_source(
            cfg.id,
            cfg,
            endpoint,
            client_id or f"cellwatch-spb-{cfg.id}",
            [(f"{NAMESPACE}/{cfg.group}/#", cfg.qos)],
            self,
        )
        self.nodes: dict[str, NodeState] = {}
        self._clock = clock
        self._last_ts: dict[SeriesKey, float] = {}
        self.births = 0
        self.deaths = 0
        self.rebirth_requests = 0
        self.seq_gaps = 0
        self.unknown_aliases = 0
        self.malformed = 0
        self.messages = 0

    async def __aenter__(self) -> Self:
        self.state = "connecting"
        await self.session.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closed = True
        await self.session.stop()
        self._close_stream()

    def offline(self) -> list[str]:
        """``node`` or ``node/device`` of every node and device whose death was announced."""
        out: list[str] = []
        for n in self.nodes.values():
            if not n.alive and n.bd_seq is not None:
                out.append(n.node)
            out += [f"{n.node}/{d}" for d, alive in n.devices.items() if not alive]
        return sorted(out)

    # -- session events (event loop) ---------------------------------------------------------

    def session_up(self, session_present: bool) -> None:
        self.reconnects = self.session.reconnects
        if self.state != "connected":
            log.info("source %s connected (%s)", self.id, self.session.address)
        self.state = "connected"
        if self.session.reconnects:
            for node in self.nodes.values():  # what happened while away is unknown
                self._request_rebirth(node, "reconnected to the broker", force=True)

    def session_down(self, error: str) -> None:
        if self._closed:
            return
        if self.state != "disconnected":
            log.warning("source %s disconnected (%s) %s", self.id, self.session.address, error)
        self.state = "disconnected"
        self.last_error = error

    def message(self, topic: str, payload: bytes, received: float) -> None:
        self.messages += 1
        try:
            t = parse_topic(topic)
        except ValueError as exc:
            self._reject(f"topic {topic}: {exc}")
            return
        kind = t.message_type
        if kind in ("NCMD", "DCMD") or not _matches(t.edge_node_id, self.cfg.nodes):
            return  # commands (ours included) and nodes this source does not read
        # Devices this source does not read still count in the node's seq, so they are
        # decoded and sequenced, then left.
        wanted = t.device_id is None or _matches(t.device_id, self.cfg.devices)
        node = self.nodes.get(t.edge_node_id)
        types = node.datatypes() if node is not None and kind in ("DDATA", "NDATA") else None
        try:
            p = decode_payload(payload, types)
        except ValueError as exc:
            self.malformed += 1
            self._reject(f"topic {topic}: {exc}")
            return
        if kind == "NBIRTH":
            self._nbirth(t.edge_node_id, p, received)
        elif kind == "NDEATH":
            self._ndeath(t.edge_node_id, p)
        elif node is None or not node.alive:
            self._unborn(t.edge_node_id, topic, kind, p, wanted)
        elif not self._in_sequence(node, p, topic) or not wanted:
            return
        elif kind == "DBIRTH":
            self._dbirth(node, t.device_id or "", p, received)
        elif kind == "DDEATH":
            self._ddeath(node, t.device_id or "")
        elif kind == "DDATA" and not node.devices.get(t.device_id or ""):
            self._reject(f"topic {topic}: device {t.device_id} has no birth; rebirth requested")
            self._request_rebirth(node, f"DDATA of device {t.device_id} without its DBIRTH")
        else:
            self._data(node, t.device_id, p, received, topic)

    # -- message kinds -------------------------------------------------------------------------

    def _nbirth(self, node_id: str, p: SparkplugPayload, received: float) -> None:
        bd_seq = next((m.value for m in p.metrics if m.name == BD_SEQ), None)
        node = NodeState(node_id, alive=True, seq=p.seq)
        node.bd_seq = bd_seq if isinstance(bd_seq, int) and not isinstance(bd_seq, bool) else -1
        old = self.nodes.get(node_id)
        if old is not None:
            node.devices = {d: False for d in old.devices}  # offline until their DBIRTH
        self.nodes[node_id] = node
        self.births += 1
        self._register(node, None, p.metrics)
        log.info("source %s: node %s born (bdSeq %s)", self.id, node_id, bd_seq)
        self._readings(node, None, p, received, birth=True)
        self._update_offline()

    def _dbirth(self, node: NodeState, device: str, p: SparkplugPayload, received: float) -> None:
        for alias in [a for a, (d, _n, _t) in node.aliases.items() if d == device]:
            del node.aliases[alias]
        node.names = {k: v for k, v in node.names.items() if k[0] != device}
        self._register(node, device, p.metrics)
        node.devices[device] = True
        self.births += 1
        self._readings(node, device, p, received, birth=True)
        self._update_offline()

    def _ndeath(self, node_id: str, p: SparkplugPayload) -> None:
        node = self.nodes.get(node_id)
        bd_seq = next((m.value for m in p.metrics if m.name == BD_SEQ), None)
        if node is None or not node.alive:
            return  # nothing of it is known or it is dead already
        if node.bd_seq is not None and node.bd_seq >= 0 and bd_seq != node.bd_seq:
            log.info(
                "source %s: ignored an NDEATH of node %s with bdSeq %s (session has %s)",
                self.id,
                node_id,
                bd_seq,
                node.bd_seq,
            )
            return
        node.alive = False
        for d in node.devices:
            node.devices[d] = False
        self.deaths += 1
        self.last_error = f"node {node_id} is offline (NDEATH)"
        log.warning("source %s: node %s died (NDEATH)", self.id, node_id)
        self._update_offline()

    def _ddeath(self, node: NodeState, device: str) -> None:
        if node.devices.get(device):
            node.devices[device] = False
            self.deaths += 1
            self.last_error = f"device {node.node}/{device} is offline (DDEATH)"
            log.warning("source %s: device %s/%s died (DDEATH)", self.id, node.node, device)
            self._update_offline()

    def _unborn(
        self, node_id: str, topic: str, kind: str, p: SparkplugPayload, wanted: bool
    ) -> None:
        node = self.nodes.setdefault(node_id, NodeState(node_id))
        if kind in ("DDATA", "NDATA", "DBIRTH"):
            if not wanted:  # not data of ours, but the node's seq needs its birth
                self._request_rebirth(node, f"{kind} without an NBIRTH")
                return
            self._reject(
                f"topic {topic}: node {node_id} has no birth; {len(p.metrics)} metric(s) not "
                "read; rebirth requested"
            )
            self._request_rebirth(node, f"{kind} without an NBIRTH")

    def _in_sequence(self, node: NodeState, p: SparkplugPayload, topic: str) -> bool:
        if p.seq is None or not 0 <= p.seq <= 255:
            self.malformed += 1
            self._reject(f"topic {topic}: seq must be 0..255, got {p.seq}")
            return False
        last, node.seq = node.seq, p.seq
        expected = None if last is None else (last + 1) % 256
        if expected is not None and p.seq != expected:
            self.seq_gaps += 1
            log.warning(
                "source %s: node %s seq %d where %d was due (messages lost or reordered)",
                self.id,
                node.node,
                p.seq,
                expected,
            )
            self._request_rebirth(node, f"seq gap ({p.seq} after {last})")
        return True

    def _data(
        self,
        node: NodeState,
        device: str | None,
        p: SparkplugPayload,
        received: float,
        topic: str,
    ) -> None:
        unknown = [m.alias for m in p.metrics if m.name is None and m.alias not in node.aliases]
        if unknown:
            self.unknown_aliases += len(unknown)
            self._reject(
                f"topic {topic}: unknown alias(es) {unknown[:5]} not in the births; "
                "rebirth requested"
            )
            self._request_rebirth(node, f"unknown alias {unknown[0]}")
        self._readings(node, device, p, received, birth=False)

    # -- helpers -------------------------------------------------------------------------------

    def _register(
        self, node: NodeState, device: str | None, metrics: tuple[SparkplugMetric, ...]
    ) -> None:
        for m in metrics:
            if m.name is None or m.datatype is None:
                continue
            node.names[(device, m.name)] = m.datatype
            if m.alias is not None:
                node.aliases[m.alias] = (device, m.name, m.datatype)

    def _readings(
        self,
        node: NodeState,
        device: str | None,
        p: SparkplugPayload,
        received: float,
        *,
        birth: bool,
    ) -> None:
        equipment = self.cfg.equipment.format(node=node.node, device=device or node.node)
        for m in p.metrics:
            name, datatype = m.name, m.datatype
            if name is None:
                known = node.aliases.get(m.alias) if m.alias is not None else None
                if known is None:
                    continue  # counted as an unknown alias
                if known[0] != device:
                    owner = known[0] or "the node"
                    self._reject(f"{equipment}: alias {m.alias} belongs to {owner}, not here")
                    continue
                _d, name, datatype = known
            elif datatype is None:
                datatype = node.names.get((device, name))
            param = self.cfg.metrics.get(name)
            if param is None:
                continue  # not a metric this source maps
            key = SeriesKey(self.cfg.line, self.cfg.station, equipment, param)
            ts_ms = m.timestamp if m.timestamp is not None else p.timestamp
            ts = ts_ms / 1000.0 if ts_ms is not None else received
            if birth and (m.value is None or ts <= self._last_ts.get(key, -math.inf)):
                continue  # no value yet, or a rebirth repeating a value already read
            reading = self._reading(key, ts, m, datatype, received)
            if reading is not None:
                self._last_ts[key] = max(ts, self._last_ts.get(key, -math.inf))
                self._emit(reading)

    def _reading(
        self, key: SeriesKey, ts: float, m: SparkplugMetric, datatype: int | None, received: float
    ) -> Reading | None:
        value = m.value
        if value is None:
            if datatype is not None and datatype not in NUMERIC:
                return None  # a null of a metric that is no measurement
            return Reading(key, ts, math.nan, Quality.BAD, received_ts=received)
        if datatype not in NUMERIC or isinstance(value, str | bytes):
            self._reject(
                f"{key}: metric {m.name or m.alias} is {datatype_name(datatype)}, not a number"
            )
            return None
        number = float(value)
        if not math.isfinite(number):
            return Reading(key, ts, math.nan, Quality.BAD, received_ts=received)
        return Reading(key, ts, number, quality_of(m.properties), received_ts=received)

    def _request_rebirth(self, node: NodeState, why: str, *, force: bool = False) -> None:
        now = self._clock()
        if not force and node.rebirth_at is not None:
            if now - node.rebirth_at < self.cfg.rebirth_timeout_s:
                return  # asked already; the births are on their way
        metric = SparkplugMetric(REBIRTH, None, int(time.time() * 1000), DataType.Boolean, True)
        payload = encode_payload(SparkplugPayload(int(time.time() * 1000), None, (metric,)))
        topic = sparkplug_topic(self.cfg.group, "NCMD", node.node)
        if self.session.publish(topic, payload, qos=0):
            node.rebirth_at = now
            self.rebirth_requests += 1
            log.warning("source %s: asked node %s for a rebirth: %s", self.id, node.node, why)
        else:
            self.last_error = f"could not ask node {node.node} for a rebirth ({why})"

    def _update_offline(self) -> None:
        self.stale = len(self.offline())


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)
