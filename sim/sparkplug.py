"""The simulator as a Sparkplug B edge node: meters and other devices published over MQTT.

Many plants put their meters and small devices behind a Sparkplug B edge node rather than an
OPC UA server, so cellwatch has to read Sparkplug as well, and the simulator speaks it. Topics
and payloads come from `models.sparkplug`, the codec the gateway's host source reads them with
(the protobuf schema is ``esio-spb-builder``'s); the session rules of Sparkplug 3.0 are kept
here, because they are what a host relies on:

* topics ``spBv1.0/{group}/{NBIRTH|NDEATH|DBIRTH|DDEATH|DDATA|NCMD|...}/{edge node}[/{device}]``;
* the NDEATH is registered as the MQTT will (QoS 1, not retained) and carries ``bdSeq``. The
  will goes into each CONNECT packet, so it is set just before each connection attempt, and
  ``bdSeq`` advances once per established session (0..255, wrapping): attempts that never got a
  session reuse the value, which no host has seen in a birth;
* on each session: subscribe to this node's NCMD, then NBIRTH (seq 0, ``bdSeq`` equal to the
  will's, ``Node Control/Rebirth`` false), then one DBIRTH per device listing every metric by
  name and alias with its datatype, current value (null before the first) and unit as the
  ``engUnit`` property, as Ignition does;
* DDATA carries metrics by alias only, without name or datatype, each with its own timestamp;
  ``seq`` goes 0..255 and wraps, one step per message after the NBIRTH;
* an NCMD with ``Node Control/Rebirth`` true republishes NBIRTH and every DBIRTH in the same
  session (``bdSeq`` unchanged, ``seq`` from 0 again);
* a graceful ``stop`` publishes a DDEATH per device and then the NDEATH itself (the broker
  drops the will on a clean DISCONNECT), and waits for the broker to acknowledge the NDEATH
  before disconnecting.

Births and data go out at QoS 0 and unretained, as the specification requires. A Sparkplug
host cannot use data from a session it has no birth for, so ``publish`` while there is no
session drops the message and counts it, never an exception; the values are kept, and the next
birth carries them. A NaN value goes out as an explicit Sparkplug null. The node does not wait
for a primary host's STATE message; the simulator has no primary host to wait for.

Timestamps in payloads are integer milliseconds since the epoch, as on the wire.

>>> parse_topic("spBv1.0/cellwatch/DDATA/line1-sim/meters")
SparkplugTopic(namespace='spBv1.0', group_id='cellwatch', message_type='DDATA', \
edge_node_id='line1-sim', device_id='meters')
>>> metric = SparkplugMetric("energy_kwh", 3, 1_700_000_000_000, MetricDataType.Double, 12.5,
...                          {"engUnit": "kWh"})
>>> decoded = decode_payload(encode_payload(SparkplugPayload(1_700_000_000_000, 7, (metric,))))
>>> decoded.seq, decoded.metrics[0] == metric
(7, True)
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

# Imported here, not only by the codec, so that a missing extra shows when the simulator
# loads this module (it turns the ImportError into an explanation) rather than mid-session.
from esio_spb_builder import MetricDataType

from models.sparkplug import (
    BD_SEQ,
    ENG_UNIT,
    MESSAGE_TYPES,
    NAMESPACE,
    PUBLISHABLE,
    REBIRTH,
    MetricValue,
    SparkplugMetric,
    SparkplugPayload,
    SparkplugTopic,
    check_id,
    datatype_name,
    decode_payload,
    encode_payload,
    parse_topic,
    sparkplug_topic,
)
from sim.mqtt_publisher import parse_broker_url

__all__ = [
    "BD_SEQ",
    "ENG_UNIT",
    "MESSAGE_TYPES",
    "NAMESPACE",
    "PUBLISHABLE",
    "REBIRTH",
    "MetricSpec",
    "MetricValue",
    "SparkplugMetric",
    "SparkplugPayload",
    "SparkplugPublisher",
    "SparkplugTopic",
    "decode_payload",
    "encode_payload",
    "parse_topic",
    "sparkplug_topic",
]

log = logging.getLogger(__name__)
_DT = MetricDataType


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric of a device: its name, engineering unit and Sparkplug datatype."""

    name: str
    unit: str
    datatype: int = MetricDataType.Double

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("metric name must not be empty")
        if self.datatype not in PUBLISHABLE:
            allowed = ", ".join(f"{datatype_name(t)}={t}" for t in sorted(PUBLISHABLE))
            name = datatype_name(self.datatype)
            raise ValueError(
                f"datatype of metric {self.name!r} must be one of {allowed}, "
                f"got {self.datatype} ({'not a datatype' if name == 'unknown' else name})"
            )


def _coerce(spec: MetricSpec, value: float, device: str) -> MetricValue:
    """A device value as its metric's datatype wants it; NaN becomes a null."""
    where = f"device {device!r} metric {spec.name!r}"
    if not isinstance(value, int | float):
        raise ValueError(f"{where}: value must be a number, got {value!r}")
    number = float(value)
    if math.isnan(number):
        return None
    if spec.datatype in (_DT.Float, _DT.Double):
        return number
    if spec.datatype == _DT.Boolean:
        if number not in (0.0, 1.0):
            raise ValueError(f"{where}: a Boolean value must be 0 or 1, got {value!r}")
        return number == 1.0
    if not number.is_integer():
        raise ValueError(f"{where}: datatype {spec.datatype} needs a whole number, got {value!r}")
    return int(number)


