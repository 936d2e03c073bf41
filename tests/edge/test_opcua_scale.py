"""10k nodes: browse paths translated and monitored items created in batches the server allows.

The server publishes MaxMonitoredItemsPerCall and refuses larger calls (BadTooManyOperations),
as strict servers do; the source must stay within it, fall back to its default batch when no
limit is published, and split a batch the server still refuses.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from edge.opcua_source import OpcUaSource
from models.messages import Quality, Reading
from models.plant import OpcUaSource as OpcUaSourceConfig
from tests.edge.opcua_server import NS
from tests.edge.opcua_servers import UaServer, build
from tests.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

N = 10_000
LIMIT = 700


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def big_server() -> AsyncIterator[UaServer]:
    server = await build(free_port(), big=N, max_items_per_call=LIMIT)
    async with server:
        yield server


def config(server: UaServer) -> OpcUaSourceConfig:
    return OpcUaSourceConfig.model_validate(
        {
            "id": "big-plc",
            "endpoint": server.url,
            "namespace_uri": NS,
            "line": "l1",
            "station": "big",
            "publishing_interval_ms": 100,
            "timeout_s": 10,
            "nodes": [
                {"browse_path": path, "equipment": f"v{i:05d}", "param": "x"}
                for i, path in enumerate(server.big)
            ],
        }
    )


async def take_all(src: OpcUaSource, n: int, timeout: float) -> list[Reading]:
    out: list[Reading] = []
    async with asyncio.timeout(timeout):
        async for r in src:
            out.append(r)
            if len(out) == n:
                return out
    raise AssertionError(f"source ended after {len(out)} of {n} readings")


async def subscribe_all(server: UaServer) -> tuple[OpcUaSource, list[Reading], float]:
    src = OpcUaSource(config(server), queue_size=2 * N)
    t0 = time.monotonic()
    async with src:
        initial = await take_all(src, N, timeout=120)
        elapsed = time.monotonic() - t0
    return src, initial, elapsed


async def test_10k_nodes_are_subscribed_in_batches_within_the_published_limit(
    big_server: UaServer,
) -> None:
    server = big_server
    server.monitor_calls.clear()
    src, initial, elapsed = await subscribe_all(server)
    assert (src.subscribed, src.unresolved, src.rejected) == (N, 0, 0)
    assert src.limits is not None and src.limits.published["monitored_items"] == LIMIT
    assert src.limits.monitored_items == LIMIT
    calls = math.ceil(N / LIMIT)
    assert server.monitor_calls == [LIMIT] * (calls - 1) + [N - LIMIT * (calls - 1)]
    assert src.monitor_calls == calls
    # Every node's initial value arrived once, under its own key.
    assert sorted((r.key.equipment, r.value) for r in initial) == [
        (f"v{i:05d}", float(i)) for i in range(N)
    ]
    assert all(r.quality is Quality.GOOD for r in initial)
    assert src.subscribe_s is not None
    print(
        f"\n10k nodes: subscribed in {src.subscribe_s:.2f} s "
        f"({calls} CreateMonitoredItems calls), all initial values in {elapsed:.2f} s"
    )
    assert src.subscribe_s < 30


async def test_without_a_published_limit_the_default_batch_is_used_and_split_on_refusal(
    big_server: UaServer,
) -> None:
    server = big_server
    await server.publish_item_limit(0)  # "no limit" - yet the server still refuses > 700
    server.monitor_calls.clear()
    try:
        src, initial, _ = await subscribe_all(server)
    finally:
        await server.publish_item_limit(LIMIT)
    assert src.limits is not None and src.limits.published["monitored_items"] is None
    assert src.limits.monitored_items == 1000
    # Each batch of 1000 is refused as too many, then sent as two halves of 500.
    assert server.monitor_calls == [1000, 500, 500] * (N // 1000)
    assert (src.subscribed, len(initial), src.unresolved) == (N, N, 0)
