"""The simulator's OPC UA side against a real asyncua client on a free loopback port."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from asyncua import Client, Node, ua

from models.configfile import parse_plant
from sim import FaultSpec, SimError, Simulator
from sim.calender import CalenderModel
from sim.coating import AREAL_WEIGHT, CoatingModel
from sim.formation import VOLTAGE, FormationSample
from sim.gauge import BetaGauge
from sim.opcua_server import CoaterServer
from sim.web import WebModel
from tests.waiting import eventually

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
            "event": "start",
            "fault": 0,
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
    # The file holds the start record, then the end record written at stop (fault still open).
    lines = [json.loads(line) for line in truth_path.read_text().splitlines()]
    assert len(lines) == 2 and lines[0] == truth[0]
    assert (lines[1]["event"], lines[1]["fault"], lines[1]["open"]) == ("end", 0, True)


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


# --- The extended address space: web, NMP, dryer power, beta gauge, calender, formation. ---

T0 = 1_700_000_000.0
#: UNECE common codes the new units must carry (Rec. 20: H63 mg/cm2, 4H micrometre, MMT mm,
#: MTR metre, KWT kilowatt, 23 g/cm3, GP mg/m3), packed into an Int32 as OPC UA Part 8 says.
UNECE = {
    "mg/cm2": "H63",
    "um": "4H",
    "mm": "MMT",
    "m": "MTR",
    "kW": "KWT",
    "g/cm3": "23",
    "mg/m3": "GP",
    "V": "VLT",
    "A": "AMP",
    "Ah": "AMH",
    "degC": "CEL",
}


def _unit_id(code: str) -> int:
    return int.from_bytes(code.encode("ascii"), "big")


def _epoch(dv: ua.DataValue) -> float:
    assert dv.SourceTimestamp is not None
    return dv.SourceTimestamp.replace(tzinfo=UTC).timestamp()


async def _check_analog(node: Node, unit: str, value: float | None = None) -> ua.DataValue:
    """Double, with the unit's UNECE id and a range holding ``value``; returns the DataValue."""
    assert await node.read_data_type() == ua.NodeId(ua.ObjectIds.Double)
    eu = await (await node.get_child("0:EngineeringUnits")).read_value()
    assert eu.DisplayName.Text == unit
    assert eu.UnitId == _unit_id(UNECE[unit]), unit
    eu_range = await (await node.get_child("0:EURange")).read_value()
    dv = await node.read_data_value()
    assert dv.StatusCode.is_good()
    if value is not None:
        assert eu_range.Low <= value <= eu_range.High
    return dv