class SparkplugPublisher:
    """One Sparkplug B edge node with ``devices`` (device id -> its metrics).

    ``clock`` gives the epoch seconds stamped on payloads as their send time; the metrics in
    DDATA carry the ``ts`` given to ``publish``.
    """

    def __init__(
        self,
        broker_url: str,
        group_id: str = "cellwatch",
        edge_node_id: str = "line1-sim",
        *,
        devices: Mapping[str, Sequence[MetricSpec]],
        client_id: str | None = None,
        keepalive_s: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host, self.port = parse_broker_url(broker_url)
        check_id("group_id", group_id)
        check_id("edge_node_id", edge_node_id)
        self.group_id = group_id
        self.edge_node_id = edge_node_id
        self._specs: dict[str, dict[str, MetricSpec]] = {}
        self._aliases: dict[tuple[str, str], int] = {}
        for device, specs in devices.items():
            check_id("device id", device)
            if not specs:
                raise ValueError(f"device {device!r} must have at least one metric")
            by_name: dict[str, MetricSpec] = {}
            for spec in specs:
                if spec.name in by_name:
                    raise ValueError(f"device {device!r} lists metric {spec.name!r} twice")
                by_name[spec.name] = spec
                # Aliases are unique across the whole edge node, as Sparkplug requires.
                self._aliases[(device, spec.name)] = len(self._aliases) + 1
            self._specs[device] = by_name
        self._clock = clock
        self.keepalive_s = keepalive_s
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"cellwatch-sim-spb-{uuid.uuid4().hex[:8]}",
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client.on_pre_connect = self._on_pre_connect
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._unreachable_logged = False
        # Guards the session state below and is held across client.publish() so that seq
        # order is wire order. Unlike sim.mqtt_publisher this is deadlock-free: paho calls
        # none of the callbacks registered here while holding a lock that publish() or
        # subscribe() take (on_publish, which it calls under its message lock, is not set).
        self._lock = threading.Lock()
        self._started = False
        self._born = False
        self._seq = 0
        self._bd_seq_next = 0
        self._will_bd_seq = 0
        self._bd_seq: int | None = None
        self._last: dict[str, dict[str, tuple[MetricValue, int]]] = {d: {} for d in self._specs}
        self._counts = {"births": 0, "data": 0, "metrics": 0, "rebirths": 0, "dropped": 0}
        self.connected = threading.Event()

    @property
    def counters(self) -> dict[str, int]:
        """NBIRTH and DBIRTH messages (``births``), DDATA messages (``data``) and the metrics
        in them (``metrics``) handed to paho, rebirth requests honoured (``rebirths``) and
        DDATA messages ``dropped`` for want of a session."""
        with self._lock:
            return dict(self._counts)

    @property
    def bd_seq(self) -> int | None:
        """``bdSeq`` of the current or last session; None before the first."""
        with self._lock:
            return self._bd_seq

    def alias(self, device: str, name: str) -> int:
        """Alias of a device's metric, as its DBIRTH announces it."""
        try:
            return self._aliases[(device, name)]
        except KeyError:
            raise ValueError(f"device {device!r} has no metric {name!r}") from None

    def topic(self, message_type: str, device: str | None = None) -> str:
        """This node's topic for ``message_type`` (and ``device``)."""
        return sparkplug_topic(self.group_id, message_type, self.edge_node_id, device)

    async def start(self) -> None:
        """Start connecting in the background; an absent broker is retried, not an error."""
        with self._lock:
            self._started = True
        self._client.connect_async(self.host, self.port, keepalive=self.keepalive_s)
        self._client.loop_start()

    async def stop(self) -> None:
        """DDEATH per device, NDEATH (acknowledged), then disconnect and join paho's thread."""
        death = None
        with self._lock:
            if not self._started:
                return
            self._started = False
            if self._born:
                self._born = False
                now = self._now_ms()
                for device in self._specs:
                    if self._send("DDEATH", device, SparkplugPayload(now, self._seq)):
                        self._seq = (self._seq + 1) % 256
                death = self._client.publish(
                    self.topic("NDEATH"), self._death_payload(self._bd_seq or 0, now), qos=1
                )
        self.connected.clear()
        if death is not None:
            try:
                await asyncio.to_thread(death.wait_for_publish, 5.0)
            except (RuntimeError, ValueError) as exc:
                log.warning("NDEATH of %s was not delivered: %s", self.edge_node_id, exc)
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    def publish(self, device: str, values: Mapping[str, float], ts: float) -> bool:
        """Send ``values`` (metric name -> value) of ``device`` sampled at epoch ``ts`` as one
        DDATA; False if there is no session to send it in (counted as dropped)."""
        specs = self._specs.get(device)
        if specs is None:
            raise ValueError(f"device must be one of {sorted(self._specs)}, got {device!r}")
        if not values:
            raise ValueError(f"values for device {device!r} must name at least one metric")
        unknown = sorted(set(values) - set(specs))
        if unknown:
            raise ValueError(f"device {device!r} has no metrics {unknown}; it has {sorted(specs)}")
        if not math.isfinite(ts):
            raise ValueError(f"ts must be a finite epoch time, got {ts}")
        ts_ms = round(ts * 1000.0)
        metrics = tuple(
            SparkplugMetric(
                None,
                self._aliases[(device, name)],
                ts_ms,
                specs[name].datatype,
                _coerce(specs[name], value, device),
            )
            for name, value in values.items()
        )
        with self._lock:
            last = self._last[device]
            for name, m in zip(values, metrics, strict=True):
                last[name] = (m.value, ts_ms)
            if not self._born:
                self._counts["dropped"] += 1
                return False
            payload = SparkplugPayload(self._now_ms(), self._seq, metrics)
            info = self._client.publish(
                self.topic("DDATA", device), encode_payload(payload, with_datatypes=False)
            )
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self._counts["dropped"] += 1
                return False
            self._seq = (self._seq + 1) % 256
            self._counts["data"] += 1
            self._counts["metrics"] += len(metrics)
        return True

    def _now_ms(self) -> int:
        return round(self._clock() * 1000.0)

    def _death_payload(self, bd_seq: int, now_ms: int) -> bytes:
        metric = SparkplugMetric(BD_SEQ, None, now_ms, MetricDataType.Int64, bd_seq)
        return encode_payload(SparkplugPayload(now_ms, None, (metric,)))

    def _send(self, message_type: str, device: str | None, payload: SparkplugPayload) -> bool:
        """Hand one birth or death to paho at QoS 0, unretained; call with the lock held."""
        info = self._client.publish(self.topic(message_type, device), encode_payload(payload))
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def _births(self) -> None:
        """NBIRTH and every DBIRTH, seq from 0; call with the lock held."""
        now = self._now_ms()
        self._seq = 0
        node = (
            SparkplugMetric(BD_SEQ, None, now, MetricDataType.Int64, self._bd_seq or 0),
            SparkplugMetric(REBIRTH, None, now, MetricDataType.Boolean, False),
        )
        messages: list[tuple[str, str | None, tuple[SparkplugMetric, ...]]] = [
            ("NBIRTH", None, node)
        ]
        for device, specs in self._specs.items():
            last = self._last[device]
            metrics = tuple(
                SparkplugMetric(
                    name,
                    self._aliases[(device, name)],
                    last[name][1] if name in last else now,
                    spec.datatype,
                    last[name][0] if name in last else None,
                    {ENG_UNIT: spec.unit} if spec.unit else {},
                )
                for name, spec in specs.items()
            )
            messages.append(("DBIRTH", device, metrics))
        for kind, target, content in messages:
            if not self._send(kind, target, SparkplugPayload(now, self._seq, content)):
                log.warning("Sparkplug %s of %s was not sent", kind, target or "node")
                return
            self._seq = (self._seq + 1) % 256
            self._counts["births"] += 1

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        # Runs on paho's thread just before every CONNECT: the will must name the bdSeq
        # that this attempt's NBIRTH will carry.
        with self._lock:
            self._will_bd_seq = self._bd_seq_next
            payload = self._death_payload(self._will_bd_seq, self._now_ms())
        client.will_set(self.topic("NDEATH"), payload, qos=1, retain=False)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            log.warning(
                "MQTT broker %s:%d refused the connection: %s", self.host, self.port, reason
            )
            return
        self._unreachable_logged = False
        with self._lock:
            if not self._started:
                return
            bd_seq = self._bd_seq = self._will_bd_seq
            self._bd_seq_next = (bd_seq + 1) % 256
            client.subscribe(self.topic("NCMD"), qos=1)
            self._births()
            self._born = True
        log.info(
            "Sparkplug node %s/%s born on %s:%d (bdSeq %d)",
            self.group_id,
            self.edge_node_id,
            self.host,
            self.port,
            bd_seq,
        )
        self.connected.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # Logged once per outage: paho retries every few seconds and would flood the log.
        if not self._unreachable_logged:
            self._unreachable_logged = True
            log.warning("MQTT broker %s:%d unreachable; retrying", self.host, self.port)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        with self._lock:
            self._born = False
            started = self._started
        self.connected.clear()
        if started:
            log.warning(
                "MQTT connection to %s:%d lost (%s); reconnecting", self.host, self.port, reason
            )

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic != self.topic("NCMD"):
            return
        try:
            payload = decode_payload(bytes(msg.payload))
        except ValueError as exc:
            log.warning("ignored an NCMD for %s: %s", self.edge_node_id, exc)
            return
        if not any(m.name == REBIRTH and m.value is True for m in payload.metrics):
            log.info("ignored an NCMD for %s without a rebirth request", self.edge_node_id)
            return
        with self._lock:
            if not self._born:
                return
            self._births()
            self._counts["rebirths"] += 1
        log.info("Sparkplug node %s reborn on request", self.edge_node_id)
