"""The OPC UA source on the plant simulator's coater: a clock_skew fault on one lane is named,
a bad_status fault arrives as bad readings, and the device clock as a whole stays in line."""

from __future__ import annotations

import logging

import pytest

from edge.opcua_source import OpcUaSource
from models.messages import Quality
from models.plant import OpcUaSource as OpcUaSourceConfig
from sim import CoatingTarget, Fault, Simulator
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

LANES = [f"Line1/Coater/Lane0{lane}/Side{side}/ArealWeight" for lane in (1, 2, 3) for side in "AB"]


async def test_simulated_faults_show_as_named_skew_and_bad_quality(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cellwatch.edge.opcua")
    faults = [
        Fault("clock_skew", 0.0, None, CoatingTarget(3, "A"), magnitude=30.0),
        Fault("bad_status", 1.0, 2.0, CoatingTarget(1, "B")),
    ]
    async with Simulator(
        opcua_port=0, broker_url=None, rate_hz=20.0, lanes=3, faults=faults
    ) as sim:
        cfg = OpcUaSourceConfig.model_validate(
            {
                "id": "coater-plc",
                "endpoint": sim.endpoint,
                "namespace_uri": "urn:cellwatch:sim",
                "line": "line1",
                "station": "coater",
                "publishing_interval_ms": 50,
                "nodes": [
                    {
                        "browse_path": p,
                        "equipment": p.split("/")[2].lower() + p[-13],
                        "param": "areal_weight",
                    }
                    for p in LANES
                ],
            }
        )
        readings = []
        async with OpcUaSource(cfg) as src:
            async for r in src:
                readings.append(r)
                if r.key.equipment == "lane01B" and r.quality is Quality.BAD:
                    break
            await eventually(lambda: "lane03A" in caplog.text, 5, "the skewed lane named")
            status = src.status()
    named = [m for m in caplog.messages if "run" in m and "off the source's clock" in m]
    assert len(named) == 1 and "lane03A" in named[0] and "Lane03/SideA" in named[0]
    # Five of six lanes keep time: the source's clock as a whole is in line.
    assert status.clock_skew_s is not None and abs(status.clock_skew_s) < 1.0
    assert not any("device clock runs" in m for m in caplog.messages)
    # The bad sample comes as a bad reading after good ones of the same lane, not dropped.
    lane01b = [r.quality for r in readings if r.key.equipment == "lane01B"]
    assert lane01b[-1] is Quality.BAD and lane01b[:-1] and set(lane01b[:-1]) == {Quality.GOOD}
    assert status.bad_quality >= 1 and status.rejected == 0
    # Readings keep the device's timestamps: lane 3 A's run 30 s ahead, the others do not.
    live = [r for r in readings[len(LANES) :] if r.received_ts is not None]
    ahead = {r.key.equipment for r in live if r.ts - r.received_ts > 29}
    assert ahead == {"lane03A"}
