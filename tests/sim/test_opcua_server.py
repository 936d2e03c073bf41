"""The simulator's OPC UA side against a real asyncua client on a free loopback port."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from asyncua import Client, Node, ua

from models.configfile import parse_plant
from sim import FaultSpec, SimError, Simulator
from sim.coating import AREAL_WEIGHT

pytestmark = pytest.mark.integration

NS_URI = "urn:cellwatch:sim"
EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "config" / "plant.example.yaml"
LANE_PATHS = [
    (f"Line1/Coater/Lane{lane:02d}/Side{side}/ArealWeight", f"lane{lane:02d}_{side}")
    for lane in range(1, 5)
    for side in "AB"
]
OTHER_PATHS = [
    ("Line1/Coater/WebSpeed", "m/min", 60.0, 0.2),
    *[
        (f"Line1/Coater/Dryer/Zone{z}/Temperature", "degC", mean, 0.5)
        for z, mean in zip(range(1, 5), (100.0, 120.0, 140.0, 120.0), strict=True)
    ],
]


async def _node(client: Client, ns: int, path: str) -> Node:
    return await client.nodes.objects.get_child([f"{ns}:{name}" for name in path.split("/")])


async def test_address_space_matches_the_plant_config() -> None:
    sim = Simulator(opcua_port=0, broker_url=None, fault=None, rate_hz=10.0)
    await sim.__aenter__()
    try:
        await _check_address_space(sim)
    finally:
        started = time.monotonic()
        await sim.__aexit__(None, None, None)
        stop_s = time.monotonic() - started
    assert stop_s < 2.0
    assert sim.samples_published["opcua"] > 1
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not others, others


async def _check_address_space(sim: Simulator) -> None:
    async with Client(sim.endpoint, timeout=5) as client:
        assert sim.endpoint.startswith("opc.tcp://127.0.0.1:")
        assert sim.endpoint.endswith("/cellwatch/sim")
        assert int(sim.endpoint.split(":")[2].split("/")[0]) > 0
        ns = await client.get_namespace_index(NS_URI)
        paths = [(p, "mg/cm2", 20.0, 0.1) for p, _ in LANE_PATHS] + OTHER_PATHS
        for path, unit, mean, sigma in paths:
            node = await _node(client, ns, path)
            expected_id = path.replace("/", ".")
            assert node.nodeid == ua.NodeId(expected_id, ns), path
            assert (await node.read_browse_name()) == ua.QualifiedName(path.split("/")[-1], ns)
            assert await node.read_data_type() == ua.NodeId(ua.ObjectIds.Double)
            eu = await (await node.get_child("0:EngineeringUnits")).read_value()
            assert eu.DisplayName.Text == unit, path
            eu_range = await (await node.get_child("0:EURange")).read_value()
            assert eu_range.Low < mean < eu_range.High
            dv = await node.read_data_value()
            assert dv.StatusCode.is_good()
            assert dv.Value.VariantType == ua.VariantType.Double
            assert abs(dv.Value.Value - mean) < 8 * sigma, path
            assert dv.SourceTimestamp is not None
            age = datetime.now(UTC) - dv.SourceTimestamp.replace(tzinfo=UTC)
            assert -1.0 < age.total_seconds() < 5.0, path
        # get_child matched every level by namespace-qualified name; the index is not 0.
        assert ns > 0
        # The web speed node id the config uses directly.
        speed = client.get_node(f"ns={ns};s=Line1.Coater.WebSpeed")
        assert (await speed.read_data_value()).StatusCode.is_good()
        # Values are refreshed: the source timestamp moves on.
        first = (await speed.read_data_value()).SourceTimestamp
        deadline = time.monotonic() + 3.0
        while (await speed.read_data_value()).SourceTimestamp == first:
            assert time.monotonic() < deadline, "web speed was not updated"
            await asyncio.sleep(0.02)
        # Every node the demo plant config subscribes to resolves and carries a good value.
        plant = parse_plant(EXAMPLE_CONFIG.read_text(), str(EXAMPLE_CONFIG))
        (source,) = plant.sources.opcua
        assert source.namespace_uri == NS_URI
        assert source.endpoint.endswith(urlsplit(sim.endpoint).path)
        for cfg in source.nodes:
            if cfg.browse_path is not None:
                node = await _node(client, ns, cfg.browse_path)
            else:
                node = client.get_node(f"ns={ns};{cfg.node_id}")
            assert (await node.read_data_value()).StatusCode.is_good(), cfg
        assert {c.equipment for c in source.nodes} >= {FaultSpec().equipment}
        # The server clock runs while the simulator does.
        clock = client.get_node(ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime))
        first_time = await clock.read_value()
        deadline = time.monotonic() + 3.0
        while await clock.read_value() == first_time:
            assert time.monotonic() < deadline, "server CurrentTime did not advance"
            await asyncio.sleep(0.05)


class _Collector:
    """asyncua subscription handler keeping (source time, value) per equipment."""

    def __init__(self, names: dict[ua.NodeId, str]) -> None:
        self.names = names
        self.samples: dict[str, dict[float, float]] = {n: {} for n in names.values()}

    def datachange_notification(self, node: Node, val: float, data: object) -> None:
        dv = data.monitored_item.Value  # type: ignore[attr-defined]
        ts = dv.SourceTimestamp.replace(tzinfo=UTC).timestamp()
        self.samples[self.names[node.nodeid]][ts] = val

    def count_after(self, name: str, t: float) -> int:
        return sum(1 for ts in self.samples[name] if ts >= t)


async def test_fault_shifts_lane03_a_by_one_and_a_half_sigma(tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.jsonl"
    spec = FaultSpec(start_s=0.5)
    # 40 samples: 5 SE = 0.079 mg/cm2, about half the 0.15 shift, so a missing or misplaced
    # shift fails the test while noise practically never does.
    rate, wanted = 40.0, 40
    async with (
        Simulator(
            opcua_port=0, broker_url=None, rate_hz=rate, fault=spec, truth_path=truth_path
        ) as sim,
        Client(sim.endpoint, timeout=5) as client,
    ):
        ns = await client.get_namespace_index(NS_URI)
        nodes = {(await _node(client, ns, p)).nodeid: name for p, name in LANE_PATHS}
        handler = _Collector(nodes)
        sub = await client.create_subscription(50, handler)
        await sub.subscribe_data_change([client.get_node(n) for n in nodes], queuesize=100)
        onset = sim.start_ts + spec.start_s
        deadline = time.monotonic() + 10.0
        while min(handler.count_after(n, onset) for n in nodes.values()) < wanted:
            assert time.monotonic() < deadline, "not enough samples after the fault onset"
            await asyncio.sleep(0.05)
        await sub.delete()
        truth = sim.truth
    sigma = AREAL_WEIGHT.sigma
    for name, samples in handler.samples.items():
        after = [v for ts, v in samples.items() if ts >= onset]
        assert len(after) >= wanted
        se = sigma / math.sqrt(len(after))
        expected = AREAL_WEIGHT.mean + (1.5 * sigma if name == "lane03_A" else 0.0)
        assert abs(sum(after) / len(after) - expected) < 5 * se, name
    # Sample times lie on the simulator's grid: start + k / rate.
    grid = [(ts - sim.start_ts) * rate for ts in handler.samples["lane01_A"]]
    assert all(abs(g - round(g)) < 0.01 for g in grid)
    assert truth == [
        {
            "kind": "mean_shift",
            "tags": [
                {
                    "line": "line1",
                    "station": "coater",
                    "equipment": "lane03_A",
                    "param": "areal_weight",
                }
            ],
            "start_ts": pytest.approx(onset),
            "end_ts": None,
            "parameters": {
                "shift_sigma": 1.5,
                "sigma": 0.1,
                "shift": pytest.approx(0.15),
                "unit": "mg/cm2",
            },
        }
    ]
    lines = truth_path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == truth[0]


async def test_taken_port_is_a_one_line_error() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(SimError) as err:
            async with Simulator(opcua_port=port, broker_url=None):
                pass  # pragma: no cover - must not start
    message = str(err.value)
    assert isinstance(err.value, OSError)
    assert "\n" not in message
    assert str(port) in message and "in use" in message
