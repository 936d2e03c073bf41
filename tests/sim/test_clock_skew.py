"""A clock_skew fault as collectors see it: in the OPC UA SourceTimestamp read back with a real
asyncua client, and in the ``ts`` array of the MQTT batch received from a real Mosquitto."""

from __future__ import annotations

import json
from datetime import UTC

import pytest
from asyncua import Client

from sim.coating import CoatingModel
from sim.fault import CoatingTarget, Fault, FormationTarget
from sim.formation import FormationModel
from sim.mqtt_publisher import FormationPublisher
from sim.opcua_server import NAMESPACE_URI, CoaterServer
from tests.sim.test_mqtt_publisher import _subscribed
from tests.waiting import eventually

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


async def test_opcua_source_timestamp_carries_the_skew_of_its_series_only() -> None:
    fault = Fault("clock_skew", 5.0, None, CoatingTarget(3, "A"), magnitude=2.5)
    model = CoatingModel(seed=2, lanes=4, start_ts=T0, faults=[fault])
    server = CoaterServer("127.0.0.1", 0, lanes=4)
    await server.start()
    try:
        async with Client(server.endpoint, timeout=5) as client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            target = client.get_node(f"ns={ns};s=Line1.Coater.Lane03.SideA.ArealWeight")
            other = client.get_node(f"ns={ns};s=Line1.Coater.Lane03.SideB.ArealWeight")

            async def source_minus_true(ts: float) -> tuple[float, float]:
                await server.write(model.sample(ts))
                out = []
                for node in (target, other):
                    dv = await node.read_data_value()
                    assert dv.SourceTimestamp is not None
                    out.append(dv.SourceTimestamp.replace(tzinfo=UTC).timestamp() - ts)
                return out[0], out[1]

            before = await source_minus_true(T0 + 4.5)
            during = await source_minus_true(T0 + 6.0)
    finally:
        await server.stop()
    assert before == pytest.approx((0.0, 0.0), abs=1e-3)
    assert during == pytest.approx((2.5, 0.0), abs=1e-3)


async def test_mqtt_batch_ts_carries_the_skew_of_its_channel_only(mosquitto_url: str) -> None:
    fault = Fault("clock_skew", 1.0, None, FormationTarget(1, 2, "voltage"), magnitude=-4.0)
    model = FormationModel(seed=2, cabinets=1, channels=2, start_ts=T0, faults=[fault])
    publisher = FormationPublisher(mosquitto_url)
    times = [T0 + 0.5, T0 + 1.0, T0 + 1.5]
    with _subscribed(mosquitto_url) as sub:
        await publisher.start()
        try:
            for ts in times:
                publisher.add(model.sample(ts))
            publisher.flush()
            await eventually(lambda: len(sub.snapshot()) == 2, 5, "one batch per channel")
        finally:
            await publisher.stop()
    ts_of = {topic: json.loads(payload)["ts"] for topic, payload, _ in sub.snapshot()}
    assert ts_of["sim/line1/formation/cab01/ch01"] == times
    assert ts_of["sim/line1/formation/cab01/ch02"] == [T0 + 0.5, T0 + 1.0 - 4.0, T0 + 1.5 - 4.0]
