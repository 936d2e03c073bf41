"""MQTT source sessions against real Mosquitto brokers: MQTT 3.1.1 and 5, QoS 1 and 2,
persistent sessions across a stopped source and a broker restart, duplicates, the watchdog."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from edge.mqtt_source import MqttSource
from models.messages import Reading
from models.plant import MqttSource as MqttSourceConfig
from tests.edge.mqtt_publish import Device
from tests.servers import free_port, mosquitto_tls
from tests.waiting import eventually

pytestmark = pytest.mark.integration


def config(root: str, **extra: Any) -> MqttSourceConfig:
    return MqttSourceConfig.model_validate(
        {
            "id": "cells",
            "topic": f"{root}/+",
            "qos": 1,
            "line": "l1",
            "station": "formation",
            "equipment": "{1}",
            "payload": {"values": {"voltage": "v"}},
            **extra,
        }
    )


def sample(i: int) -> str:
    return json.dumps({"ts": 1_700_000_000 + i, "v": 3.0 + i / 1000})


async def take_until(src: MqttSource, marker_ts: float, timeout: float = 20) -> list[Reading]:
    """Readings up to and including the one at ``marker_ts``: whatever arrived before the
    marker, published last, is everything the source will ever get of the earlier ones."""
    out: list[Reading] = []
    async with asyncio.timeout(timeout):
        async for r in src:
            out.append(r)
            if r.ts == marker_ts:
                return out
    raise AssertionError(f"source ended after {len(out)} readings without the marker")


@pytest.mark.parametrize(("protocol", "qos"), [("3.1.1", 1), ("3.1.1", 2), ("5", 1), ("5", 2)])
async def test_messages_published_while_the_source_was_stopped_arrive_when_it_returns(
    mosquitto_url: str, protocol: str, qos: int
) -> None:
    n = 200
    root = f"t/{uuid.uuid4().hex[:8]}"
    cfg = config(root, protocol=protocol, qos=qos, client_id=f"gw-{uuid.uuid4().hex[:8]}")
    async with MqttSource(cfg, mosquitto_url) as src:
        await eventually(lambda: src.state == "connected", 10, "first connection")
    async with Device(mosquitto_url, protocol=protocol) as dev:
        for i in range(n):
            dev.send(f"{root}/cab01", sample(i), qos)
        await dev.publish(f"{root}/cab01", sample(n), qos)  # in order, so all are in
    async with MqttSource(cfg, mosquitto_url) as again:
        got = await take_until(again, 1_700_000_000 + n)
        assert again.session.sessions_lost == 0
    assert [r.ts - 1_700_000_000 for r in got] == list(range(n + 1))  # all, once, in order
    assert again.rejected == 0


async def test_a_clean_session_gets_nothing_of_the_time_away(mosquitto_url: str) -> None:
    root = f"t/{uuid.uuid4().hex[:8]}"
    cfg = config(root, persistent_session=False, client_id=f"gw-{uuid.uuid4().hex[:8]}")
    async with MqttSource(cfg, mosquitto_url) as src:
        await eventually(lambda: src.state == "connected", 10, "first connection")
    async with Device(mosquitto_url) as dev:
        await dev.publish(f"{root}/cab01", sample(0))
        async with MqttSource(cfg, mosquitto_url) as again:
            await eventually(lambda: again.state == "connected", 10, "second connection")
            await dev.publish(f"{root}/cab01", sample(1))
            got = await take_until(again, 1_700_000_001)
    assert [r.ts for r in got] == [1_700_000_001]


async def test_a_repeated_message_is_read_once_and_counted(mosquitto_url: str) -> None:
    root = f"t/{uuid.uuid4().hex[:8]}"
    async with MqttSource(config(root), mosquitto_url) as src, Device(mosquitto_url) as dev:
        await eventually(lambda: src.state == "connected", 10, "connected")
        for payload in (sample(0), sample(0), sample(1), sample(0)):  # a resend, as after a
            await dev.publish(f"{root}/cab01", payload)  # lost PUBACK
        await dev.publish(f"{root}/cab01", sample(2))
        got = await take_until(src, 1_700_000_002)
    assert [r.ts - 1_700_000_000 for r in got] == [0, 1, 2]
    assert src.duplicates == 2


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_a_broker_restart_loses_and_repeats_nothing(tmp_path: Path, protocol: str) -> None:
    """A device publishes at QoS 1 every 20 ms while the broker (with persistence) is stopped
    for about a second and started again: the source gets every message exactly once, and
    data flows again within the reconnect backoff (at most 5 s) of the broker's return."""
    port = free_port()
    root = f"t/{uuid.uuid4().hex[:8]}"
    cfg = config(root, protocol=protocol, client_id=f"gw-{uuid.uuid4().hex[:8]}")
    broker = mosquitto_tls(tmp_path, port, persistence=True)
    url, _ = await asyncio.to_thread(broker.__enter__)
    got: list[Reading] = []
    n = 150
    try:
        async with MqttSource(cfg, url) as src, Device(url, protocol=protocol) as dev:
            await eventually(lambda: src.state == "connected", 10, "connected")

            async def collect() -> None:
                async for r in src:
                    got.append(r)

            collector = asyncio.create_task(collect())
            for i in range(n):
                dev.send(f"{root}/cab01", sample(i))
                await asyncio.sleep(0.02)  # the device's sampling rate, not synchronisation
                if i == 50:
                    await asyncio.to_thread(broker.__exit__, None, None, None)
                    await eventually(lambda: src.state == "disconnected", 10, "loss noticed")
                    await asyncio.sleep(1.0)  # the outage
                    broker = mosquitto_tls(tmp_path, port, persistence=True)
                    await asyncio.to_thread(broker.__enter__)
                    back = time.monotonic()
                    before = len(got)
                    await eventually(lambda: src.state == "connected", 15, "source back")
                    connected_s = time.monotonic() - back
            await eventually(lambda: len(got) >= n, 20, f"all {n} readings")
            flowing_s = max(connected_s, 0.0)
            collector.cancel()
            reconnects, lost = src.reconnects, src.sessions_lost
    finally:
        await asyncio.to_thread(broker.__exit__, None, None, None)
    print(
        f"MQTT {protocol} broker restart: subscribed again {flowing_s:.2f} s after the "
        f"broker was back; {len(got)} of {n} readings, {before} before the restart"
    )
    assert [r.ts - 1_700_000_000 for r in got] == list(range(n))
    assert reconnects == 1 and lost == 0  # the broker kept the session on disk
    assert flowing_s <= 6.0


