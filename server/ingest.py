"""Ingest: the server's MQTT subscription and what it does with each envelope.

paho-mqtt runs its network loop in its own thread (it reconnects by itself and we resubscribe
in ``on_connect``); every message is handed to the asyncio loop with
``call_soon_threadsafe``, so all state (store, alerts, counters, the writer) is touched from
one thread only and needs no locks.

No envelope is lost between the broker and the series store: the session is persistent
(``clean_session`` off, a client id stable across restarts), and each message is acknowledged
(paho's manual ack) only once the writer has settled its points, so whatever is not stored
stays with the broker, through an InfluxDB outage or a server restart. Per envelope: decode
strictly (a `models.wire.WireError` is a counted, logged rejection naming topic and reason,
acknowledged since it can never become valid), drop duplicates on ``(edge_id, seq)`` with
bounded memory (`server.dedup`), apply detections to the alerts exactly once (an envelope
received before a restart but not stored has its points written again, its alerts not
counted twice), keep the latest statistics per series and status per edge for the API, and
hand its frames to the writer.

Back-pressure: at most ``max_unacked`` messages are in the server's hands (received, not yet
acknowledged). Beyond that paho's network thread waits inside its message callback, so it
stops reading the socket and the broker keeps the rest queued (TCP flow control; MQTT 5's
Receive Maximum says the same to the broker up front). Brokers do not reliably hold their own
in-flight window for 3.1.1 clients: Mosquitto 2.0 sent over a thousand unacknowledged
messages at once after an outage in our tests, so the bound is kept here. While paho waits it
sends no keepalive; an outage longer than 1.5 keepalives ends the connection, and paho
reconnects once there is room (the broker then delivers the unacknowledged messages again,
which are duplicates by then). With ``share_group`` several servers split the edge topics
through a shared subscription (``$share/GROUP/...``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from models.messages import Detection, EdgeStatus, Envelope, Kind, Reading, SeriesKey, Stats
from models.plant import PlantConfig
from models.wire import WireError, decode
from server.alerts import AlertBook
from server.dedup import Dedup
from server.schema import frames
from server.store import Store
from server.writer import SeriesWriter

__all__ = ["EdgeReport", "Ingest", "default_client_id"]

log = logging.getLogger("cellwatch.server.ingest")

#: Unacknowledged messages that make the writer send at once. Mosquitto's default in-flight
#: window is 20 messages; flushing at half of it keeps the broker from stalling on a timer.
ACK_WINDOW = 10
#: Messages received and not yet acknowledged, at most (and the MQTT 5 Receive Maximum).
MAX_UNACKED = 50
#: MQTT 5 session expiry: how long the broker keeps our session (and queues) while we are away.
SESSION_EXPIRY_S = 7 * 24 * 3600
_PRUNE_EVERY = 1024


def default_client_id(cfg: PlantConfig) -> str:
    """A client id stable across restarts (so the broker resumes the session), distinct per
    site, topic prefix and host (so two servers never take over each other's session).

    Examples:
        >>> from models.plant import PlantConfig
        >>> lines = [{"id": "l1", "area": "cells"}]
        >>> cfg = PlantConfig.model_validate({"site": {"id": "p1"}, "lines": lines})
        >>> default_client_id(cfg).startswith("cellwatch-server-p1-")
        True
    """
    tag = hashlib.sha1(
        f"{cfg.broker.topic_prefix}|{socket.gethostname()}".encode(), usedforsecurity=False
    ).hexdigest()[:10]
    return f"cellwatch-server-{cfg.site.id}-{tag}"


@dataclass(frozen=True, slots=True)
class EdgeReport:
    """The latest status of one edge and when (server monotonic time) it arrived."""

    status: EdgeStatus
    received_monotonic: float


class Ingest:
    """Subscribes to ``{topic_prefix}/#`` at QoS 1 and processes envelopes; ``async with``.

    ``writer`` stores the series (without one, messages are acknowledged once processed).
    ``client_id`` defaults to `default_client_id`; ``share_group`` subscribes through
    ``$share/GROUP/``; ``mqtt5`` speaks MQTT 5 (a shared subscription with Mosquitto works
    with both); ``dedup_window`` is how far back per edge duplicates are recognised;
    ``max_unacked`` bounds the messages in hand (see the module docstring).
    """

    def __init__(
        self,
        cfg: PlantConfig,
        store: Store,
        alerts: AlertBook,
        writer: SeriesWriter | None = None,
        *,
        client_id: str | None = None,
        clock: Callable[[], float] = time.time,
        share_group: str | None = None,
        mqtt5: bool = False,
        dedup_window: int = 4096,
        max_unacked: int = MAX_UNACKED,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.alerts = alerts
        self.writer = writer
        base = f"{cfg.broker.topic_prefix}/#"
        self.topic_filter = f"$share/{share_group}/{base}" if share_group else base
        self.client_id = client_id or default_client_id(cfg)
        self.mqtt5 = mqtt5
        self.latest: dict[SeriesKey, Stats] = {}
        self.edges: dict[str, EdgeReport] = {}
        self.messages = 0
        self.rejected = 0
        self.duplicates = 0
        self.readings = 0
        self.detections = 0
        self.failed = 0
        self.acked = 0
        self.rewritten = 0
        self.dedup = Dedup(dedup_window)
        self._clock = clock
        self._connected = False
        self._subscribed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self.max_unacked = max_unacked
        self.window_waits = 0
        self._inflight: dict[tuple[str, int], list[tuple[int, int]]] = {}
        self._in_hand = 0
        self._window = threading.Condition()
        self._stopping = False
        self._settled = 0

    @property
    def connected(self) -> bool:
        """True while the MQTT connection is up."""
        return self._connected

    def counters(self) -> dict[str, int]:
        return {
            "messages": self.messages,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "readings": self.readings,
            "detections": self.detections,
            "failed": self.failed,
            "acked": self.acked,
            "unacked": sum(len(w) for w in self._inflight.values()),
            "window_waits": self.window_waits,
            "rewritten": self.rewritten,
        }

    async def wait_subscribed(self, timeout: float = 10.0) -> None:
        """Return once the subscription is in place; `TimeoutError` after ``timeout`` s."""
        async with asyncio.timeout(timeout):
            await self._subscribed.wait()

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Ingest:
        self._loop = asyncio.get_running_loop()
        self.dedup.load(self.store.stored_window(self.dedup.window))
        url = urlsplit(self.cfg.broker.url)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=None if self.mqtt5 else False,
            protocol=mqtt.MQTTv5 if self.mqtt5 else mqtt.MQTTv311,
            manual_ack=True,
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
        host, port = url.hostname or "127.0.0.1", url.port or 1883
        if self.mqtt5:
            # paho's Properties.__init__ has no annotations.
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            props.ReceiveMaximum = self.max_unacked
            client.connect_async(
                host,
                port,
                keepalive=self.cfg.broker.keepalive_s,
                clean_start=False,
                properties=props,
            )
        else:
            client.connect_async(host, port, keepalive=self.cfg.broker.keepalive_s)
        client.loop_start()
        self._client = client
        log.info(
            "subscribing to %s on %s as %s", self.topic_filter, self.cfg.broker.url, self.client_id
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with self._window:
            self._stopping = True
            self._window.notify_all()
        client.disconnect()
        client.loop_stop()  # joins paho's thread: it exits at once after a disconnect
        self._connected = False
        # Run the handlers paho queued on the loop before it stopped, so nothing received is
        # left unprocessed (what is not stored yet stays unacknowledged at the broker).
        await asyncio.sleep(0)
        pending = sum(len(w) for w in self._inflight.values())
        if pending:
            log.info("%d messages left unacknowledged; the broker delivers them again", pending)

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
        log.info(
            "connected to %s (session %s)",
            self.cfg.broker.url,
            "resumed" if flags.session_present else "new",
        )
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
        with self._window:
            if self._in_hand >= self.max_unacked:
                self.window_waits += 1
                while self._in_hand >= self.max_unacked and not self._stopping:
                    self._window.wait(1.0)
            if self._stopping:
                return  # left unacknowledged: the broker delivers it again
            self._in_hand += 1
        self._to_loop(self._handle_guarded, msg.topic, msg.payload, msg.mid, msg.qos)

    # -- the asyncio thread --------------------------------------------------------------------

    def _set_connected(self, up: bool) -> None:
        # Connection and subscription state change together, on the loop, in the order paho
        # saw them, so a reader never sees "disconnected" with a stale "subscribed".
        self._connected = up
        if not up:
            self._subscribed.clear()

    def _handle_guarded(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        try:
            self.handle(topic, payload, mid, qos)
        except Exception:
            # A fault of ours (such as a full disk under the store), not of the message: count
            # and log it with its traceback, and keep ingesting. The message stays
            # unacknowledged, so the broker delivers it again after a reconnect.
            self.failed += 1
            log.exception("failed to process a message on %s", topic)
            self._release(1)

    def handle(self, topic: str, payload: bytes, mid: int = 0, qos: int = 0) -> None:
        """Process one MQTT message (called on the asyncio loop)."""
        self.messages += 1
        try:
            env = decode(payload)
        except WireError as e:
            self._reject(topic, str(e), mid, qos)
            return
        kind = topic.rsplit("/", 1)[-1]
        if kind != env.kind.value:
            self._reject(
                topic, f"topic is for {kind!r}, the envelope carries {env.kind.value!r}", mid, qos
            )
            return
        key = (env.edge_id, env.seq)
        if self.dedup.seen(*key):
            self.duplicates += 1
            log.debug("duplicate envelope %s/%d on %s ignored", env.edge_id, env.seq, topic)
            self._ack(mid, qos)
            return
        waiting = self._inflight.get(key)
        if waiting is not None:  # redelivered while its first copy is being written
            self.duplicates += 1
            waiting.append((mid, qos))
            return
        now = self._clock()
        alert_ids: list[int | None] | None = None
        if env.kind is Kind.DETECTION:
            with self.store.transaction():
                if self.store.mark_received(env.edge_id, env.seq, now):
                    alert_ids = self._detections(env, now)
                else:
                    self.rewritten += 1
                    log.info(
                        "envelope %s/%d arrived before a restart: alerts counted then, "
                        "points written again",
                        env.edge_id,
                        env.seq,
                    )
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
        self._inflight[key] = [(mid, qos)]
        if self.writer is None:
            self._stored(key, now)
            return
        ticket = self.writer.add(frames(env, self.cfg.site.id, alert_ids))
        ticket.add_done_callback(lambda: self._stored(key, now))
        if len(self._inflight) >= ACK_WINDOW or self.writer.full:
            self.writer.kick()

    def _stored(self, key: tuple[str, int], received: float) -> None:
        """The envelope's points are settled: remember it and acknowledge every copy."""
        waiting = self._inflight.pop(key, [])
        self.store.mark_stored([(key[0], key[1], received)])
        self.dedup.add(*key)
        for mid, qos in waiting:
            self._ack(mid, qos)
        self._settled += 1
        if self._settled % _PRUNE_EVERY == 0:
            floor = self.dedup.floor(key[0])
            if floor is not None:
                self.store.prune_seen(key[0], floor)

    def _release(self, n: int) -> None:
        """Give ``n`` places of the window back (paho's thread may be waiting for one)."""
        with self._window:
            self._in_hand = max(0, self._in_hand - n)
            self._window.notify_all()

    def _ack(self, mid: int, qos: int) -> None:
        self._release(1)
        client = self._client
        if qos == 0 or client is None:
            return
        rc = client.ack(mid, qos)
        if rc == mqtt.MQTT_ERR_SUCCESS:
            self.acked += 1
        else:  # not connected: the broker redelivers it, and it is a duplicate then
            log.debug("could not acknowledge message %d (%s)", mid, rc)

    def _detections(self, env: Envelope, now: float) -> list[int | None]:
        ids: list[int | None] = []
        for d in env.items:
            if not isinstance(d, Detection):
                ids.append(None)
                continue
            alert = self.alerts.observe(d)
            self.store.add_detection(env.edge_id, d, now, alert.id)
            self.detections += 1
            ids.append(alert.id)
            if alert.count == 1:
                log.warning("alert %d opened: %s %s %s", alert.id, d.key, d.rule, d.message)
        return ids

    def _reject(self, topic: str, reason: str, mid: int, qos: int) -> None:
        self.rejected += 1
        log.warning("rejected message on %s: %s", topic, reason)
        self._ack(mid, qos)
