"""Fixtures of the server tests: plant configurations, an MQTT publisher, condition polling."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from models.plant import PlantConfig

_prefixes = itertools.count(1)


def plant(broker_url: str, **sections: Any) -> PlantConfig:
    """A one-line plant on ``broker_url`` with a topic prefix unique to the caller."""
    body: dict[str, Any] = {
        "site": {"id": "plant1", "name": "Test plant"},
        "broker": {"url": broker_url, "topic_prefix": f"test{next(_prefixes)}/cw"},
        "server": {"host": "127.0.0.1", "port": 0, "db_path": ":memory:"},
        "lines": [{"id": "line1", "area": "cells"}],
    }
    body.update(sections)
    return PlantConfig.model_validate(body)


class Publisher:
    """A paho client that publishes at QoS 1 and waits for the broker's PUBACK."""

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="")
        self.client.connect(u.hostname or "127.0.0.1", u.port or 1883)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=5)
        if not info.is_published():
            raise AssertionError(f"broker did not acknowledge a message on {topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(mosquitto_url: str) -> Iterator[Publisher]:
    pub = Publisher(mosquitto_url)
    try:
        yield pub
    finally:
        pub.close()
