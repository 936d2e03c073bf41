"""Sparkplug B host source against the simulator's edge node through a real Mosquitto:
births, data by alias, a missed birth answered by a rebirth request, deaths; and crafted
messages for seq gaps, unknown aliases, stale deaths and malformed payloads."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from edge.agent import EdgeAgent
from edge.sparkplug_source import SparkplugSource
from models.messages import Quality, Reading, SeriesKey
from models.plant import PlantConfig
from models.plant import SparkplugSource as SparkplugConfig
from models.sparkplug import (
    REBIRTH,
    DataType,
    SparkplugMetric,
    SparkplugPayload,
    decode_payload,
    encode_payload,
    sparkplug_topic,
)
from models.wire import decode
from sim.sparkplug import MetricSpec, SparkplugPublisher
from tests.edge.mqtt_publish import Device
from tests.edge.probe import MqttProbe
from tests.waiting import eventually

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
DEVICES = {
    "dryer_zone1": [MetricSpec("power_kw", "kW"), MetricSpec("energy_kwh", "kWh")],
    "cab01": [
        MetricSpec("power_kw", "kW"),
        MetricSpec("energy_kwh", "kWh"),
        MetricSpec("channels_on", "", DataType.UInt8),
        MetricSpec("door", "", DataType.Boolean),
    ],
}


def config(group: str, **extra: Any) -> SparkplugConfig:
    return SparkplugConfig.model_validate(
        {
            "id": "meters",
            "group": group,
            "line": "l1",
            "station": "energy",
            "metrics": {
                "power_kw": "power",
                "energy_kwh": "energy",
                "channels_on": "channels",
                "door": "door_open",
            },
            "client_id": f"host-{uuid.uuid4().hex[:8]}",
            "rebirth_timeout_s": 2.0,
            **extra,
        }
    )


def key(device: str, param: str) -> SeriesKey:
    return SeriesKey("l1", "energy", device, param)


async def take(src: SparkplugSource, n: int, timeout: float = 10) -> list[Reading]:
    out: list[Reading] = []
    async with asyncio.timeout(timeout):
        async for r in src:
            out.append(r)
            if len(out) == n:
                return out
    raise AssertionError(f"source ended after {len(out)} of {n} readings")


@asynccontextmanager
async def node(url: str, group: str, name: str = "node1") -> AsyncIterator[SparkplugPublisher]:
    publisher = SparkplugPublisher(url, group, name, devices=DEVICES)
    await publisher.start()
    try:
        await eventually(publisher.connected.is_set, 10, "the edge node's session")
        yield publisher
    finally:
        await publisher.stop()


def group() -> str:
    return f"g{uuid.uuid4().hex[:10]}"


async def test_births_then_data_by_alias_become_readings(mosquitto_url: str) -> None:
    g = group()
    async with SparkplugSource(config(g), mosquitto_url) as src:
        await eventually(lambda: src.state == "connected", 10, "host subscribed")
        async with node(mosquitto_url, g) as pub:
            await eventually(lambda: src.births == 3, 10, "NBIRTH and two DBIRTHs")
            assert pub.publish("cab01", {"power_kw": -41.5, "channels_on": 7, "door": 1}, T0)
            assert pub.publish("dryer_zone1", {"energy_kwh": math.nan}, T0 + 1)
            got = await take(src, 4)
    assert [(r.key, r.ts, r.value, r.quality) for r in got[:3]] == [
        (key("cab01", "power"), T0, -41.5, Quality.GOOD),
        (key("cab01", "channels"), T0, 7.0, Quality.GOOD),
        (key("cab01", "door_open"), T0, 1.0, Quality.GOOD),
    ]
    null = got[3]  # NaN goes out as a Sparkplug null: a bad-quality reading, not a loss
    assert (null.key, null.ts, null.quality) == (key("dryer_zone1", "energy"), T0 + 1, Quality.BAD)
    assert math.isnan(null.value)
    assert (src.rejected, src.rebirth_requests, src.seq_gaps, src.malformed) == (0, 0, 0, 0)
    assert src.nodes["node1"].bd_seq == 0


async def test_a_missed_birth_is_answered_by_a_rebirth_request(mosquitto_url: str) -> None:
    """The host starts after the edge node was born: its first DDATA cannot be decoded, so
    the host asks for a rebirth, and the births carry the value it could not read."""
    g = group()
    async with MqttProbe(mosquitto_url, f"spBv1.0/{g}/#") as probe, node(mosquitto_url, g) as pub:
        births = lambda: [t for t, _ in probe.messages if "BIRTH" in t]  # noqa: E731
        await eventually(lambda: len(births()) == 3, 10, "the births, before the host starts")
        async with SparkplugSource(config(g), mosquitto_url) as src:
            await eventually(lambda: src.state == "connected", 10, "host subscribed")
            pub.publish("cab01", {"power_kw": 12.0}, T0)
            await eventually(lambda: src.births == 3, 10, "the births after the request")
            first = await take(src, 1)
            pub.publish("cab01", {"power_kw": 13.0}, T0 + 1)
            second = await take(src, 1)
    assert [(r.key, r.ts, r.value) for r in first + second] == [
        (key("cab01", "power"), T0, 12.0),  # from the DBIRTH: not lost
        (key("cab01", "power"), T0 + 1, 13.0),
    ]
    assert src.rebirth_requests == 1 and pub.counters["rebirths"] == 1
    assert src.rejected == 1  # the DDATA that came before any birth
    [raw] = [m for t, m in probe.messages if t == sparkplug_topic(g, "NCMD", "node1")]
    [metric] = decode_payload(raw).metrics
    assert (metric.name, metric.value) == (REBIRTH, True)


async def test_deaths_take_the_series_offline_until_the_next_birth(mosquitto_url: str) -> None:
    g = group()
    async with SparkplugSource(config(g), mosquitto_url) as src:
        await eventually(lambda: src.state == "connected", 10, "host subscribed")
        async with node(mosquitto_url, g):
            await eventually(lambda: src.births == 3, 10, "births")
            assert src.offline() == [] and src.status().stale == 0
        await eventually(lambda: not src.nodes["node1"].alive, 10, "the NDEATH")
        assert src.offline() == ["node1", "node1/cab01", "node1/dryer_zone1"]
        status = src.status()
        assert status.stale == 3 and "node1 is offline" in status.last_error
        assert src.deaths == 3  # two DDEATHs and the NDEATH
        async with node(mosquitto_url, g) as pub:
            await eventually(lambda: src.offline() == [], 10, "reborn")
            assert src.stale == 0
            pub.publish("dryer_zone1", {"power_kw": 3.5}, T0 + 10)
            [r] = await take(src, 1)
    assert (r.key, r.value) == (key("dryer_zone1", "power"), 3.5)


def _birth(seq: int, bd_seq: int = 5) -> bytes:
    return encode_payload(
        SparkplugPayload(
            int(T0 * 1000),
            seq,
            (
                SparkplugMetric("bdSeq", None, None, DataType.Int64, bd_seq),
                SparkplugMetric(REBIRTH, None, None, DataType.Boolean, False),
            ),
        )
    )


def _dbirth(seq: int) -> bytes:
    return encode_payload(
        SparkplugPayload(
            int(T0 * 1000),
            seq,
            (
                SparkplugMetric("power_kw", 1, int(T0 * 1000), DataType.Double, None),
                SparkplugMetric("channels_on", 2, int(T0 * 1000), DataType.Int16, None),
            ),
        )
    )


def _ddata(seq: int, t: float, *metrics: tuple[int, int, Any]) -> bytes:
    return encode_payload(
        SparkplugPayload(
            int(t * 1000),
            seq,
            tuple(SparkplugMetric(None, alias, int(t * 1000), dt, v) for alias, dt, v in metrics),
        ),
        with_datatypes=False,
    )


async def test_seq_gaps_unknown_aliases_stale_deaths_and_garbage(
    mosquitto_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cellwatch.edge.sparkplug")
    g = group()
    topic = lambda kind, dev=None: sparkplug_topic(g, kind, "n9", dev)  # noqa: E731
    src = SparkplugSource(config(g), mosquitto_url)
    async with src, Device(mosquitto_url) as dev, MqttProbe(mosquitto_url, topic("NCMD")) as cmd:
        await eventually(lambda: src.state == "connected", 10, "host subscribed")
        for t, payload in [
            (topic("NBIRTH"), _birth(0)),
            (topic("DBIRTH", "m1"), _dbirth(1)),
            (
                topic("DDATA", "m1"),
                _ddata(2, T0, (1, DataType.Double, 1.5), (2, DataType.Int16, -3)),
            ),
            (topic("DDATA", "m1"), _ddata(4, T0 + 1, (1, DataType.Double, 2.5))),  # 3 lost
            (topic("DDATA", "m1"), _ddata(5, T0 + 2, (9, DataType.Double, 9.9))),  # alias 9?
            (topic("DDATA", "m1"), b"\xff\xff\x00garbage"),
            (f"spBv1.0/{g}/DDATA/n9", _ddata(6, T0 + 3)),  # a DDATA topic without device
            (
                topic("NDEATH"),
                encode_payload(
                    SparkplugPayload(
                        None, None, (SparkplugMetric("bdSeq", None, None, DataType.Int64, 4),)
                    )
                ),
            ),  # stale will
            (topic("DDATA", "m1"), _ddata(6, T0 + 4, (1, DataType.Double, 4.5))),
        ]:
            await dev.publish(t, payload, qos=1)
        got = await take(src, 4)
        await eventually(lambda: src.rejected == 3, 10, "three rejections")
        await eventually(lambda: cmd.messages, 10, "the rebirth request on the broker")
        requests = len(cmd.messages)
    assert [(r.key.equipment, r.key.param, r.ts, r.value) for r in got] == [
        ("m1", "power", T0, 1.5),
        ("m1", "channels", T0, -3.0),  # signed again by the birth's Int16
        ("m1", "power", T0 + 1, 2.5),  # read: the gap is counted, the data is good
        ("m1", "power", T0 + 4, 4.5),  # the stale NDEATH (bdSeq 4, session 5) changed nothing
    ]
    assert src.seq_gaps == 1 and src.unknown_aliases == 1 and src.malformed == 1
    # one rebirth request for the gap; the unknown alias came within rebirth_timeout_s
    assert src.rebirth_requests == 1 == requests
    assert src.nodes["n9"].alive and src.offline() == []
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "seq 4 where 3 was due" in logged
    assert f"rejected input: topic {topic('DDATA', 'm1')}: unknown alias(es) [9]" in logged


async def test_the_node_and_device_filters(mosquitto_url: str) -> None:
    g = group()
    cfg = config(g, nodes=["line*"], devices=["dryer_*"], equipment="{node}.{device}")
    async with SparkplugSource(cfg, mosquitto_url) as src:
        await eventually(lambda: src.state == "connected", 10, "host subscribed")
        async with node(mosquitto_url, g, "other") as other, node(mosquitto_url, g, "line1") as pub:
            await eventually(lambda: src.births == 2, 10, "line1's NBIRTH and dryer DBIRTH")
            other.publish("dryer_zone1", {"power_kw": 99.0}, T0)
            pub.publish("cab01", {"power_kw": 98.0}, T0)
            pub.publish("dryer_zone1", {"power_kw": 1.25}, T0)
            [r] = await take(src, 1)
    assert (r.key.equipment, r.value) == ("line1.dryer_zone1", 1.25)
    assert src.rejected == 0 and src.rebirth_requests == 0
    assert set(src.nodes) == {"line1"}


async def test_a_flood_of_garbage_is_counted_and_does_not_hold_up_good_data(
    mosquitto_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cellwatch.edge.sparkplug")
    g = group()
    n = 2000
    async with SparkplugSource(config(g), mosquitto_url) as src, Device(mosquitto_url) as dev:
        await eventually(lambda: src.state == "connected", 10, "host subscribed")
        await dev.publish(sparkplug_topic(g, "NBIRTH", "n1"), _birth(0))
        await dev.publish(sparkplug_topic(g, "DBIRTH", "n1", "m1"), _dbirth(1))
        for i in range(n):
            dev.send(sparkplug_topic(g, "DDATA", "n1", "m1"), b"\x0a" + i.to_bytes(4, "big"))
        await dev.publish(
            sparkplug_topic(g, "DDATA", "n1", "m1"), _ddata(2, T0, (1, DataType.Double, 7.5))
        )
        [r] = await take(src, 1)
    assert (r.key.equipment, r.value) == ("m1", 7.5)
    assert src.malformed == n and src.rejected == n and src.seq_gaps == 0
    logged = [m for m in caplog.messages if "rejected input" in m]
    assert 1 <= len(logged) <= 5  # throttled to about one line a second
    assert (
        f"topic {sparkplug_topic(g, 'DDATA', 'n1', 'm1')}: not a Sparkplug B payload" in logged[0]
    )


async def test_the_agent_runs_a_sparkplug_source_from_its_plant_file(mosquitto_url: str) -> None:
    g = group()
    edge_id = f"gw-{uuid.uuid4().hex[:6]}"
    cfg = PlantConfig.model_validate(
        {
            "site": {"id": "s1"},
            "edge": {"id": edge_id, "window_s": 0.1, "status_interval_s": 60},
            "broker": {"url": mosquitto_url},
            "lines": [
                {
                    "id": "l1",
                    "area": "a1",
                    "stations": [
                        {"id": "energy", "params": [{"id": "power"}, {"id": "energy"}]},
                    ],
                }
            ],
            "sources": {
                "sparkplug": [
                    {
                        "id": "meters",
                        "group": g,
                        "line": "l1",
                        "station": "energy",
                        "metrics": {"power_kw": "power", "energy_kwh": "energy"},
                    }
                ]
            },
        }
    )
    stop = asyncio.Event()
    async with MqttProbe(mosquitto_url, "cellwatch/v1/s1/a1/l1/energy/telemetry") as probe:
        agent = EdgeAgent(cfg)
        [src] = agent.sources
        runner = asyncio.create_task(agent.run(stop))
        await eventually(lambda: src.state == "connected", 10, "the Sparkplug source")
        async with node(mosquitto_url, g) as pub:
            await eventually(lambda: src.births == 3, 10, "births")
            pub.publish("dryer_zone1", {"power_kw": 42.0, "energy_kwh": 1.5}, T0)
            pub.publish("cab01", {"power_kw": -3.0}, T0 + 1)
            await eventually(lambda: src.readings == 3, 10, "three readings")
        stop.set()
        await asyncio.wait_for(runner, 10)
        await eventually(lambda: probe.messages, 10, "the telemetry envelope")
    readings = [r for _, raw in probe.messages for r in decode(raw).items]
    assert sorted((r.key.equipment, r.key.param, r.ts, r.value) for r in readings) == [
        ("cab01", "power", T0 + 1, -3.0),
        ("dryer_zone1", "energy", T0, 1.5),
        ("dryer_zone1", "power", T0, 42.0),
    ]
