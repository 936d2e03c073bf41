"""The formation cabinets' MQTT side: per-channel batches of samples, published once a second.

Cyclers in the field often push JSON over MQTT rather than serve OPC UA, and they batch: one
message per channel per second holding equal-length arrays
``{"ts": [...], "v": [...], "i": [...], "q": [...], "t": [...]}`` (epoch seconds, volts, amperes,
ampere-hours, degrees Celsius) on ``sim/line1/formation/cabNN/chNN``, the layout the demo plant
config maps. Messages go out at QoS 1 through paho's network thread, which also reconnects with
a bounded back-off when the broker goes away; while it is away paho keeps up to
``max_queued`` messages and resends them, and anything beyond that is dropped and counted, never
an exception in the caller. Counters distinguish samples handed to paho from samples the broker
acknowledged, so "published" means what it says. The ``ts`` of a channel whose clock is off
(``FormationSample.skew``) is the sample time plus that offset, as the cycler would stamp it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import paho.mqtt.client as mqtt

from sim.error import SimError
from sim.formation import FormationSample

__all__ = ["FormationPublisher", "parse_broker_url"]

log = logging.getLogger(__name__)

#: Payload keys, in the order of the arrays of ``FormationSample``.
KEYS = ("ts", "v", "i", "q", "t")


def parse_broker_url(url: str) -> tuple[str, int]:
    """Host and port of an ``mqtt://HOST[:PORT]`` URL (port 1883 if absent).

    >>> parse_broker_url("mqtt://127.0.0.1:1884")
    ('127.0.0.1', 1884)
    """
    try:
        parts = urlsplit(url)
        port = parts.port or 1883
    except ValueError as exc:
        raise SimError(f"broker URL {url!r} is not valid: {exc}") from None
    if parts.scheme != "mqtt" or not parts.hostname:
        raise SimError(f"broker URL {url!r} must look like mqtt://HOST:PORT")
    return parts.hostname, port


class FormationPublisher:
    """Buffers formation samples per channel and publishes each channel's batch on ``flush``.

    With ``batch=False`` every sample goes out at once as its own message with scalar fields,
    ``{"ts": 1795355673.0, "v": 3.75, "i": 2.0, "q": 5.41, "t": 24.8}``: the shape of cyclers that
    publish single values, and the one per-item collectors are built for.
    """

    def __init__(
        self,
        broker_url: str,
        topic_prefix: str = "sim/line1/formation",
        client_id: str | None = None,
        max_queued: int = 10_000,
        keepalive_s: int = 30,
        batch: bool = True,
    ) -> None:
        self.host, self.port = parse_broker_url(broker_url)
        self.topic_prefix = topic_prefix.rstrip("/")
        self.keepalive_s = keepalive_s
        self.batch = batch
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"cellwatch-sim-{uuid.uuid4().hex[:8]}",
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client.max_queued_messages_set(max_queued)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._unreachable_logged = False
        self._client.on_publish = self._on_publish
        self._samples: list[FormationSample] = []
        self._lock = threading.Lock()
        self._pending: dict[int, int] = {}
        self._early_acks: set[int] = set()
        self._acked_samples = 0
        self._acked_messages = 0
        self._queued_samples = 0
        self._dropped_samples = 0
        self._drop_logged = -1e9
        self._started = False
        self.connected = threading.Event()

    @property
    def counters(self) -> dict[str, int]:
        """Samples handed to paho (``queued``), acknowledged by the broker (``published``),
        dropped because paho's queue was full (``dropped``), and acknowledged ``messages``."""
        with self._lock:
            return {
                "queued": self._queued_samples,
                "published": self._acked_samples,
                "dropped": self._dropped_samples,
                "messages": self._acked_messages,
            }

    def topic(self, cabinet: int, channel: int) -> str:
        """Topic of a channel, 1-based: ``sim/line1/formation/cab01/ch02``."""
        return f"{self.topic_prefix}/cab{cabinet:02d}/ch{channel:02d}"

    async def start(self) -> None:
        """Start connecting in the background; an absent broker is retried, not an error."""
        self._client.connect_async(self.host, self.port, keepalive=self.keepalive_s)
        self._client.loop_start()
        self._started = True

    async def stop(self) -> None:
        """Disconnect and join paho's thread without blocking the event loop."""
        if not self._started:
            return
        self._started = False
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    def add(self, sample: FormationSample) -> None:
        """Append one sample of every channel to the pending batches; a channel with a NaN
        value (a dropout) contributes nothing for this time. Without batching the samples are
        published here and now."""
        self._samples.append(sample)
        if not self.batch:
            self._publish(self._samples, batched=False)
            self._samples = []

    def flush(self) -> int:
        """Publish every channel's pending batch at QoS 1; returns the samples handed over.

        The samples of the last second are stacked into one ``(channels, samples)`` array per
        key and turned into lists in one call each, so the cost per value stays a few
        nanoseconds of numpy rather than a Python loop per channel and sample: the simulator
        has to feed 100k values/s to the edge benchmarks.
        """
        samples, self._samples = self._samples, []
        return self._publish(samples, batched=True)

    def _publish(self, samples: list[FormationSample], batched: bool) -> int:
        if not samples:
            return 0
        cabs, chans = samples[0].voltage.shape
        n = cabs * chans
        k = len(samples)
        stamps = np.empty((k, n))
        for row, smp in enumerate(samples):
            stamps[row] = smp.ts if smp.skew is None else smp.ts + smp.skew.ravel()
        columns = [stamps.T]
        for key in ("voltage", "current", "capacity", "temperature"):
            columns.append(np.stack([getattr(smp, key).ravel() for smp in samples], axis=1))
        valid = ~np.any(np.isnan(np.stack(columns[1:])), axis=0)  # (n, k)
        complete = valid.all(axis=1)
        lists = [c.tolist() for c in columns]
        handed = 0
        for index in range(n):
            cab, ch = divmod(index, chans)
            if complete[index]:
                values = [col[index] for col in lists]
            else:
                keep = valid[index]
                values = [col[index][keep].tolist() for col in columns]
            m = len(values[0])
            if not batched and m:
                values = [column[0] for column in values]
            payload = dict(zip(KEYS, values, strict=True))
            if m and self.send(self.topic(cab + 1, ch + 1), payload, m):
                handed += m
        return handed

    def send(self, topic: str, payload: Mapping[str, Any], values: int = 1) -> bool:
        """Publish one JSON ``payload`` on ``topic`` at QoS 1, counted as ``values`` samples.

        The other JSON streams of the simulator (gauge scans, cell results, grading records)
        share this client and its counters. Returns False when paho's queue is full and the
        message was dropped (counted and logged).
        """
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        # Not under self._lock: paho calls on_publish holding its own message lock, so
        # holding ours across publish() could deadlock. An acknowledgement that overtakes
        # the bookkeeping below is parked in _early_acks and settled here.
        info = self._client.publish(topic, text, qos=1)
        with self._lock:
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                self._dropped_samples += values
                # Once a second at most: a full queue drops thousands of messages a second.
                now = time.monotonic()
                if now - self._drop_logged >= 1.0:
                    self._drop_logged = now
                    log.warning(
                        "MQTT queue full: dropping (%d samples dropped so far; last on %s)",
                        self._dropped_samples,
                        topic,
                    )
                return False
            self._queued_samples += values
            if info.mid in self._early_acks:
                self._early_acks.discard(info.mid)
                self._acked_samples += values
                self._acked_messages += 1
            else:
                self._pending[info.mid] = values
        return True

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            log.warning(
                "MQTT broker %s:%d refused the connection: %s", self.host, self.port, reason
            )
            return
        log.info("MQTT connected to %s:%d", self.host, self.port)
        self._unreachable_logged = False
        self.connected.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # Logged once per outage: paho retries every few seconds and would flood the log.
        if not self._unreachable_logged:
            self._unreachable_logged = True
            log.warning("MQTT broker %s:%d unreachable; retrying", self.host, self.port)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self.connected.clear()
        if self._started:
            log.warning(
                "MQTT connection to %s:%d lost (%s); reconnecting", self.host, self.port, reason
            )

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        with self._lock:
            n = self._pending.pop(mid, None)
            if n is None:
                self._early_acks.add(mid)
                return
            self._acked_samples += n
            self._acked_messages += 1