async def test_extended_address_space_serves_every_new_signal() -> None:
    lanes, cabinets, channels = 3, 2, 3
    coater = CoatingModel(seed=1, lanes=lanes, start_ts=T0)
    gauge = BetaGauge(lanes=lanes, seed=1, points_per_lane=5)
    calender = CalenderModel(lanes=lanes, seed=1)
    server = CoaterServer("127.0.0.1", 0, lanes=lanes, formation=(cabinets, channels))
    await server.start()
    try:
        sample = coater.sample(T0 + 90.0)
        await server.write(sample)
        assert sample.web is not None
        scan_a = gauge.scan(T0 + 91.0, "A", sample.areal_weight[:, 0], sample.web)
        scan_b = gauge.scan(T0 + 92.0, "B", np.array([20.0, np.nan, 20.2]), sample.web)
        await server.write_scan(scan_a)
        await server.write_scan(scan_b)
        cal = calender.sample(T0 + 93.0, sample.areal_weight)
        await server.write_calender(cal)
        shape = (cabinets, channels)
        voltage = np.full(shape, 3.71)
        voltage[1, 2] = np.nan  # a dropout: not written
        skew = np.zeros(shape)
        skew[0, 1] = 2.5
        formation = FormationSample(
            T0 + 94.0,
            voltage,
            np.full(shape, 2.0),
            np.arange(6.0).reshape(shape),
            np.full(shape, 25.5),
            skew=skew,
        )
        await server.write_formation(formation)
        async with Client(server.endpoint, timeout=5) as client:
            ns = await client.get_namespace_index(NS_URI)

            async def at(path: str) -> Node:
                node = await _node(client, ns, path)
                assert node.nodeid == ua.NodeId(path.replace("/", "."), ns), path
                return node

            # Web position: a String roll id and the MD metre, at the sample time.
            roll = await (await at("Line1/Coater/Web/RollId")).read_data_value()
            assert roll.Value.VariantType == ua.VariantType.String
            assert roll.Value.Value == sample.web.roll_id == "R00001"
            position = await at("Line1/Coater/Web/Position")
            dv = await _check_analog(position, "m", sample.web.md_m)
            assert dv.Value.Value == sample.web.md_m == pytest.approx(90.0)
            assert _epoch(dv) == pytest.approx(sample.ts, abs=1e-3)
            # NMP exhaust and the power of every zone.
            nmp = await _check_analog(await at("Line1/Coater/Dryer/NmpExhaust"), "mg/m3")
            assert nmp.Value.Value == sample.nmp_exhaust
            assert sample.dryer_power_kw is not None
            for zone, power in enumerate(sample.dryer_power_kw.tolist(), start=1):
                node = await at(f"Line1/Coater/Dryer/Zone{zone}/Power")
                dv = await _check_analog(node, "kW", power)
                assert dv.Value.Value == power
                assert _epoch(dv) == pytest.approx(sample.ts, abs=1e-3)
            # Beta gauge scans: one-dimensional Double arrays stamped with the scan start.
            for side, scan in (("A", scan_a), ("B", scan_b)):
                base = f"Line1/Coater/BetaGauge/Side{side}"
                for name, unit, expected in (
                    ("Profile", "mg/cm2", scan.areal_weight),
                    ("Positions", "mm", scan.pos_mm),
                    ("LaneAverage", "mg/cm2", scan.lane_means),
                ):
                    node = await at(f"{base}/{name}")
                    assert await node.read_value_rank() == ua.ValueRank.OneDimension
                    assert await node.read_array_dimensions() == [0]
                    dv = await _check_analog(node, unit)
                    assert dv.Value.VariantType == ua.VariantType.Double
                    assert dv.Value.is_array
                    assert np.array_equal(np.array(dv.Value.Value), expected, equal_nan=True)
                    assert _epoch(dv) == pytest.approx(scan.ts_start, abs=1e-3)
            positions = await (await at("Line1/Coater/BetaGauge/SideA/Positions")).get_child(
                "0:EURange"
            )
            eu_range = await positions.read_value()
            assert (eu_range.Low, eu_range.High) == (0.0, gauge.width_mm)
            assert len(scan_b.pos_mm) == 10  # lane 2 had no mean, so no points
            # Calender lanes.
            for lane in range(1, lanes + 1):
                for name, unit, values in (
                    ("Thickness", "um", cal.thickness_um),
                    ("Density", "g/cm3", cal.density_g_cm3),
                ):
                    node = await at(f"Line1/Calender/Lane{lane:02d}/{name}")
                    dv = await _check_analog(node, unit, float(values[lane - 1]))
                    assert dv.Value.Value == values[lane - 1]
                    assert _epoch(dv) == pytest.approx(cal.ts, abs=1e-3)
            # Formation channels: values, a per-channel clock skew, a stale dropout.
            arrays = {
                "Voltage": ("V", formation.voltage),
                "Current": ("A", formation.current),
                "Capacity": ("Ah", formation.capacity),
                "Temperature": ("degC", formation.temperature),
            }
            for cab in range(1, cabinets + 1):
                for ch in range(1, channels + 1):
                    for name, (unit, values) in arrays.items():
                        path = f"Line1/Formation/Cab{cab:02d}/Ch{ch:02d}/{name}"
                        dv = await _check_analog(await at(path), unit)
                        value = values[cab - 1, ch - 1]
                        if np.isnan(value):  # never written: still the initial value, stale
                            assert dv.Value.Value == VOLTAGE.mean
                            assert abs(_epoch(dv) - formation.ts) > 1.0
                            continue
                        assert dv.Value.Value == value
                        expected_ts = formation.ts + skew[cab - 1, ch - 1]
                        assert _epoch(dv) == pytest.approx(expected_ts, abs=1e-3), path
    finally:
        await server.stop()


