"""The simulator's MQTT side against a real Mosquitto: payload layout, topics, reconnection."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest

from models.configfile import parse_plant
from sim import Simulator
from sim.formation import FormationModel
from sim.mqtt_publisher import FormationPublisher
from tests.servers import free_port, mosquitto
from tests.waiting import eventually

pytestmark = pytest.mark.integration

TOPIC_RE = re.compile(r"^sim/line1/formation/cab(\d{2})/ch(\d{2})$")
EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "config" / "plant.example.yaml"


class _Subscriber:
    """A paho subscriber collecting (topic, payload) pairs; resubscribes after reconnects."""

    def __init__(self, url: str, topic: str) -> None:
        parts = urlsplit(url)
        self.topic = topic
        self.messages: list[tuple[str, bytes, float]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = lambda c, *_: c.subscribe(self.topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect_async(parts.hostname, parts.port)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, time.time()))

    def snapshot(self) -> list[tuple[str, bytes, float]]:
        with self.lock:
            return list(self.messages)


@contextmanager
def _subscribed(url: str, topic: str = "sim/line1/formation/+/+") -> Iterator[_Subscriber]:
    sub = _Subscriber(url, topic)
    sub.client.loop_start()
    try:
        assert sub.subscribed.wait(5), "subscription was not acknowledged"
        yield sub
    finally:
        sub.client.disconnect()
        sub.client.loop_stop()


async def test_without_batching_every_sample_is_its_own_message_of_scalars(
    mosquitto_url: str,
) -> None:
    with _subscribed(mosquitto_url) as sub:
        async with Simulator(
            opcua_port=0, broker_url=mosquitto_url, rate_hz=5.0, fault=None, mqtt_batch=False
        ) as sim:
            await eventually(lambda: len(sub.snapshot()) >= 8 * 6, 10, "six samples per channel")
            await eventually(
                lambda: sim.samples_published["mqtt"] >= 48, 5, "48 acknowledged samples"
            )
            counters = sim.samples_published
    # Each message is one sample: the broker acknowledged as many messages as samples.
    assert counters["mqtt"] >= 48
    stamps: dict[str, list[float]] = {}
    for topic, payload, _ in sub.snapshot():
        assert TOPIC_RE.match(topic), topic
        body = json.loads(payload)
        assert set(body) == {"ts", "v", "i", "q", "t"}
        assert all(isinstance(body[k], float) for k in body), body
        stamps.setdefault(topic, []).append(body["ts"])
    assert len(stamps) == 8
    for series in stamps.values():
        # Samples on the 5 Hz grid, in order, none repeated.
        steps = [b - a for a, b in zip(series, series[1:], strict=False)]
        assert all(s == pytest.approx(0.2, abs=1e-6) for s in steps), steps


async def test_formation_batches_arrive_once_a_second_per_channel(mosquitto_url: str) -> None:
    rate = 4.0
    with _subscribed(mosquitto_url) as sub:

        def per_channel() -> dict[str, int]:
            counts: dict[str, int] = {}
            for topic, _, _ in sub.snapshot():
                counts[topic] = counts.get(topic, 0) + 1
            return counts

        async with Simulator(
            opcua_port=0, broker_url=mosquitto_url, rate_hz=rate, fault=None
        ) as sim:
            await eventually(
                lambda: len(per_channel()) == 8 and min(per_channel().values()) >= 2,
                10,
                "two batches from each of the 8 channels",
            )
            await eventually(lambda: sim.samples_published["mqtt"] > 0, 5, "acknowledged samples")
    seen = set()
    for topic, payload, received in sub.snapshot():
        match = TOPIC_RE.match(topic)
        assert match, topic
        seen.add((int(match[1]), int(match[2])))
        body = json.loads(payload)
        assert set(body) == {"ts", "v", "i", "q", "t"}
        n = len(body["ts"])
        assert all(len(body[k]) == n for k in body), body
        # One batch a second at 4 Hz holds about 4 samples (the first may hold fewer).
        assert 1 <= n <= rate + 1
        ts = body["ts"]
        assert ts == sorted(ts) and len(set(ts)) == n
        assert all(sim.start_ts <= t <= received + 0.1 for t in ts)
        assert all(2.7 < v < 4.3 for v in body["v"])
        assert all(-2.1 < i < 2.1 for i in body["i"])
        assert all(0.0 <= q < 13.0 for q in body["q"])
        assert all(20.0 < t < 30.0 for t in body["t"])
    assert seen == {(cab, ch) for cab in (1, 2) for ch in (1, 2, 3, 4)}
    # The demo plant config reads exactly these topics and keys.
    (source,) = parse_plant(EXAMPLE_CONFIG.read_text(), str(EXAMPLE_CONFIG)).sources.mqtt
    assert all(mqtt.topic_matches_sub(source.topic, topic) for topic, _, _ in sub.snapshot())
    assert {source.payload.timestamp, *source.payload.values.values()} == {"ts", "v", "i", "q", "t"}
    counters = sim.samples_published
    assert counters["mqtt_dropped"] == 0 and counters["errors"] == 0
    assert 0 < counters["mqtt"] <= counters["mqtt_queued"]


async def test_publisher_survives_a_broker_restart(tmp_path: Path) -> None:
    port = free_port()
    model = FormationModel(seed=1, cabinets=1, channels=1, start_ts=time.time())
    publisher = FormationPublisher(f"mqtt://127.0.0.1:{port}")

    def publish_one() -> None:
        publisher.add(model.sample(time.time()))
        publisher.flush()

    try:
        with mosquitto(tmp_path, port) as (url, _), _subscribed(url) as sub:
            await publisher.start()
            await eventually(publisher.connected.is_set, 5, "the first connection")
            publish_one()
            await eventually(lambda: len(sub.snapshot()) >= 1, 5, "a message before the restart")
        # The broker is gone: publishing must neither raise nor block.
        await eventually(lambda: not publisher.connected.is_set(), 5, "the disconnect")
        publish_one()
        with mosquitto(tmp_path, port) as (url, _), _subscribed(url) as sub:
            await eventually(publisher.connected.is_set, 10, "the reconnection")
            publish_one()
            await eventually(lambda: len(sub.snapshot()) >= 1, 5, "a message after the restart")
            topic, payload, _ = sub.snapshot()[-1]
            assert topic == "sim/line1/formation/cab01/ch01"
            assert set(json.loads(payload)) == {"ts", "v", "i", "q", "t"}
    finally:
        await publisher.stop()
    assert publisher.counters["published"] >= 2
