"""Payload shapes beyond single samples and batches: element arrays (the simulator's beta-gauge
scans, lane by lane and point by point) and records; every malformed variant is a counted
rejection with its reason, and the gauge mapping works end to end through Mosquitto."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from typing import Any

import numpy as np
import pytest

from edge.mqtt_source import MqttSource
from edge.payload import PayloadReader, Sample
from models.plant import MqttPayload
from models.plant import MqttSource as MqttSourceConfig
from sim.gauge import BetaGauge, scan_payload
from sim.web import WebModel
from tests.edge.mqtt_publish import Device
from tests.waiting import eventually

#: The mapping of a gauge scan a line engineer would write: the lane averages as per-lane
#: readings, named like the OPC UA lane series, the profile point by point, the MD position.
GAUGE = {
    "timestamp": "ts",
    "values": {"md_position": "md_m"},
    "elements": [
        {"param": "scan_areal_weight", "path": "lane_aw", "equipment": "lane{k:02}_{side}"},
        {"param": "profile_areal_weight", "path": "aw", "equipment": "{side}_p{k:03}"},
    ],
}


def read(spec: dict[str, Any], obj: object, levels: tuple[str, ...] = ()) -> tuple[list, list]:
    data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    parsed = PayloadReader(MqttPayload.model_validate(spec)).read(data, levels)
    return list(parsed.samples), list(parsed.rejections)


def scan(lane_means: list[float], side: str = "A") -> dict[str, Any]:
    gauge = BetaGauge(lanes=len(lane_means), seed=3, points_per_lane=3)
    web = WebModel().position(30.0)
    return scan_payload(gauge.scan(1_700_000_000.5, side, np.array(lane_means), web))


def test_a_gauge_scan_gives_lane_readings_profile_points_and_the_md_position() -> None:
    payload = scan([20.0, 20.1, 19.9, 20.2])
    samples, rejections = read(GAUGE, payload)
    assert rejections == []
    lanes = [s for s in samples if s.param == "scan_areal_weight"]
    assert [(s.equipment, s.ts, s.value) for s in lanes] == [
        (f"lane{k:02}_A", 1_700_000_000.5, v) for k, v in enumerate(payload["lane_aw"], 1)
    ]
    profile = [s for s in samples if s.param == "profile_areal_weight"]
    assert [s.equipment for s in profile] == [f"A_p{k:03}" for k in range(1, 13)]
    assert [s.value for s in profile] == payload["aw"]
    assert Sample("md_position", 1_700_000_000.5, 30.0) in samples


def test_a_lane_without_points_is_a_counted_rejection_and_the_others_are_read() -> None:
    payload = scan([20.0, math.nan, 19.9], side="B")
    samples, rejections = read(GAUGE, payload)
    lanes = [s.equipment for s in samples if s.param == "scan_areal_weight"]
    assert lanes == ["lane01_B", "lane03_B"]
    assert rejections == ["scan_areal_weight[1]: not a finite number: None"]
    assert len([s for s in samples if s.param == "profile_areal_weight"]) == 6


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"ts": 1.0, "md_m": 0, "aw": [1], "lane_aw": 5}, "must be an array of elements"),
        ({"ts": 1.0, "md_m": 0, "aw": [1]}, "missing field 'lane_aw'"),
        ({"ts": 1.0, "md_m": 0, "aw": [1], "lane_aw": [1.0]}, "missing field 'side'"),
        (
            {"ts": 1.0, "md_m": 0, "side": ["A"], "aw": [], "lane_aw": [1.0]},
            "field 'side' must be text or a number",
        ),
        (
            {"ts": 1.0, "md_m": 0, "side": "A B", "aw": [], "lane_aw": [1.0]},
            "equipment 'lane01_A B' is not an id",
        ),
        (
            {"ts": [1.0], "md_m": [0], "side": "A", "aw": [], "lane_aw": [1.0]},
            "elements need one timestamp",
        ),
    ],
)
def test_malformed_scans_are_rejected_with_a_reason(payload: dict, reason: str) -> None:
    samples, rejections = read(GAUGE, payload)
    assert any(reason in r for r in rejections), rejections
    assert all(s.param != "scan_areal_weight" for s in samples)


def test_topic_levels_and_plain_numbers_in_element_names() -> None:
    spec = {"values": {}, "elements": [{"param": "t", "path": "t", "equipment": "{1}-ch{k}"}]}
    samples, rejections = read(spec, {"ts": 2.0, "t": [25.0, 26.5]}, ("cab07",))
    assert [(s.equipment, s.value) for s in samples] == [("cab07-ch1", 25.0), ("cab07-ch2", 26.5)]
    assert rejections == []


def test_records_are_read_each_as_a_payload() -> None:
    spec = {"records": "data", "timestamp": "t", "timestamp_unit": "ms", "values": {"v": "x.v"}}
    samples, rejections = read(
        spec,
        {
            "data": [
                {"t": 1000, "x": {"v": 1.5}},
                {"t": [2000, 3000], "x": {"v": [2, 3]}},
                7,
                {"t": 4000, "x": {"v": "hot"}},
            ]
        },
    )
    assert samples == [Sample("v", 1.0, 1.5), Sample("v", 2.0, 2.0), Sample("v", 3.0, 3.0)]
    assert rejections == ["data[2]: not an object: 7", "data[3]: v: not a finite number: 'hot'"]
    assert read(spec, {"data": {"t": 1}})[1] == [
        "records 'data' must be an array of objects, got a dict"
    ]


@pytest.mark.integration
async def test_gauge_scans_from_mosquitto_become_lane_readings(mosquitto_url: str) -> None:
    root = f"t/{uuid.uuid4().hex[:8]}"
    cfg = MqttSourceConfig.model_validate(
        {
            "id": "gauge",
            "topic": f"{root}/coater/gauge/+",
            "line": "l1",
            "station": "coater",
            "equipment": "{1}",
            "payload": GAUGE,
        }
    )
    scans = [scan([20.0, 20.1, 19.9, 20.2], "A"), scan([20.0, 20.1, math.nan, 20.2], "B")]
    async with MqttSource(cfg, mosquitto_url) as src, Device(mosquitto_url) as dev:
        await eventually(lambda: src.state == "connected", 10, "connected")
        for payload in scans:
            await dev.publish(f"{root}/coater/gauge/side{payload['side']}", json.dumps(payload))
        got = []
        async with asyncio.timeout(10):
            async for r in src:
                got.append(r)
                if len(got) == 1 + 4 + 12 + 1 + 3 + 9:
                    break
    lanes = {r.key.equipment: r.value for r in got if r.key.param == "scan_areal_weight"}
    assert lanes == {
        "lane01_A": scans[0]["lane_aw"][0],
        "lane02_A": scans[0]["lane_aw"][1],
        "lane03_A": scans[0]["lane_aw"][2],
        "lane04_A": scans[0]["lane_aw"][3],
        "lane01_B": scans[1]["lane_aw"][0],
        "lane02_B": scans[1]["lane_aw"][1],
        "lane04_B": scans[1]["lane_aw"][3],
    }
    assert {r.key.equipment for r in got if r.key.param == "md_position"} == {"sideA", "sideB"}
    assert src.rejected == 1  # lane 3 of side B had no points
