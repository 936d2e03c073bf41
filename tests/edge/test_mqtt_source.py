"""MQTT source against a real Mosquitto: single and batched payloads, malformed input, status."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path

import pytest

from edge.mqtt_source import MqttSource, equipment_name
from models.messages import Quality, Reading, SeriesKey
from models.plant import MqttSource as MqttSourceConfig
from tests.edge.probe import MqttProbe
from tests.servers import free_port, mosquitto
from tests.waiting import eventually

pytestmark = pytest.mark.integration


def config(root: str) -> MqttSourceConfig:
    return MqttSourceConfig.model_validate({
        "id": "cabinets", "topic": f"{root}/+/+", "qos": 1, "line": "l1", "station": "formation",
        "equipment": "{1}-{2}",
        "payload": {"timestamp": "ts", "timestamp_unit": "ms",
                    "values": {"voltage": "v", "cell_temperature": "t"}},
    })


async def take(src: MqttSource, n: int) -> list[Reading]:
    out: list[Reading] = []
    async with asyncio.timeout(10):
        async for r in src:
            out.append(r)
            if len(out) == n:
                return out
    raise AssertionError(f"source ended after {len(out)} of {n} readings")


def test_equipment_name_from_topic_levels() -> None:
    assert equipment_name("a/+/b/+", "{2}.{1}", "a/x/b/y") == "y.x"
    assert equipment_name("a/+/b/+", "{1}", "a/x/c/y") is None
    assert equipment_name("a/+", "fixed", "a/x/extra") is None


async def test_single_and_batched_payloads_become_readings(mosquitto_url: str) -> None:
    root = f"t/{uuid.uuid4().hex[:8]}"
    async with MqttSource(config(root), mosquitto_url) as src, MqttProbe(mosquitto_url) as pub:
        await eventually(lambda: src.state == "connected", 10, "source connected")
        await pub.publish(f"{root}/cab01/ch02", json.dumps({"ts": 1000, "v": 3.7, "t": 25.0}))
        first = await take(src, 2)
        batch = {"ts": [2000, 3000, 4000], "v": [3.71, 3.72, 3.73], "t": [25.1, 25.2, 25.3]}
        await pub.publish(f"{root}/cab07/ch11", json.dumps(batch))
        rest = await take(src, 6)
    k = lambda eq, p: SeriesKey("l1", "formation", eq, p)  # noqa: E731
    assert [(r.key, r.ts, r.value) for r in first] == [
        (k("cab01-ch02", "voltage"), 1.0, 3.7), (k("cab01-ch02", "cell_temperature"), 1.0, 25.0),
    ]
    assert [(r.key.equipment, r.key.param, r.ts, r.value) for r in rest] == [
        ("cab07-ch11", "voltage", 2.0, 3.71), ("cab07-ch11", "voltage", 3.0, 3.72),
        ("cab07-ch11", "voltage", 4.0, 3.73), ("cab07-ch11", "cell_temperature", 2.0, 25.1),
        ("cab07-ch11", "cell_temperature", 3.0, 25.2),
        ("cab07-ch11", "cell_temperature", 4.0, 25.3),
    ]
    assert all(r.quality is Quality.GOOD and r.received_ts is not None for r in first + rest)
    st = src.status()
    assert (st.source, st.readings, st.rejected, st.bad_quality) == ("cabinets", 8, 0, 0)
    assert st.state == "disconnected"  # closed


async def test_malformed_payloads_are_counted_logged_and_the_source_goes_on(
    mosquitto_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cellwatch.edge.mqtt")
    root = f"t/{uuid.uuid4().hex[:8]}"
    async with MqttSource(config(root), mosquitto_url) as src, MqttProbe(mosquitto_url) as pub:
        await eventually(lambda: src.state == "connected", 10, "source connected")
        topic = f"{root}/cab02/ch01"
        for bad in [
            b"\x00garbage",
            b'"just a string"',
            json.dumps({"v": 3.7, "t": 25.0}).encode(),  # no timestamp
            json.dumps({"ts": [1, 2], "v": [3.7], "t": [1.0, 2.0]}).encode(),  # v too short
            b'{"ts": 5000, "v": NaN, "t": "warm"}',
        ]:
            await pub.publish(topic, bad)
        await pub.publish(topic, json.dumps({"ts": 9000, "v": 3.9, "t": 26.0}))
        good = await take(src, 4)
        assert src.status().state == "connected"
    # the batch kept its two good temperatures; the last payload is fully good
    assert [(r.key.param, r.ts) for r in good] == [
        ("cell_temperature", 0.001), ("cell_temperature", 0.002),
        ("voltage", 9.0), ("cell_temperature", 9.0),
    ]
    # not JSON, not an object, no timestamp, length mismatch, NaN, non-numeric
    assert src.rejected == 6
    assert src.readings == 4
    logged = [r.getMessage() for r in caplog.records]
    assert logged and f"topic {topic}: not JSON" in logged[0]  # later ones are throttled


async def test_broker_down_shows_in_status_and_never_raises() -> None:
    cfg = config("t/none")
    async with MqttSource(cfg, f"mqtt://127.0.0.1:{free_port()}") as src:
        await eventually(lambda: src.last_error, 10, "a connection error in the status")
        assert src.status().state in ("connecting", "disconnected")


async def test_resubscribes_after_the_broker_restarts(tmp_path: Path) -> None:
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    root = "t/restart"
    broker = mosquitto(tmp_path, port)
    await asyncio.to_thread(broker.__enter__)
    try:
        async with MqttSource(config(root), url) as src:
            await eventually(lambda: src.state == "connected", 10, "source connected")
            await asyncio.to_thread(broker.__exit__, None, None, None)
            await eventually(lambda: src.state == "disconnected", 10, "broker loss noticed")
            broker = mosquitto(tmp_path, port)  # a fresh broker remembers no subscription
            await asyncio.to_thread(broker.__enter__)
            await eventually(lambda: src.state == "connected", 15, "source subscribed again")
            async with MqttProbe(url) as pub:
                await pub.publish(f"{root}/cab01/ch01", json.dumps({"ts": 5000, "v": 3.8}))
            [r] = await take(src, 1)
    finally:
        await asyncio.to_thread(broker.__exit__, None, None, None)
    assert (r.key.equipment, r.value) == ("cab01-ch01", 3.8)
    assert src.rejected == 1  # the payload lacked the temperature field