async def test_a_broker_that_forgot_the_session_is_counted_and_resubscribed(
    tmp_path: Path,
) -> None:
    port = free_port()
    root = f"t/{uuid.uuid4().hex[:8]}"
    broker = mosquitto_tls(tmp_path, port)
    url, _ = await asyncio.to_thread(broker.__enter__)
    try:
        async with MqttSource(config(root, client_id="gw-forgotten"), url) as src:
            await eventually(lambda: src.state == "connected", 10, "connected")
            await asyncio.to_thread(broker.__exit__, None, None, None)
            await eventually(lambda: src.state == "disconnected", 10, "loss noticed")
            broker = mosquitto_tls(tmp_path, port)  # no persistence: a blank broker
            await asyncio.to_thread(broker.__enter__)
            await eventually(lambda: src.state == "connected", 15, "subscribed again")
            async with Device(url) as dev:
                await dev.publish(f"{root}/cab01", sample(7))
            [r] = await take_until(src, 1_700_000_007)
    finally:
        await asyncio.to_thread(broker.__exit__, None, None, None)
    assert r.key.equipment == "cab01"
    assert src.sessions_lost == 1 and src.reconnects == 1


async def test_the_watchdog_rebuilds_a_connection_that_went_quiet(mosquitto_url: str) -> None:
    root = f"t/{uuid.uuid4().hex[:8]}"
    cfg = config(root, stale_after_s=0.5, client_id=f"gw-{uuid.uuid4().hex[:8]}")
    async with MqttSource(cfg, mosquitto_url) as src:
        await eventually(lambda: src.stale >= 1, 10, "the watchdog")
        await eventually(lambda: src.state == "connected" and src.reconnects >= 1, 10, "back")
        assert "no message for 0.5 s" in src.last_error
        async with Device(mosquitto_url) as dev:
            await dev.publish(f"{root}/cab01", sample(3))
        [r] = await take_until(src, 1_700_000_003)
    assert r.value == pytest.approx(3.003)


async def test_qos_0_delivers_while_connected(mosquitto_url: str) -> None:
    root = f"t/{uuid.uuid4().hex[:8]}"
    async with MqttSource(config(root, qos=0), mosquitto_url) as src, Device(mosquitto_url) as d:
        await eventually(lambda: src.state == "connected", 10, "connected")
        d.send(f"{root}/cab01", sample(1), qos=0)
        await d.publish(f"{root}/cab01", sample(2), qos=1)  # delivered at QoS 0 as well
        got = await take_until(src, 1_700_000_002)
    assert [r.ts - 1_700_000_000 for r in got] == [1, 2]


async def test_a_source_started_before_its_broker_connects_on_the_loop(tmp_path: Path) -> None:
    """No broker at start: the attempts fail, counted in the state and error, without a network
    thread; a broker started on the port is found within the backoff bound (5 s)."""
    port = free_port()
    root = f"t/{uuid.uuid4().hex[:8]}"
    async with MqttSource(config(root), f"mqtt://127.0.0.1:{port}") as src:
        await eventually(lambda: "cannot connect" in src.last_error, 10, "a failed attempt")
        assert src.state != "connected"
        assert not [t for t in threading.enumerate() if t.name.startswith("paho-mqtt-client-")]
        broker = mosquitto_tls(tmp_path, port)
        url, _ = await asyncio.to_thread(broker.__enter__)
        try:
            started = time.monotonic()
            await eventually(lambda: src.state == "connected", 15, "connected")
            waited = time.monotonic() - started
            async with Device(url) as dev:
                dev.send(f"{root}/cab01", sample(7))
                [r] = await take_until(src, 1_700_000_007)
        finally:
            await asyncio.to_thread(broker.__exit__, None, None, None)
    assert r.value == pytest.approx(3.007)
    assert waited <= 6.0