async def test_formation_nodes_deliver_every_write_to_a_subscriber() -> None:
    shape = (2, 2)
    server = CoaterServer("127.0.0.1", 0, lanes=1, formation=shape)
    await server.start()
    try:
        async with Client(server.endpoint, timeout=5) as client:
            ns = await client.get_namespace_index(NS_URI)
            names = {}
            for cab in (1, 2):
                for ch in (1, 2):
                    path = f"Line1/Formation/Cab{cab:02d}/Ch{ch:02d}/Voltage"
                    names[(await _node(client, ns, path)).nodeid] = f"{cab}-{ch}"
            handler = _Collector(names)
            sub = await client.create_subscription(20, handler)
            await sub.subscribe_data_change([client.get_node(n) for n in names], queuesize=10)
            times = [T0 + k for k in range(3)]
            for k, ts in enumerate(times):
                volts = 3.0 + k + np.arange(4.0).reshape(shape) / 10
                same = np.zeros(shape)
                await server.write_formation(FormationSample(ts, volts, same, same, same))

            def complete() -> bool:  # the initial value arrives too, stamped "now"
                return all(set(times) <= set(handler.samples[n]) for n in names.values())

            await eventually(complete, timeout=5.0, what="three writes on every voltage node")
            await sub.delete()
    finally:
        await server.stop()
    for cab in (1, 2):
        for ch in (1, 2):
            got = handler.samples[f"{cab}-{ch}"]
            for k, ts in enumerate(times):
                assert got[ts] == pytest.approx(3.0 + k + ((cab - 1) * 2 + ch - 1) / 10)


async def test_server_refuses_misuse_with_clear_errors() -> None:
    with pytest.raises(SimError, match="formation channels must be in 1..99, got 100"):
        CoaterServer("127.0.0.1", 0, lanes=2, formation=(2, 100))
    server = CoaterServer("127.0.0.1", 0, lanes=2)
    await server.start()
    try:
        with pytest.raises(RuntimeError, match="formation="):
            zeros = np.zeros((1, 1))
            await server.write_formation(FormationSample(T0, zeros, zeros, zeros, zeros))
        scan = BetaGauge(lanes=3, seed=1).scan(T0, "A", np.full(3, 20.0), WebModel().position(0))
        with pytest.raises(ValueError, match=r"lane_means must have shape \(2,\), got \(3,\)"):
            await server.write_scan(scan)
    finally:
        await server.stop()


# --- Formation as one array per cabinet and quantity (formation_arrays). ---

ARRAY_UNITS = {
    "VoltageArray": "V",
    "CurrentArray": "A",
    "CapacityArray": "Ah",
    "TemperatureArray": "degC",
}


def _formation_sample(ts: float, shape: tuple[int, int], offset: float = 0.0) -> FormationSample:
    """Distinct values per quantity, cabinet and channel (so element order is checked)."""
    grid = np.arange(float(shape[0] * shape[1])).reshape(shape) / 100 + offset
    return FormationSample(ts, 3.5 + grid, 2.0 + grid, 5.0 + grid, 25.0 + grid)


async def test_formation_arrays_serve_one_array_per_cabinet_and_quantity() -> None:
    cabinets, channels = 2, 3
    shape = (cabinets, channels)
    server = CoaterServer("127.0.0.1", 0, lanes=1, formation=shape, formation_arrays=True)
    await server.start()
    try:
        sample = _formation_sample(T0 + 5.0, shape)
        sample.voltage[1, 2] = np.nan  # a dropout: a NaN element, the array is still written
        sample = dataclasses.replace(sample, skew=np.full(shape, 2.5))  # not applied to arrays
        await server.write_formation(sample)
        quantities = {
            "VoltageArray": sample.voltage,
            "CurrentArray": sample.current,
            "CapacityArray": sample.capacity,
            "TemperatureArray": sample.temperature,
        }
        async with Client(server.endpoint, timeout=5) as client:
            ns = await client.get_namespace_index(NS_URI)
            for cab in range(1, cabinets + 1):
                cab_path = f"Line1/Formation/Cab{cab:02d}"
                cab_node = await _node(client, ns, cab_path)
                children = {
                    (await c.read_browse_name()).Name for c in await cab_node.get_children()
                }
                assert children == set(ARRAY_UNITS)  # no ChNN objects in array mode
                for name, unit in ARRAY_UNITS.items():
                    node = await _node(client, ns, f"{cab_path}/{name}")
                    assert node.nodeid == ua.NodeId(f"Line1.Formation.Cab{cab:02d}.{name}", ns)
                    assert await node.read_value_rank() == ua.ValueRank.OneDimension
                    assert await node.read_array_dimensions() == [channels]
                    dv = await _check_analog(node, unit)
                    assert dv.Value.VariantType == ua.VariantType.Double
                    assert dv.Value.is_array
                    got = np.array(dv.Value.Value)
                    assert got.shape == (channels,)
                    # Element k is channel k + 1.
                    expected = quantities[name][cab - 1]
                    assert np.array_equal(got, expected, equal_nan=True), (cab, name)
                    assert _epoch(dv) == pytest.approx(sample.ts, abs=1e-3)
                    assert dv.ServerTimestamp is not None
            # The dropout is a NaN element of cabinet 2's voltage array (channel 3).
            volts = await client.get_node(
                f"ns={ns};s=Line1.Formation.Cab02.VoltageArray"
            ).read_value()
            assert math.isnan(volts[2]) and not math.isnan(volts[1])
    finally:
        await server.stop()


