"""A bad_status fault read back with a real asyncua client: Bad during the window, Good after."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC

import pytest
from asyncua import Client, Node, ua

from sim import CoatingTarget, Fault, Simulator

pytestmark = pytest.mark.integration

NS_URI = "urn:cellwatch:sim"


async def _poll(node: Node, want_bad: bool, timeout: float = 5.0) -> ua.DataValue:
    deadline = time.monotonic() + timeout
    while True:
        dv = await node.read_data_value(raise_on_bad_status=False)
        if dv.StatusCode.is_bad() == want_bad:
            return dv
        assert time.monotonic() < deadline, f"status never became {'bad' if want_bad else 'good'}"
        await asyncio.sleep(0.02)


def _ts(dv: ua.DataValue) -> float:
    assert dv.SourceTimestamp is not None
    return dv.SourceTimestamp.replace(tzinfo=UTC).timestamp()


async def test_bad_status_is_served_during_the_window_only() -> None:
    fault = Fault("bad_status", 0.6, 1.6, CoatingTarget(3, "A"))
    async with (
        Simulator(opcua_port=0, broker_url=None, rate_hz=20.0, faults=[fault]) as sim,
        Client(sim.endpoint, timeout=5) as client,
    ):
        ns = await client.get_namespace_index(NS_URI)
        target = client.get_node(f"ns={ns};s=Line1.Coater.Lane03.SideA.ArealWeight")
        other = client.get_node(f"ns={ns};s=Line1.Coater.Lane03.SideB.ArealWeight")
        first = await target.read_data_value(raise_on_bad_status=False)
        assert first.StatusCode.is_good() and _ts(first) < sim.start_ts + 0.6
        bad = await _poll(target, want_bad=True)
        assert bad.StatusCode.value == ua.StatusCodes.BadSensorFailure
        (record,) = sim.truth
        assert record["start_ts"] <= _ts(bad) < record["end_ts"]
        assert (await other.read_data_value()).StatusCode.is_good()
        good = await _poll(target, want_bad=False)
        assert _ts(good) >= record["end_ts"]
    assert record["kind"] == "bad_status"
    assert record["tags"][0]["equipment"] == "lane03_A"
    assert record["start_ts"] == pytest.approx(sim.start_ts + 0.6)
    assert record["end_ts"] == pytest.approx(sim.start_ts + 1.6)
