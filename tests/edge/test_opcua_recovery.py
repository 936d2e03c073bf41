"""Self-healing of the OPC UA source against real asyncua servers.

Faults: the server restarts (a new process on the same port with the same address space), a
subscription goes silent while the session stays up (no data, no keepalives), nodes stop
delivering. Each test asserts what the source does about it and that data flows again.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua

from edge.opcua_source import OpcUaSource
from models.plant import OpcUaSource as OpcUaSourceConfig
from tests.edge.opcua_server import NS
from tests.edge.opcua_servers import UaServer, Users, build, server_pki
from tests.edge.test_opcua_source import connected, take
from tests.servers import free_port
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

NODES = [
    {"browse_path": "Line1/Coater/Lane01/ArealWeight", "equipment": "lane01", "param": "w"},
    {"browse_path": "Line1/Coater/Lane02/ArealWeight", "equipment": "lane02", "param": "w"},
    {"node_id": "s=Line1.Coater.WebSpeed", "equipment": "web", "param": "speed"},
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[UaServer]:
    s = await build(free_port())
    async with s:
        yield s


def config(url: str, **extra: Any) -> OpcUaSourceConfig:
    return OpcUaSourceConfig.model_validate(
        {
            "id": "plc",
            "endpoint": url,
            "namespace_uri": NS,
            "line": "l1",
            "station": "coater",
            "publishing_interval_ms": 50,
            "timeout_s": 2,
            "nodes": NODES,
            **extra,
        }
    )


def live_subscriptions(s: UaServer) -> int:
    subs = s.server.iserver.subscription_service.subscriptions.values()
    return sum(1 for sub in subs if sub._task is not None and not sub._task.done())


async def test_after_a_server_restart_data_flows_again_within_5_s(tmp_path: Path) -> None:
    """With security on, as in a plant: the restarted server has the same certificate."""
    port = free_port()
    pki = server_pki(tmp_path / "server")
    (tmp_path / "trusted").mkdir()
    shutil.copy(pki[0], tmp_path / "trusted")

    async def plc() -> UaServer:
        return await build(
            port,
            policies=[ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt],
            pki=pki,
            users=Users("op", "pw"),
        )

    first = await plc()
    security = {
        "policy": "Basic256Sha256",
        "mode": "SignAndEncrypt",
        "certificate": str(tmp_path / "own.der"),
        "private_key": str(tmp_path / "own.key.pem"),
        "trust_dir": str(tmp_path / "trusted"),
    }
    src = OpcUaSource(config(first.url, username="op", password="pw", security=security))
    t0 = round(time.time(), 3)
    async with src:
        async with first:
            await connected(src)
            for i in range(3):
                await first.write("Lane01", 20.0 + i, ts=t0 + i)
            before = await take(src, 3)
            second = await plc()  # same port and address space; built ahead (it is slow)
        await eventually(lambda: src.state != "connected", 10, "loss of the server noticed")
        await asyncio.sleep(1.0)  # the server is down for a second
        async with second:
            started = time.monotonic()
            await second.write("Lane01", 99.0, ts=t0 + 10)
            while True:
                [r] = await take(src, 1, timeout=10)
                if r.key.equipment == "lane01" and r.value == 99.0:
                    break
            recovery = time.monotonic() - started
            await second.write("Lane01", 100.0, ts=t0 + 11)
            rest = await take_until(src, lambda r: r.value == 100.0)
    print(f"\nOPC UA server restart: first new reading {recovery:.2f} s after the restart")
    assert recovery <= 5.0
    assert [(r.ts, r.value) for r in before] == [(t0 + i, 20.0 + i) for i in range(3)]
    lane01 = [r for r in rest if r.key.equipment == "lane01"]
    assert [(r.ts, r.value) for r in lane01] == [(t0 + 11, 100.0)]  # no repeats
    assert (src.connects, src.reconnects) == (2, 1)
    assert src.channel_security == "Basic256Sha256/SignAndEncrypt"


async def take_until(src: OpcUaSource, done: Any, timeout: float = 10) -> list[Any]:
    out = []
    async with asyncio.timeout(timeout):
        async for r in src:
            out.append(r)
            if done(r):
                return out
    raise AssertionError("source ended")


async def test_a_silent_subscription_is_replaced_by_the_keepalive_watchdog(
    server: UaServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cellwatch.edge.opcua")
    # Keepalive after 3 x 100 ms; the watchdog acts after 4 intervals (0.4 s, floored to 0.5).
    cfg = config(server.url, publishing_interval_ms=100, keepalive_count=3)
    async with OpcUaSource(cfg) as src:
        await connected(src)
        await server.silence_subscriptions()
        silenced = time.monotonic()
        await eventually(lambda: src.resubscribes == 1, 10, "a resubscribe")
        noticed = time.monotonic() - silenced
        ts = round(time.time(), 3)
        await server.write("Lane02", 18.5, ts=ts)
        [r] = await take(src, 1)
    assert (r.key.equipment, r.value, r.ts) == ("lane02", 18.5, ts)
    assert 0.4 <= noticed < 2.0
    assert (src.session_renewals, src.client_renewals, src.connects) == (0, 0, 1)
    assert any(
        "no publish response or keepalive" in m and "next: resubscribe" in m
        for m in caplog.messages
    )


async def test_escalation_climbs_from_resubscribe_to_new_session_to_new_client(
    server: UaServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="cellwatch.edge.opcua")
    cfg = config(server.url, publishing_interval_ms=100, keepalive_count=3)
    steps = [("resubscribes", 1), ("session_renewals", 1), ("client_renewals", 1)]
    async with OpcUaSource(cfg) as src:
        await connected(src)
        for counter, value in steps:
            # Silence whatever subscription serves the source now; no data comes in between,
            # so each silence climbs one rung.
            await eventually(lambda: live_subscriptions(server) == 1, 10, "a live subscription")
            await server.silence_subscriptions()
            await eventually(lambda c=counter, v=value: getattr(src, c) == v, 10, counter)
        await eventually(lambda: src.state == "connected", 10, "connected again")
        ts = round(time.time(), 3)
        await server.write("WebSpeed", 61.0, ts=ts)
        got = await take_until(src, lambda r: r.ts == ts)
        assert src._ladder.level == 0  # fresh data resets the ladder
    assert (src.resubscribes, src.session_renewals, src.client_renewals) == (1, 1, 1)
    assert [r.value for r in got if r.ts == ts] == [61.0]
    rungs = [m.rsplit("next: ", 1)[1] for m in caplog.messages if "next: " in m]
    assert rungs == ["resubscribe", "new session", "new client"]


async def test_stale_nodes_are_counted_and_all_stale_escalates(
    server: UaServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cellwatch.edge.opcua")
    nodes = [dict(n, stale_after_s=0.6) for n in NODES[:2]] + NODES[2:]  # WebSpeed unwatched
    cfg = config(server.url, nodes=nodes)
    stop = asyncio.Event()

    async def feed_lane01() -> None:
        while not stop.is_set():
            await server.write("Lane01", 20.0, ts=time.time())
            await asyncio.sleep(0.1)

    async with OpcUaSource(cfg) as src:
        await connected(src)
        feeder = asyncio.create_task(feed_lane01())
        try:
            await eventually(lambda: src.status().stale == 1, 5, "Lane02 stale")
            assert src.stale_total == 1 and src.resubscribes == 0  # one quiet node: no action
            await server.write("Lane02", 19.0, ts=time.time())
            await eventually(lambda: src.stale == 0, 5, "Lane02 fresh again")
        finally:
            stop.set()
            await feeder
        await eventually(lambda: src.resubscribes >= 1, 5, "escalation once all are stale")
        assert src.status().stale == 2
    stale_logs = [m for m in caplog.messages if "stale (no new sample" in m]
    assert "browse_path Line1/Coater/Lane02/ArealWeight" in stale_logs[0]
    assert any("deliver again" in m for m in caplog.messages)
    assert any("all 2 watched nodes are stale" in m for m in caplog.messages)
