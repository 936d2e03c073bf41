"""MQTT source: JSON payloads from equipment topics, read with paho-mqtt's network thread.

paho runs its own thread (``loop_start``) that connects, reconnects with a backoff capped at
five seconds, and calls back on that thread; every callback is handed to the event loop with
``call_soon_threadsafe``, so parsing, counting and queueing all happen on the loop and need no
locks. The subscription is made in ``on_connect``, hence renewed after every reconnect, and
the source reports ``connected`` once the broker has acknowledged it. The equipment of a
message comes from the topic's ``+`` levels through the source's template (``{1}-{2}`` on
``sim/line1/formation/cab01/ch02`` gives ``cab01-ch02``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, Self
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from edge.handoff import call_in_loop
from edge.payload import PayloadReader
from edge.source import QueuedSource
from models import plant
from models.messages import Reading, SeriesKey

__all__ = ["MqttSource", "equipment_name"]

log = logging.getLogger("cellwatch.edge.mqtt")

MAX_RETRY_S = 5
_FIELD = re.compile(r"\{(\d+)\}")


def equipment_name(topic_filter: str, template: str, topic: str) -> str | None:
    """The equipment a topic names, or None when the topic does not match the filter.

    Examples:
        >>> equipment_name("sim/l1/formation/+/+", "{1}-{2}", "sim/l1/formation/cab01/ch02")
        'cab01-ch02'
    """
    pattern = topic_filter.split("/")
    levels = topic.split("/")
    if len(pattern) != len(levels):
        return None
    wild: list[str] = []
    for p, lv in zip(pattern, levels, strict=True):
        if p == "+":
            wild.append(lv)
        elif p != lv:
            return None
    return _FIELD.sub(lambda m: wild[int(m.group(1)) - 1], template)


class MqttSource(QueuedSource):
    """Readings from the JSON messages of one MQTT topic filter; see the module docstring."""

    def __init__(
        self,
        cfg: plant.MqttSource,
        broker_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        keepalive_s: int = 30,
        queue_size: int | None = None,
    ) -> None:
        super().__init__(cfg.id, log, *(() if queue_size is None else (queue_size,)))
        self.cfg = cfg
        url = urlsplit(broker_url)
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or 1883
        self._keepalive = keepalive_s
        self._reader = PayloadReader(cfg.payload)
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"cellwatch-src-{cfg.id}-{id(self):x}",
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=MAX_RETRY_S)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._loop: asyncio.AbstractEventLoop | None = None
        self.messages = 0

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self.state = "connecting"
        self._client.connect_async(self._host, self._port, self._keepalive)
        self._client.loop_start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closed = True  # no state changes or warnings from the disconnect we ask for
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        self._close_stream()

    # -- paho thread: hand everything to the loop ------------------------------------------

    def _call(self, fn: Any, *args: Any) -> None:
        call_in_loop(self._loop, fn, *args)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self._call(self._set_state, "disconnected", f"broker refused connection: {rc}")
            return
        client.subscribe(self.cfg.topic, self.cfg.qos)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
        refused = [str(c) for c in codes if c.is_failure]
        if refused:
            self._call(self._set_state, "disconnected", f"subscription refused: {refused[0]}")
        else:
            self._call(self._set_state, "connected", "")

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        self._call(self._set_state, "disconnected", f"cannot connect to {self._host}:{self._port}")

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._call(self._set_state, "disconnected", f"disconnected: {rc}")

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._call(self._handle, msg.topic, msg.payload, time.time())

    # -- event loop -------------------------------------------------------------------------

    def _set_state(self, state: str, error: str) -> None:
        if self._closed:
            return
        if state != self.state:
            level = logging.INFO if state == "connected" else logging.WARNING
            log.log(level, "source %s %s (%s:%d) %s", self.id, state, self._host, self._port, error)
        self.state = state
        if error:
            self.last_error = error

    def _handle(self, topic: str, payload: bytes, received: float) -> None:
        self.messages += 1
        equipment = equipment_name(self.cfg.topic, self.cfg.equipment, topic)
        if equipment is None:
            self._reject(f"topic {topic}: does not match {self.cfg.topic}")
            return
        parsed = self._reader.read(payload)
        for reason in parsed.rejections:
            self._reject(f"topic {topic}: {reason}")
        line, station = self.cfg.line, self.cfg.station
        for s in parsed.samples:
            self._emit(Reading(SeriesKey(line, station, equipment, s.param), s.ts, s.value,
                               received_ts=received))
