"""MQTT source: JSON payloads from equipment topics, over a self-healing MQTT session.

The connection (MQTT 3.1.1 or 5, QoS 0/1/2, persistent session, TLS, credentials, reconnect
with a backoff of at most five seconds and a new subscription on every connection) is
`edge.mqtt_session`'s; this module turns messages into readings. paho calls back on its own
thread and every callback is handed to the event loop, so parsing, counting and queueing all
happen on the loop and need no locks. The source reports ``connected`` once the broker has
acknowledged the subscription. The equipment of a message comes from the topic's ``+`` levels
through the source's template (``{1}-{2}`` on ``sim/line1/formation/cab01/ch02`` gives
``cab01-ch02``), or for element arrays (gauge scans) from the element's own template.

With ``stale_after_s`` set, a connection on which no message arrived for that long is taken
for stuck (a broker that accepts the connection but no longer routes to it): the source counts
it in ``stale``, logs it, and rebuilds its client; the persistent session keeps what was queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Self

import numpy as np

from edge.mqtt_session import MqttEndpoint, MqttSession
from edge.payload import Columns, PayloadReader
from edge.source import QueuedSource
from models import plant
from models.batch import Batch
from models.messages import Reading, SeriesKey

__all__ = ["MqttSource", "equipment_name", "topic_levels"]

log = logging.getLogger("cellwatch.edge.mqtt")

_FIELD = re.compile(r"\{(\d+)\}")
#: Series keys kept for reuse; a topic pattern that keeps inventing equipment cannot grow the
#: cache without bound (it starts over).
MAX_KEYS = 100_000


def topic_levels(topic_filter: str, topic: str) -> list[str] | None:
    """The topic's levels at the filter's ``+`` positions, or None when it does not match.

    Examples:
        >>> topic_levels("sim/+/gauge/+", "sim/line1/gauge/sideA")
        ['line1', 'sideA']
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
    return wild


def equipment_name(topic_filter: str, template: str, topic: str) -> str | None:
    """The equipment a topic names, or None when the topic does not match the filter.

    Examples:
        >>> equipment_name("sim/l1/formation/+/+", "{1}-{2}", "sim/l1/formation/cab01/ch02")
        'cab01-ch02'
    """
    wild = topic_levels(topic_filter, topic)
    if wild is None:
        return None
    return _FIELD.sub(lambda m: wild[int(m.group(1)) - 1], template)


class MqttSource(QueuedSource):
    """Readings from the JSON messages of one MQTT topic filter; see the module docstring.

    ``broker_url``, ``username``, ``password`` and ``keepalive_s`` are the plant's broker,
    used unless the source's config has a ``broker`` of its own; ``client_id`` is the stable
    id of its session unless the config names one.
    """

    def __init__(
        self,
        cfg: plant.MqttSource,
        broker_url: str = "mqtt://127.0.0.1:1883",
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        keepalive_s: int = 30,
        queue_size: int | None = None,
    ) -> None:
        super().__init__(cfg.id, log, *(() if queue_size is None else (queue_size,)))
        self.cfg = cfg
        endpoint = MqttEndpoint.of(cfg.broker, broker_url, username, password, keepalive_s)
        self.session = MqttSession.for_source(
            cfg.id,
            cfg,
            endpoint,
            client_id or f"cellwatch-src-{cfg.id}",
            [(cfg.topic, cfg.qos)],
            self,
        )
        self._reader = PayloadReader(cfg.payload)
        self._watchdog: asyncio.Task[None] | None = None
        self._keys: dict[tuple[str, str], SeriesKey] = {}
        self._series: dict[tuple[int, int], np.ndarray] = {}  # sample -> key index, per shape
        self.messages = 0

    @property
    def duplicates(self) -> int:
        """QoS 1 redeliveries of messages already received, dropped."""
        return self.session.duplicates

    @property
    def sessions_lost(self) -> int:
        """Reconnections on which the broker had kept no session (messages were lost)."""
        return self.session.sessions_lost

    async def __aenter__(self) -> Self:
        self.state = "connecting"
        await self.session.start()
        if self.cfg.stale_after_s is not None:
            self._watchdog = asyncio.create_task(
                self._watch(self.cfg.stale_after_s), name=f"watchdog-{self.id}"
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closed = True  # no state changes or warnings from the disconnect we ask for
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await self.session.stop()
        self._close_stream()

    async def _watch(self, quiet_s: float) -> None:
        """Rebuild the client when a connected session has delivered nothing for ``quiet_s``."""
        since = time.monotonic()
        while True:
            await asyncio.sleep(min(quiet_s / 4, 1.0))
            s = self.session
            last = max(since, s.last_message_mono or since)
            if s.connected and time.monotonic() - last >= quiet_s:
                self.stale += 1
                log.warning(
                    "source %s: no message on %s for %.0f s although connected; reconnecting",
                    self.id,
                    self.cfg.topic,
                    quiet_s,
                )
                self.last_error = f"no message for {quiet_s:g} s; reconnected"
                self.state = "connecting"
                await s.restart()
                since = time.monotonic()

    # -- session events (event loop) ---------------------------------------------------------

    def session_up(self, session_present: bool) -> None:
        self.reconnects = self.session.reconnects
        self._set_state("connected", "")

    def session_down(self, error: str) -> None:
        self._set_state("disconnected", error)

    def _set_state(self, state: str, error: str) -> None:
        if self._closed:
            return
        if state != self.state:
            level = logging.INFO if state == "connected" else logging.WARNING
            log.log(level, "source %s %s (%s) %s", self.id, state, self.session.address, error)
        self.state = state
        if error:
            self.last_error = error

    def message(self, topic: str, payload: bytes, received: float) -> None:
        self.messages += 1
        levels = topic_levels(self.cfg.topic, topic)
        if levels is None:
            # Most likely a subscription an earlier configuration left in the persistent
            # session; a new client_id (or persistent_session: false once) clears it.
            self._reject(
                f"topic {topic}: does not match {self.cfg.topic} (a subscription "
                "left in the broker's session by an earlier configuration?)"
            )
            return
        equipment = _FIELD.sub(lambda m: levels[int(m.group(1)) - 1], self.cfg.equipment)
        got = self._reader.read_columns(payload, levels)
        if isinstance(got, Columns):
            # The usual case, a clean batch: its arrays become the batch as they are.
            p, n = got.values.shape
            keys = tuple(self._key(equipment, param) for param in got.params)
            series = self._series.get((p, n))
            if series is None:
                if len(self._series) >= 64:
                    self._series.clear()
                series = self._series[(p, n)] = np.repeat(np.arange(p), n)
            self._emit_batch(
                Batch(
                    keys, series, np.tile(got.ts, p), got.values.ravel(), np.full(p * n, received)
                )
            )
            return
        for reason in got.rejections:
            self._reject(f"topic {topic}: {reason}")
        if got.samples:
            self._emit_batch(
                Batch.of(
                    [
                        Reading(
                            self._key(s.equipment or equipment, s.param),
                            s.ts,
                            s.value,
                            received_ts=received,
                        )
                        for s in got.samples
                    ]
                )
            )

    def _key(self, equipment: str, param: str) -> SeriesKey:
        """One SeriesKey per series, reused: building one per value is measurable at 50k/s."""
        name = (equipment, param)
        key = self._keys.get(name)
        if key is None:
            if len(self._keys) >= MAX_KEYS:
                self._keys.clear()
            key = self._keys[name] = SeriesKey(self.cfg.line, self.cfg.station, equipment, param)
        return key
