"""The MQTT connection of a subscribing source: protocol, session, TLS, backoff, resubscribe.

Collectors that "look connected but ingest nothing" after a broker restart (ANCHORS.md, pain
point 2) fail in one of a few ways: a reconnect backoff that grows to minutes, a subscription
that is not renewed on the new connection, a broker that lost the session while the client
assumes it kept it, or a network thread that died on an exception. `MqttSession` closes each:

* the connection is retried with a backoff of 1 s doubling to at most `MAX_RETRY_S`;
* every connection subscribes again, so a broker that forgot the session (restarted without
  persistence) still delivers, and the source reports ``connected`` only once the broker has
  acknowledged the subscription;
* with a persistent session (MQTT 3.1.1 ``clean_session=False``; MQTT 5 ``clean_start=False``
  and a session expiry) under a stable client id, what was published at QoS 1 or 2 while the
  source was away is delivered when it comes back; a reconnect that finds no session on the
  broker is counted (``sessions_lost``) and logged, because those messages are gone;
* a QoS 1 message delivered twice (the broker's redelivery, or a publisher's resend after a
  lost acknowledgement) is dropped and counted (``duplicates``): a message identical to one of
  the last `RECENT_MESSAGES` (same topic, same bytes) is a repeat, since payloads carry their
  timestamps;
* paho's network I/O runs on the event loop (`edge.mqtt_loop.LoopDriver`), not on a thread of
  its own, so callbacks run where all edge state lives; paho is told to survive an exception
  in one, and `restart` rebuilds the client from scratch for a watchdog that decides the
  connection is stuck.

TLS uses an `ssl.SSLContext` built from the config (CA file or the system's CAs, an optional
client certificate); unreadable files are a `ValueError` at construction, naming the key.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.mqtt_loop import LoopDriver
from models.plant import MqttBroker, MqttClientConfig, MqttTls

__all__ = [
    "MAX_RETRY_S",
    "RECENT_MESSAGES",
    "MqttEndpoint",
    "MqttSession",
    "SessionEvents",
    "tls_context",
]

log = logging.getLogger("cellwatch.edge.mqtt")

#: Longest wait between two connection attempts (seconds); paho doubles from 1 s up to it.
MAX_RETRY_S = 5
#: Recent messages remembered to recognise a QoS 1 redelivery of one already received.
RECENT_MESSAGES = 10_000


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    """Where and how to connect: address, TLS and credentials, resolved from the config."""

    host: str
    port: int
    tls: MqttTls | None = None
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30

    @classmethod
    def of(
        cls,
        broker: MqttBroker | None,
        url: str = "mqtt://127.0.0.1:1883",
        username: str | None = None,
        password: str | None = None,
        keepalive_s: int = 30,
    ) -> MqttEndpoint:
        """A source's own ``broker`` section if it has one, else the plant broker given.

        Examples:
            >>> MqttEndpoint.of(None, "mqtt://10.0.0.5:1884").port
            1884
            >>> e = MqttEndpoint.of(MqttBroker(url="mqtts://plc"), "mqtt://unused")
            >>> (e.host, e.port, e.tls)
            ('plc', 8883, MqttTls(ca_file=None, cert_file=None, key_file=None, \
verify_hostname=True))
        """
        if broker is not None:
            url, username, keepalive_s = broker.url, broker.username, broker.keepalive_s
            password = broker.password.get_secret_value() if broker.password else None
        parts = urlsplit(url)
        secure = parts.scheme == "mqtts"
        tls = (broker.tls if broker is not None else None) or (MqttTls() if secure else None)
        port = parts.port or (8883 if secure else 1883)
        return cls(parts.hostname or "127.0.0.1", port, tls, username, password, keepalive_s)


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails: paho drops the socket without closing it, and a
    broker that keeps refusing our certificate would leak one per retry."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(tls: MqttTls, where: str = "tls") -> ssl.SSLContext:
    """A client context trusting ``ca_file`` (the system's CAs without one) and presenting
    ``cert_file``/``key_file`` when given; ValueError naming the key of a file it cannot use."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.sslsocket_class = _ClosingSSLSocket
    ctx.check_hostname = tls.verify_hostname
    if tls.ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=tls.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"{where}.ca_file: cannot use {tls.ca_file!r}: {exc}") from None
    if tls.cert_file is not None:
        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            files = tls.cert_file if tls.key_file is None else f"{tls.cert_file}, {tls.key_file}"
            raise ValueError(f"{where}.cert_file/key_file: cannot use {files}: {exc}") from None
    return ctx


