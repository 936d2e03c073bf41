"""Monitored-item settings per node, both timestamps, and clock skew, against a real server."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua

from edge.opcua_source import OpcUaSource
from models.plant import OpcUaSource as OpcUaSourceConfig
from tests.edge.opcua_server import NS
from tests.edge.opcua_servers import UaServer, build
from tests.edge.test_opcua_recovery import NODES, take_until
from tests.edge.test_opcua_source import connected, take
from tests.servers import free_port
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[UaServer]:
    s = await build(free_port())
    async with s:
        yield s


def config(url: str, nodes: list[dict[str, Any]] = NODES, **extra: Any) -> OpcUaSourceConfig:
    return OpcUaSourceConfig.model_validate(
        {
            "id": "plc",
            "endpoint": url,
            "namespace_uri": NS,
            "line": "l1",
            "station": "coater",
            "publishing_interval_ms": 50,
            "timeout_s": 2,
            "nodes": nodes,
            **extra,
        }
    )


async def test_sampling_queue_and_deadband_reach_the_server_per_node(server: UaServer) -> None:
    nodes = [
        dict(NODES[0], sampling_interval_ms=10, queue_size=5, deadband=0.5),
        NODES[1],
        dict(NODES[2], queue_size=7),
    ]
    cfg = config(server.url, nodes, sampling_interval_ms=200, queue_size=50)
    t0 = round(time.time(), 3)
    async with OpcUaSource(cfg) as src:
        await connected(src)
        items = {i.client_handle: i for i in server.subscription_items()}
        for i, v in enumerate((20.1, 20.2, 21.0, 21.3, 19.0)):
            await server.write("Lane01", v, ts=t0 + i)
        await server.write("Lane02", 20.0, ts=t0 + 10)
        await server.write("Lane02", 20.0, ts=t0 + 11)  # an equal value is still a sample
        got = await take_until(src, lambda r: r.ts == t0 + 11)
    # Queue sizes as asked, per node or from the source; the filters as asked.
    assert {h: i.queue_size for h, i in items.items()} == {1: 5, 2: 50, 3: 7}
    f1, f2 = items[1].filter, items[2].filter
    assert (f1.Trigger, f1.DeadbandType, f1.DeadbandValue) == (
        ua.DataChangeTrigger.StatusValue,
        ua.DeadbandType.Absolute,
        0.5,
    )
    assert (f2.Trigger, f2.DeadbandType) == (
        ua.DataChangeTrigger.StatusValueTimestamp,
        ua.DeadbandType.None_,
    )
    # asyncua's server compares with the previous sample: 20.1 and 20.2 stay within 0.5 of
    # 20.0 and 20.1, 21.3 within 0.5 of 21.0.
    lane01 = [r.value for r in got if r.key.equipment == "lane01"]
    assert lane01 == [21.0, 19.0]
    assert [r.ts for r in got if r.key.equipment == "lane02"] == [t0 + 10, t0 + 11]


async def test_sampling_interval_is_requested_per_node(server: UaServer) -> None:
    """asyncua's server does not report the requested sampling interval back, so read what
    the source put on the wire from its requests."""
    from edge.opcua_nodes import item_request

    cfg = config(
        server.url, [dict(NODES[0], sampling_interval_ms=10), NODES[1]], sampling_interval_ms=200
    )
    reqs = [item_request(ua.NodeId(h), h, n, cfg) for h, n in enumerate(cfg.nodes, 1)]
    assert [r.RequestedParameters.SamplingInterval for r in reqs] == [10.0, 200.0]
    assert [r.RequestedParameters.QueueSize for r in reqs] == [1000, 1000]


async def test_both_timestamps_are_kept_and_clock_skew_is_reported_once(
    server: UaServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cellwatch.edge.opcua")
    cfg = config(server.url, NODES[:1], clock_skew_warn_s=2.0)
    async with OpcUaSource(cfg) as src:
        await connected(src)
        assert src.status().clock_skew_s is None  # an initial value says nothing about clocks
        for i in range(40):  # a PLC whose clock runs 30 s ahead
            await server.write("Lane01", 20.0 + i / 100, ts=round(time.time() + 30, 3))
            await take(src, 1)
        await eventually(
            lambda: src.status().clock_skew_s is not None and src.status().clock_skew_s > 29,
            5,
            "the skew in the status",
        )
        skew_ahead = src.status().clock_skew_s
        for i in range(300):  # the clock is corrected
            await server.write("Lane01", 21.0 + i / 1000, ts=round(time.time(), 3))
        await take(src, 300)
        await eventually(lambda: abs(src.status().clock_skew_s or 99) < 1, 5, "skew gone")
    assert skew_ahead is not None and 29.0 < skew_ahead <= 30.0
    warnings = [m for m in caplog.messages if "device clock runs" in m]
    assert len(warnings) == 1 and "ahead of the gateway's" in warnings[0]
    assert sum("clock skew back within" in m for m in caplog.messages) == 1


async def test_timestamps_of_a_reading_are_source_server_and_receipt(server: UaServer) -> None:
    async with OpcUaSource(config(server.url, NODES[1:2])) as src:
        await connected(src)
        before = time.time()
        await server.write("Lane02", 18.0, ts=1_700_000_000.5)  # the device's own time
        [r] = await take(src, 1)
    assert r.ts == 1_700_000_000.5
    # The server stamped the sample when it took it; the gateway when it received it.
    assert r.server_ts is not None and r.received_ts is not None
    assert before <= r.server_ts <= r.received_ts
    assert not r.backfilled
