"""Test-side tools: await a condition with a deadline, and a paho client that records messages."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any, Self
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt


class MqttProbe:
    """A paho client that subscribes to ``topics`` and records ``(topic, payload)`` pairs.

    ``async with`` returns once the broker has acknowledged the subscriptions, so nothing
    published afterwards can be missed.
    """

    def __init__(self, url: str, *topics: str) -> None:
        u = urlsplit(url)
        self._addr = (u.hostname or "127.0.0.1", u.port or 1883)
        self._topics = topics
        self._lock = threading.Lock()
        self._messages: list[tuple[str, bytes]] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"probe-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        if self._topics:
            client.subscribe([(t, 1) for t in self._topics])
        else:
            self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._messages.append((msg.topic, msg.payload))

    @property
    def messages(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self._messages)

    async def __aenter__(self) -> Self:
        self.client.connect(*self._addr)
        self.client.loop_start()
        if not await asyncio.to_thread(self._subscribed.wait, 10):
            raise AssertionError("probe did not get its subscription acknowledged")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)

    async def publish(self, topic: str, payload: bytes | str) -> None:
        """Publish with QoS 1 and wait for the broker's acknowledgement."""
        info = self.client.publish(topic, payload, qos=1)
        await asyncio.to_thread(info.wait_for_publish, 10)
