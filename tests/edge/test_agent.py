"""The whole agent: asyncua server + Mosquitto -> EdgeAgent -> envelopes seen by a subscriber."""

from __future__ import annotations

import asyncio
import json
import uuid

import numpy as np
import pytest

from edge.agent import EdgeAgent
from models.messages import Detection, Kind, Quality, Reading, Stats
from models.wire import decode
from tests.edge.opcua_server import NS, UaTestServer
from tests.edge.plants import plant
from tests.edge.probe import MqttProbe
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CENTER, SIGMA = 20.0, 0.1


def agent_plant(ua_url: str, broker: str, edge_id: str, mqtt_root: str):  # noqa: ANN201
    return plant(
        detector={"lam": 0.2, "L": 3.5, "center": CENTER, "sigma": SIGMA},
        params=("weight", "speed"),
        extra_station=True,
        broker=broker,
        edge={"id": edge_id, "window_s": 0.1, "status_interval_s": 0.3, "max_pending": 1000},
        opcua=[{
            "id": "coater-plc", "endpoint": ua_url, "namespace_uri": NS, "line": "l1",
            "station": "coater", "publishing_interval_ms": 20, "timeout_s": 2,
            "nodes": [
                {"browse_path": "Line1/Coater/Lane01/ArealWeight", "equipment": "lane01",
                 "param": "weight"},
                {"browse_path": "Line1/Coater/Lane02/ArealWeight", "equipment": "lane02",
                 "param": "weight"},
                {"node_id": "s=Line1.Coater.WebSpeed", "equipment": "web", "param": "speed"},
            ],
        }],
        mqtt=[{
            "id": "cabinets", "topic": f"{mqtt_root}/+", "line": "l1", "station": "formation",
            "equipment": "{1}", "payload": {"values": {"voltage": "v"}},
        }],
    )


async def test_agent_publishes_telemetry_stats_status_and_a_detection_after_a_step(
    ua_server: UaTestServer, mosquitto_url: str
) -> None:
    edge_id = f"gw-{uuid.uuid4().hex[:6]}"
    root = f"sim/{edge_id}"
    cfg = agent_plant(ua_server.url, mosquitto_url, edge_id, root)
    rng = np.random.default_rng(11)
    before, after, t0 = 40, 40, 1_700_000_000.0
    lane01 = rng.normal(CENTER, SIGMA, before + after)
    lane01[before:] += 3 * SIGMA
    lane02 = rng.normal(CENTER, SIGMA, before + after)
    stop = asyncio.Event()
    async with MqttProbe(mosquitto_url, "cellwatch/v1/s1/#") as probe:
        agent = EdgeAgent(cfg)
        src, cabinets = agent.sources
        runner = asyncio.create_task(agent.run(stop))  # enters the agent; leaves it on stop
        await eventually(lambda: src.state == "connected" and cabinets.state == "connected",
                         10, "both sources connected")
        initial = src.readings
        for i in range(before + after):
            await ua_server.write("Lane01", float(lane01[i]), ts=t0 + i * 0.05)
            await ua_server.write("Lane02", float(lane02[i]), ts=t0 + i * 0.05)
        await ua_server.write("WebSpeed", 61.5, ts=t0 + 5.0)
        await probe.publish(f"{root}/cab03", json.dumps({"ts": t0, "v": 3.65}))
        await probe.publish(f"{root}/cab03", b"not json")
        total = initial + 2 * (before + after) + 1
        await eventually(lambda: src.readings == total and cabinets.rejected == 1, 15,
                         "all readings collected")
        await eventually(lambda: agent.monitor.detections > 0, 5, "a detection")
        stop.set()
        await asyncio.wait_for(runner, 10)
        counters = agent.counters()
        start, envelopes_sent = agent.publisher.start_seq, agent.publisher.seq
        assert counters["pending"] == 0  # leaving the agent waited for the acknowledgements
        await eventually(lambda: len(probe.messages) >= envelopes_sent - start, 10,
                         "all envelopes seen")

    envelopes = [(t, decode(p)) for t, p in probe.messages]
    mine = [(t, e) for t, e in envelopes if e.edge_id == edge_id]
    assert sorted(e.seq for _, e in mine) == list(range(start + 1, envelopes_sent + 1))
    base = "cellwatch/v1/s1/a1/l1"
    kinds = {(t, e.kind) for t, e in mine}
    assert (f"{base}/coater/telemetry", Kind.TELEMETRY) in kinds
    assert (f"{base}/coater/stats", Kind.STATS) in kinds
    assert (f"{base}/formation/telemetry", Kind.TELEMETRY) in kinds
    assert (f"cellwatch/v1/s1/_edge/{edge_id}/status", Kind.STATUS) in kinds

    readings = [r for _, e in mine if e.kind is Kind.TELEMETRY for r in e.items]
    assert all(isinstance(r, Reading) for r in readings)
    lane = [r for r in readings if r.key.equipment == "lane01" and t0 <= r.ts < t0 + 100]
    assert [r.ts for r in lane] == [t0 + i * 0.05 for i in range(before + after)]
    assert [r.value for r in lane] == pytest.approx(lane01.tolist())
    assert all(r.quality is Quality.GOOD for r in lane)
    volts = [r for r in readings if r.key.station == "formation"]
    assert [(r.key.equipment, r.key.param, r.value) for r in volts] == [("cab03", "voltage", 3.65)]

    detections = [d for _, e in mine if e.kind is Kind.DETECTION for d in e.items]
    assert detections, "the 3 sigma step was not detected"
    assert all(isinstance(d, Detection) for d in detections)
    first = detections[0]
    assert first.key.equipment == "lane01" and first.direction == 1
    assert t0 + before * 0.05 <= first.ts <= t0 + (before + 10) * 0.05
    assert not [d for d in detections if d.key.equipment == "lane02"]

    stats = [s for _, e in mine if e.kind is Kind.STATS for s in e.items]
    assert all(isinstance(s, Stats) for s in stats)
    lane_stats = [s for s in stats if s.key.equipment == "lane01"]
    assert sum(s.count for s in lane_stats) == len([r for r in readings
                                                   if r.key.equipment == "lane01"])
    assert any(s.statistic is not None for s in lane_stats)

    statuses = [s for _, e in mine if e.kind is Kind.STATUS for s in e.items]
    assert {s.source for s in statuses[-1].sources} == {"coater-plc", "cabinets"}

    assert counters["readings"]["coater-plc"] == total
    assert counters["readings"]["cabinets"] == 1
    assert counters["rejected"] == 1  # the payload that was not JSON
    assert counters["detections"] == len(detections)
    assert counters["dropped"] == 0 and counters["errors"] == 0
