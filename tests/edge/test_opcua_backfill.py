"""HistoryRead backfill: a network outage leaves no hole where the server kept history.

The source reaches the server through a `Link` that the test cuts and restores. While it is
down the device goes on producing samples; after the reconnect the source reads them back
from the server's history, marks them as backfilled, and continues live without repeats.
"""

from __future__ import annotations

import json
import math
import time

import pytest

from edge.opcua_source import OpcUaSource
from models.messages import Envelope, Kind, Quality, Reading, SeriesKey
from models.plant import OpcUaSource as OpcUaSourceConfig
from models.wire import WireError, decode, encode
from tests.edge.opcua_server import NS
from tests.edge.opcua_servers import Link, build
from tests.edge.test_opcua_recovery import NODES, take_until
from tests.edge.test_opcua_source import connected, take
from tests.servers import free_port
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


async def test_a_gap_is_backfilled_from_history_marked_in_order_and_without_repeats() -> None:
    port = free_port()
    server = await build(port, history=("Lane01", "Lane02"))  # WebSpeed keeps no history
    t0 = round(time.time(), 3)
    async with server, Link(port) as link:
        cfg = OpcUaSourceConfig.model_validate(
            {
                "id": "plc",
                "endpoint": f"opc.tcp://127.0.0.1:{link.port}/test",
                "namespace_uri": NS,
                "line": "l1",
                "station": "coater",
                "publishing_interval_ms": 50,
                "timeout_s": 2,
                "retry_max_s": 0.5,
                "nodes": NODES,
            }
        )
        async with OpcUaSource(cfg) as src:
            await connected(src)
            for i in range(3):
                await server.write("Lane01", 20.0 + i, ts=t0 + i)
            live_before = await take(src, 3)
            link.cut()
            await eventually(lambda: src.state != "connected", 10, "the outage noticed")
            gap = [(t0 + 10 + i, 30.0 + i) for i in range(5)]
            for ts, v in gap:  # the device goes on producing while the link is down
                await server.write("Lane01", v, ts=ts)
            await server.write("Lane02", 19.5, ts=t0 + 12.5, status=0x40000000)  # uncertain
            await server.write("WebSpeed", 61.0, ts=t0 + 13)
            await server.write("WebSpeed", 62.0, ts=t0 + 14)
            link.restore()
            await eventually(lambda: src.connects == 2, 10, "reconnected")
            await server.write("Lane01", 40.0, ts=t0 + 20)
            after = await take_until(src, lambda r: r.value == 40.0)
            status = src.status()
    assert [(r.ts, r.value) for r in live_before] == [(t0 + i, 20.0 + i) for i in range(3)]
    lane01 = [(r.ts, r.value, r.backfilled) for r in after if r.key.equipment == "lane01"]
    assert lane01 == [(ts, v, True) for ts, v in gap] + [(t0 + 20, 40.0, False)]
    [lane02] = [r for r in after if r.key.equipment == "lane02"]
    assert (lane02.ts, lane02.value, lane02.quality, lane02.backfilled) == (
        t0 + 12.5,
        19.5,
        Quality.UNCERTAIN,
        True,
    )
    # Without history only the latest value survives an outage: it comes as the new
    # subscription's initial value, live, not marked.
    web = [(r.ts, r.value, r.backfilled) for r in after if r.key.equipment == "web"]
    assert web == [(t0 + 14, 62.0, False)]
    assert src.backfilled == status.backfilled == 6
    assert src.backfill_calls >= 1
    assert all(r.received_ts is not None and r.server_ts is not None for r in after)


async def test_backfilled_and_server_timestamped_readings_survive_the_wire() -> None:
    k = SeriesKey("l1", "coater", "lane01", "w")
    items = (
        Reading(k, 1.0, 20.0, Quality.GOOD, 2.0),
        Reading(k, 3.0, 21.0, Quality.GOOD, 4.0, server_ts=3.5),
        Reading(k, 5.0, math.nan, Quality.BAD, 6.0, server_ts=5.5, backfilled=True),
    )
    env = decode(encode(Envelope("gw", 1, Kind.TELEMETRY, 7.0, items)))
    got = env.items
    assert got[:2] == items[:2]
    assert (got[2].server_ts, got[2].backfilled, math.isnan(got[2].value)) == (5.5, True, True)
    # An older gateway's five-element items still decode, as live readings.
    old = (
        b'{"schema":1,"edge_id":"g","seq":1,"kind":"telemetry","sent_ts":1,'
        b'"items":[[["l1","coater","lane01","w"],1.0,20.0,"good",2.0]]}'
    )
    [r] = decode(old).items
    assert (r.server_ts, r.backfilled) == (None, False)
    lengths = [
        len(i) for i in json.loads(encode(Envelope("gw", 1, Kind.TELEMETRY, 7.0, items)))["items"]
    ]
    assert lengths == [5, 6, 7]  # the extras are written only when set
    bad = old.replace(b"2.0]]", b'2.0,3.0,"yes"]]')
    with pytest.raises(WireError, match="backfilled must be 0 or 1, got 'yes'"):
        decode(bad)
