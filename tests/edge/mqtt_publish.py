"""A device-side MQTT publisher for the MQTT source tests: any QoS, protocol, TLS, credentials.

`MqttProbe` publishes at QoS 1 on a plain connection; the session tests need QoS 2, MQTT 5 and
TLS brokers with passwords, so this publisher takes what the source under test takes.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import uuid
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt


class Device:
    """A paho client publishing like equipment does; ``async with`` waits for the CONNACK."""

    def __init__(
        self,
        url: str,
        *,
        protocol: str = "3.1.1",
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
    ) -> None:
        u = urlsplit(url)
        self._addr = (u.hostname or "127.0.0.1", u.port or 1883)
        v5 = protocol == "5"
        options: dict[str, Any] = {} if v5 else {"clean_session": False}
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"device-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            **options,
        )
        if ca is not None:
            ctx = ssl.create_default_context(cafile=str(ca))
            if cert is not None:
                ctx.load_cert_chain(str(cert), str(key) if key else None)
            self.client.tls_set_context(ctx)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(1, 2)
        self._connected = threading.Event()
        self.client.on_connect = lambda *_: self._connected.set()
        self.client.on_disconnect = lambda *_: self._connected.clear()

    async def __aenter__(self) -> Self:
        self.client.connect_async(*self._addr)
        self.client.loop_start()
        if not await asyncio.to_thread(self._connected.wait, 10):
            raise AssertionError("device publisher could not connect")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)

    def send(self, topic: str, payload: bytes | str, qos: int = 1) -> mqtt.MQTTMessageInfo:
        """Queue a message (paho keeps it across a reconnect until acknowledged)."""
        return self.client.publish(topic, payload, qos=qos)

    async def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        """Publish and wait until the broker has acknowledged it (QoS > 0)."""
        info = self.send(topic, payload, qos)
        if qos:
            await asyncio.to_thread(info.wait_for_publish, 10)
