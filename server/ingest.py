"""Ingest: the server's MQTT subscription and what it does with each envelope.

paho-mqtt runs its network loop in its own thread (it reconnects by itself and we resubscribe
in ``on_connect``, so a broker restart heals without help); every message is handed to the
asyncio loop with ``call_soon_threadsafe``, so all state (store, alerts, counters, the Influx
buffer) is touched from one thread only and needs no locks. Per envelope: decode strictly
(a `models.wire.WireError` is a counted, logged rejection naming topic and reason, never a
crash), drop duplicates on ``(edge_id, seq)`` (QoS 1 delivers at least once), then send its
points to InfluxDB, keep detections and apply them to the alerts, keep the latest statistics
per series and the latest status per edge for the API.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from models.messages import Detection, EdgeStatus, Envelope, Kind, Reading, SeriesKey, Stats
from models.plant import PlantConfig
from models.wire import WireError, decode
from server.alerts import AlertBook
from server.influx import InfluxWriter
from server.schema import points
from server.store import Store

__all__ = ["EdgeReport", "Ingest"]

log = logging.getLogger("cellwatch.server.ingest")

_instances = itertools.count(1)


@dataclass(frozen=True, slots=True)
class EdgeReport:
    """The latest status of one edge and when (server monotonic time) it arrived."""

    status: EdgeStatus
    received_monotonic: float


class Ingest:
    """Subscribes to ``{topic_prefix}/#`` at QoS 1 and processes envelopes; ``async with``.

    ``client_id`` defaults to a name unique to this process and instance; the session is clean
    (the broker keeps nothing for us while we are away).
    """

    def __init__(
        self,
        cfg: PlantConfig,
        store: Store,
        alerts: AlertBook,
        influx: InfluxWriter | None = None,
        *,
        client_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.alerts = alerts
        self.influx = influx
        self.topic_filter = f"{cfg.broker.topic_prefix}/#"
        self.client_id = client_id or f"cellwatch-server-{os.getpid()}-{next(_instances)}"
        self.latest: dict[SeriesKey, Stats] = {}
        self.edges: dict[str, EdgeReport] = {}
        self.messages = 0
        self.rejected = 0
        self.duplicates = 0
        self.readings = 0
        self.detections = 0
        self.failed = 0
        self._clock = clock
        self._connected = False
        self._subscribed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None

    @property
    def connected(self) -> bool:
        """True while the MQTT connection is up."""
        return self._connected

    def counters(self) -> dict[str, int]:
        return {
            "messages": self.messages, "rejected": self.rejected, "duplicates": self.duplicates,
            "readings": self.readings, "detections": self.detections, "failed": self.failed,
        }

    async def wait_subscribed(self, timeout: float = 10.0) -> None:
        """Return once the subscription is in place; `TimeoutError` after ``timeout`` s."""
        async with asyncio.timeout(timeout):
            await self._subscribed.wait()

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Ingest:
        self._loop = asyncio.get_running_loop()
        url = urlsplit(self.cfg.broker.url)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if self.cfg.broker.username:
            pw = self.cfg.broker.password
            client.username_pw_set(
                self.cfg.broker.username, None if pw is None else pw.get_secret_value()
            )
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.connect_async(url.hostname or "127.0.0.1", url.port or 1883,
                             keepalive=self.cfg.broker.keepalive_s)
        client.loop_start()
        self._client = client
        log.info("subscribing to %s on %s", self.topic_filter, self.cfg.broker.url)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        client.loop_stop()  # joins paho's thread: it exits at once after a disconnect
        self._connected = False
        # Run the handlers paho queued on the loop before it stopped, so nothing received is
        # left unprocessed.
        await asyncio.sleep(0)

    # -- paho's thread -------------------------------------------------------------------------

    def _to_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            log.error("message arrived after the server stopped; not processed")
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed between the check and the call
            log.error("message arrived while the server stopped; not processed")

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if rc.is_failure:
            log.warning("broker %s refused the connection: %s", self.cfg.broker.url, rc)
            return
        log.info("connected to %s", self.cfg.broker.url)
        self._to_loop(self._set_connected, True)
        client.subscribe(self.topic_filter, qos=1)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        self._to_loop(self._set_connected, False)
        if self._client is not None:  # not our own disconnect at exit
            log.warning("lost the broker %s (%s); paho reconnects", self.cfg.broker.url, rc)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any
    ) -> None:
        if any(rc.is_failure for rc in rcs):
            log.error("broker refused the subscription to %s: %s", self.topic_filter, rcs)
            return
        self._to_loop(self._subscribed.set)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._to_loop(self._handle_guarded, msg.topic, msg.payload)

    # -- the asyncio thread --------------------------------------------------------------------

    def _set_connected(self, up: bool) -> None:
        # Connection and subscription state change together, on the loop, in the order paho
        # saw them, so a reader never sees "disconnected" with a stale "subscribed".
        self._connected = up
        if not up:
            self._subscribed.clear()

    def _handle_guarded(self, topic: str, payload: bytes) -> None:
        try:
            self.handle(topic, payload)
        except Exception:
            # A fault of ours (such as a full disk under the store), not of the message: count
            # and log it with its traceback, and keep ingesting.
            self.failed += 1
            log.exception("failed to process a message on %s", topic)

    def handle(self, topic: str, payload: bytes) -> None:
        """Process one MQTT message (called on the asyncio loop)."""
        self.messages += 1
        try:
            env = decode(payload)
        except WireError as e:
            self._reject(topic, str(e))
            return
        kind = topic.rsplit("/", 1)[-1]
        if kind != env.kind.value:
            self._reject(topic, f"topic is for {kind!r}, the envelope carries {env.kind.value!r}")
            return
        now = self._clock()
        with self.store.transaction():
            if not self.store.mark_seen(env.edge_id, env.seq, now):
                self.duplicates += 1
                log.debug("duplicate envelope %s/%d on %s ignored", env.edge_id, env.seq, topic)
                return
            if env.kind is Kind.DETECTION:
                self._detections(env, now)
        if env.kind is Kind.TELEMETRY:
            self.readings += sum(1 for r in env.items if isinstance(r, Reading))
        elif env.kind is Kind.STATS:
            for s in env.items:
                if isinstance(s, Stats):
                    self.latest[s.key] = s
        elif env.kind is Kind.STATUS:
            for st in env.items:
                if isinstance(st, EdgeStatus):
                    self.edges[env.edge_id] = EdgeReport(st, time.monotonic())
        if self.influx is not None:
            self.influx.add(points(env, self.cfg.site.id))

    def _detections(self, env: Envelope, now: float) -> None:
        for d in env.items:
            if not isinstance(d, Detection):
                continue
            alert = self.alerts.observe(d)
            self.store.add_detection(env.edge_id, d, now, alert.id)
            self.detections += 1
            if alert.count == 1:
                log.warning("alert %d opened: %s %s %s", alert.id, d.key, d.rule, d.message)

    def _reject(self, topic: str, reason: str) -> None:
        self.rejected += 1
        log.warning("rejected message on %s: %s", topic, reason)