class _ArrayCollector:
    """Subscription handler counting notifications and keeping (source time, array) per node."""

    def __init__(self) -> None:
        self.notifications: dict[ua.NodeId, list[tuple[float, list[float]]]] = {}

    def datachange_notification(self, node: Node, val: list[float], data: object) -> None:
        dv = data.monitored_item.Value  # type: ignore[attr-defined]
        self.notifications.setdefault(node.nodeid, []).append((_epoch(dv), list(val)))


async def test_formation_arrays_notify_a_subscriber_once_per_write() -> None:
    shape = (2, 4)
    server = CoaterServer("127.0.0.1", 0, lanes=1, formation=shape, formation_arrays=True)
    await server.start()
    try:
        async with Client(server.endpoint, timeout=5) as client:
            ns = await client.get_namespace_index(NS_URI)
            nodes = [
                client.get_node(ua.NodeId(f"Line1.Formation.Cab02.{name}", ns))
                for name in ARRAY_UNITS
            ]
            handler = _ArrayCollector()
            sub = await client.create_subscription(20, handler)
            await sub.subscribe_data_change(nodes, queuesize=10)
            # The initial value comes first; wait for it so it is not mixed with the writes.
            await eventually(
                lambda: len(handler.notifications) == len(nodes), what="initial notifications"
            )
            samples = [_formation_sample(T0 + k, shape, offset=k) for k in range(3)]
            for sample in samples:
                await server.write_formation(sample)

            def complete() -> bool:
                return all(len(handler.notifications[n.nodeid]) >= 1 + 3 for n in nodes)

            await eventually(complete, timeout=5.0, what="three writes on every array node")
            await sub.delete()
    finally:
        await server.stop()
    for node, name in zip(nodes, ARRAY_UNITS, strict=True):
        got = handler.notifications[node.nodeid][1:]
        assert [ts for ts, _ in got] == [s.ts for s in samples], name
        quantity = name.removesuffix("Array").lower()
        for (_, values), sample in zip(got, samples, strict=True):
            assert values == getattr(sample, quantity)[1].tolist(), name


async def test_formation_arrays_need_formation_and_pass_through_the_simulator() -> None:
    with pytest.raises(SimError, match="formation_arrays needs formation="):
        CoaterServer("127.0.0.1", 0, lanes=1, formation_arrays=True)
    sim = Simulator(
        opcua_port=0, broker_url=None, fault=None, cabinets=2, channels=3, formation_arrays=True
    )
    assert sim.formation_opcua  # implied
    assert "arrays per cabinet" in sim.describe()
    async with sim, Client(sim.endpoint, timeout=5) as client:
        ns = await client.get_namespace_index(NS_URI)
        node = client.get_node(ua.NodeId("Line1.Formation.Cab02.TemperatureArray", ns))

        async def written() -> bool:
            dv = await node.read_data_value()
            return _epoch(dv) >= sim.start_ts

        deadline = time.monotonic() + 5.0
        while not await written():
            assert time.monotonic() < deadline, "the simulator did not write the arrays"
            await asyncio.sleep(0.05)
        assert len(await node.read_value()) == 3
