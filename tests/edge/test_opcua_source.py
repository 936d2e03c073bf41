"""OPC UA source against asyncua's own server: keys, timestamps, quality, errors, reconnect."""

from __future__ import annotations

import asyncio
import logging
import math

import pytest
from asyncua import ua

from edge.opcua_source import OpcUaSource
from models.messages import Quality, Reading, SeriesKey
from models.plant import OpcUaSource as OpcUaSourceConfig
from tests.edge.opcua_server import NS, UaTestServer
from tests.servers import free_port
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

NODES = [
    {"browse_path": "Line1/Coater/Lane01/ArealWeight", "equipment": "lane01", "param": "weight"},
    {"browse_path": "Line1/Coater/Lane02/ArealWeight", "equipment": "lane02", "param": "weight"},
    {"node_id": "s=Line1.Coater.WebSpeed", "equipment": "web", "param": "speed"},
]


def config(url: str, nodes: list[dict[str, str]] = NODES) -> OpcUaSourceConfig:
    return OpcUaSourceConfig.model_validate({
        "id": "coater-plc", "endpoint": url, "namespace_uri": NS,
        "line": "l1", "station": "coater", "publishing_interval_ms": 20, "timeout_s": 2,
        "nodes": nodes,
    })


def key(eq: str, param: str = "weight") -> SeriesKey:
    return SeriesKey("l1", "coater", eq, param)


async def take(src: OpcUaSource, n: int, timeout: float = 10) -> list[Reading]:
    out: list[Reading] = []
    async with asyncio.timeout(timeout):
        async for r in src:
            out.append(r)
            if len(out) == n:
                return out
    raise AssertionError(f"source ended after {len(out)} of {n} readings")


async def connected(src: OpcUaSource) -> list[Reading]:
    """Wait for the subscription and take the initial value of every configured node."""
    await eventually(lambda: src.state == "connected", 10, "OPC UA source connected")
    return await take(src, len(src.cfg.nodes) - src.unresolved)


async def test_written_values_arrive_with_keys_source_timestamps_and_quality(
    ua_server: UaTestServer,
) -> None:
    server = ua_server
    async with OpcUaSource(config(server.url)) as src:
        initial = await connected(src)
        assert sorted(r.key.equipment for r in initial) == ["lane01", "lane02", "web"]
        await server.write("Lane01", 20.5, ts=1_700_000_000.25)
        await server.write("Lane01", 20.5, ts=1_700_000_001.25)  # same value, new sample
        await server.write("WebSpeed", 61.0, ts=1_700_000_002.0)
        uncertain, bad = ua.StatusCodes.UncertainLastUsableValue, ua.StatusCodes.BadSensorFailure
        await server.write("Lane02", 19.0, ts=1_700_000_003.0, status=uncertain)
        await server.write("Lane02", 0.0, ts=1_700_000_004.0, status=bad)
        got = await take(src, 5)
    assert [(r.key, r.ts, r.value, r.quality) for r in got[:4]] == [
        (key("lane01"), 1_700_000_000.25, 20.5, Quality.GOOD),
        (key("lane01"), 1_700_000_001.25, 20.5, Quality.GOOD),
        (key("web", "speed"), 1_700_000_002.0, 61.0, Quality.GOOD),
        (key("lane02"), 1_700_000_003.0, 19.0, Quality.UNCERTAIN),
    ]
    bad = got[4]
    assert (bad.key, bad.ts, bad.quality) == (key("lane02"), 1_700_000_004.0, Quality.BAD)
    assert not bad.usable
    assert all(r.received_ts is not None and r.received_ts > 1.7e9 for r in got)
    st = src.status()
    assert (st.readings, st.bad_quality, st.rejected) == (8, 2, 0)


async def test_bad_status_without_a_value_is_a_bad_nan_reading(ua_server: UaTestServer) -> None:
    server = ua_server
    async with OpcUaSource(config(server.url, NODES[:1])) as src:
        await connected(src)
        dv = ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadCommunicationError))
        await server.nodes["Lane01"].write_value(dv)
        [r] = await take(src, 1)
    assert r.quality is Quality.BAD and math.isnan(r.value)
    assert r.ts > 1.7e9  # no source timestamp: the server's timestamp stands in


async def test_unresolvable_nodes_are_logged_counted_and_skipped(
    ua_server: UaTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="cellwatch.edge.opcua")
    nodes = NODES[:1] + [
        {"browse_path": "Line1/Coater/Lane09/ArealWeight", "equipment": "lane09", "param": "w"},
        {"node_id": "s=No.Such.Node", "equipment": "ghost", "param": "w"},
        {"browse_path": "Line1/Coater/Label", "equipment": "label", "param": "w"},
    ]
    server = ua_server
    async with OpcUaSource(config(server.url, nodes)) as src:
        await eventually(lambda: src.state == "connected", 10, "OPC UA source connected")
        assert src.unresolved == 2
        [first] = await take(src, 1)  # Lane01's initial value; Label's string is rejected
        await server.write("Label", "batch 7", vtype=ua.VariantType.String)
        await server.write("Lane01", 21.25, ts=1_700_000_000.0)
        [r] = await take(src, 1)
        await eventually(lambda: src.rejected == 2, 5, "both strings rejected")
    assert first.key == key("lane01") and r.value == 21.25
    errors = [rec.getMessage() for rec in caplog.records]
    assert any("coater-plc" in m and "Line1/Coater/Lane09/ArealWeight" in m for m in errors)
    assert any("coater-plc" in m and "s=No.Such.Node" in m for m in errors)
    assert "node(s) not found" in src.status().last_error


async def test_reconnects_and_resolves_the_namespace_again_after_a_server_restart() -> None:
    port = free_port()
    first = await UaTestServer.create(port)
    src = OpcUaSource(config(first.url))
    async with src:
        async with first:
            await connected(src)
            assert first.idx == 2
            # The next server moves the namespace to another index; node ids and browse names
            # are written relative to its URI, so they must be resolved again.
            server = await UaTestServer.create(port, extra_namespaces=2)
        await eventually(lambda: src.state != "connected", 10, "loss of the server noticed")
        assert src.last_error
        async with server:
            assert server.idx == 4
            await connected(src)
            await server.write("WebSpeed", 62.5, ts=1_700_000_100.0)
            [r] = await take(src, 1)
    assert (r.key, r.value) == (key("web", "speed"), 62.5)
    assert src.connects == 2


async def test_no_server_keeps_retrying_without_raising() -> None:
    async with OpcUaSource(config(f"opc.tcp://127.0.0.1:{free_port()}/test")) as src:
        await eventually(lambda: src.last_error, 10, "a connection error in the status")
        assert src.state in ("connecting", "disconnected")
        assert src.readings == 0