class SessionEvents(Protocol):
    """What a session reports to its source, always on the event loop."""

    def session_up(self, session_present: bool) -> None: ...

    def session_down(self, error: str) -> None: ...

    def message(self, topic: str, payload: bytes, received: float) -> None: ...


class _Recent:
    """A bounded set of recent message fingerprints, oldest forgotten first."""

    def __init__(self, size: int) -> None:
        self._order: deque[int] = deque()
        self._seen: set[int] = set()
        self._size = size

    def add(self, key: int) -> bool:
        """Remember ``key``; False if it was remembered already."""
        if key in self._seen:
            return False
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > self._size:
            self._seen.discard(self._order.popleft())
        return True


class MqttSession:
    """One subscribing MQTT client; see the module docstring. Start and stop on the loop."""

    def __init__(
        self,
        name: str,
        endpoint: MqttEndpoint,
        client_id: str,
        subscriptions: Sequence[tuple[str, int]],
        events: SessionEvents,
        *,
        protocol: Literal["3.1.1", "5"] = "3.1.1",
        persistent: bool = True,
        session_expiry_s: int = 86_400,
        receive_maximum: int | None = None,
        tls_key: str = "broker.tls",
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.client_id = client_id
        self.subscriptions = tuple(subscriptions)
        self.events = events
        self.protocol = protocol
        self.persistent = persistent
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self._tls = tls_context(endpoint.tls, tls_key) if endpoint.tls is not None else None
        self.connected = False
        self.connections = 0
        self.reconnects = 0
        self.sessions_lost = 0
        self.duplicates = 0
        self.last_message_mono: float | None = None
        self._session_present = False
        self._refused = False
        self._recent = _Recent(RECENT_MESSAGES)
        self._driver: LoopDriver | None = None
        self._client = self._new_client()
        self._running = False

    @classmethod
    def for_source(
        cls,
        name: str,
        cfg: MqttClientConfig,
        endpoint: MqttEndpoint,
        client_id: str,
        subscriptions: Sequence[tuple[str, int]],
        events: SessionEvents,
    ) -> MqttSession:
        """A session with the protocol and session options of a source's config."""
        return cls(
            name,
            endpoint,
            cfg.client_id or client_id,
            subscriptions,
            events,
            protocol=cfg.protocol,
            persistent=cfg.persistent_session,
            session_expiry_s=cfg.session_expiry_s,
            receive_maximum=cfg.receive_maximum,
            tls_key=f"source {name}: broker.tls",
        )

    @property
    def address(self) -> str:
        scheme = "mqtts" if self._tls is not None else "mqtt"
        return f"{scheme}://{self.endpoint.host}:{self.endpoint.port}"

    def _new_client(self) -> mqtt.Client:
        v5 = self.protocol == "5"
        options: dict[str, Any] = {} if v5 else {"clean_session": not self.persistent}
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            **options,
        )
        client.suppress_exceptions = True
        if self._tls is not None:
            client.tls_set_context(self._tls)
            if self.endpoint.tls is not None and not self.endpoint.tls.verify_hostname:
                client.tls_insecure_set(True)  # else paho checks the name itself
        if self.endpoint.username is not None:
            client.username_pw_set(self.endpoint.username, self.endpoint.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    # -- lifecycle (event loop) -------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background; an absent broker is retried, not an error."""
        self._running = True
        client = self._client
        if self.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.session_expiry_s if self.persistent else 0
            if self.receive_maximum is not None:
                props.ReceiveMaximum = self.receive_maximum
            client.connect_async(
                self.endpoint.host,
                self.endpoint.port,
                self.endpoint.keepalive_s,
                clean_start=not self.persistent,
                properties=props,
            )
        else:
            client.connect_async(self.endpoint.host, self.endpoint.port, self.endpoint.keepalive_s)
        self._driver = LoopDriver(client, self._connect_failed, max_retry_s=MAX_RETRY_S)
        self._driver.start()

    async def stop(self) -> None:
        """Disconnect (the broker keeps a persistent session) and end the connection task."""
        self._running = False
        self.connected = False
        if self._driver is not None:
            await self._driver.stop()
            self._driver = None

    async def restart(self) -> None:
        """Throw the client away and connect with a new one (same id, so same session)."""
        await self.stop()
        self._client = self._new_client()
        await self.start()

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> bool:
        """Hand a message to paho (on the loop); False when it cannot be queued."""
        info = self._client.publish(topic, payload, qos=qos)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    # -- paho callbacks: the driver runs paho on the loop, so they act directly ---------------

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self._down(f"broker refused the connection: {rc}", True)
            return
        if self._driver is not None:
            self._driver.mark_connected()
        self._connected(bool(flags.session_present))
        client.subscribe(list(self.subscriptions))

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
        refused = [
            f"{topic}: {code}"
            for (topic, _q), code in zip(self.subscriptions, codes, strict=False)
            if code.is_failure
        ]
        if refused:
            self._down(f"subscription refused: {refused[0]}")
        else:
            granted = [int(getattr(c, "value", c)) for c in codes]
            self._subscribed(granted)

    def _connect_failed(self, why: str) -> None:
        self._down(f"cannot connect to {self.address}: {why or 'no answer'}")

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._down(f"disconnected: {rc}")

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        # paho types payload bytes | bytearray; a received one is bytes, which bytes() returns
        # as is (a bytearray could not be hashed for the duplicate check).
        self._message(msg.topic, bytes(msg.payload), time.time())

    # -- event loop ---------------------------------------------------------------------------

    def _connected(self, session_present: bool) -> None:
        self._refused = False
        if not self._running:
            return
        if self.persistent and self.connections and not session_present:
            self.sessions_lost += 1
            log.warning(
                "source %s: the broker at %s kept no session for %s; what was published while "
                "it was disconnected is lost",
                self.name,
                self.address,
                self.client_id,
            )
        self._session_present = session_present

    def _subscribed(self, granted: list[int]) -> None:
        if not self._running:
            return
        for (topic, qos), got in zip(self.subscriptions, granted, strict=False):
            if got < qos:
                log.warning(
                    "source %s: the broker granted QoS %d for %s, not %d",
                    self.name,
                    got,
                    topic,
                    qos,
                )
        if self.connections:
            self.reconnects += 1
        self.connections += 1
        self.connected = True
        self.events.session_up(self._session_present)

    def _down(self, error: str, refusal: bool = False) -> None:
        if not self._running:
            return  # the disconnect we asked for
        if self._refused and error.startswith("disconnected"):
            return  # the close that follows a refusal: the refusal says more
        self._refused = refusal
        self.connected = False
        self.events.session_down(error)

    def _message(self, topic: str, payload: bytes, received: float) -> None:
        self.last_message_mono = time.monotonic()
        if not self._recent.add(hash((topic, payload))):
            # The same bytes on the same topic again: a QoS 1 redelivery, by the broker (DUP
            # set) or by a publisher that resent after a lost PUBACK (DUP not set). Payloads
            # carry their timestamps, so a repeat is the same readings once more.
            self.duplicates += 1
            return
        self.events.message(topic, payload, received)
