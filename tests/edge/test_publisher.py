"""Publisher against a real Mosquitto: numbering, acknowledgement, bounded queue, resend."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from edge.publisher import Publisher
from models.messages import EdgeStatus, Kind, Reading, SeriesKey
from models.wire import decode
from tests.edge.probe import MqttProbe
from tests.servers import free_port, mosquitto
from tests.waiting import eventually

pytestmark = pytest.mark.integration

R = Reading(SeriesKey("l1", "coater", "lane01", "weight"), 1.7e9, 20.0)


async def test_envelopes_are_numbered_published_and_acknowledged(mosquitto_url: str) -> None:
    edge = f"gw-{uuid.uuid4().hex[:6]}"
    topic = f"t/{edge}/telemetry"
    async with MqttProbe(mosquitto_url, topic) as probe, Publisher(mosquitto_url, edge) as pub:
        await eventually(lambda: pub.connected, 10, "publisher connected")
        sent = [pub.send(topic, Kind.TELEMETRY, [R] * i) for i in range(1, 6)]
        await eventually(lambda: pub.published == 5, 10, "5 acknowledgements")
        assert pub.pending == 0
        await eventually(lambda: len(probe.messages) == 5, 10, "5 messages at the probe")
    got = [decode(p) for _, p in probe.messages]
    assert [e.seq - pub.start_seq for e in got] == [1, 2, 3, 4, 5]
    assert got == sent
    assert [len(e.items) for e in got] == [1, 2, 3, 4, 5]


async def test_without_a_broker_send_never_blocks_and_the_queue_is_bounded_then_resent(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    topic = "t/outage/status"
    status = EdgeStatus(1.0, 2.0)
    async with Publisher(url, "gw-outage", max_pending=5, max_retry_s=0.3) as pub:
        await eventually(lambda: pub.last_error, 10, "the missing broker noticed")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for _ in range(8):
            pub.send(topic, Kind.STATUS, [status])
        assert loop.time() - t0 < 0.1
        assert (pub.pending, pub.dropped, pub.published, pub.seq - pub.start_seq) == (5, 3, 0, 8)
        broker = mosquitto(tmp_path, port)
        await asyncio.to_thread(broker.__enter__)
        try:
            async with MqttProbe(url, topic) as probe:
                # The probe may subscribe after some of them went out; wait for the acks.
                await eventually(lambda: pub.published == 5, 15, "the kept envelopes resent")
                assert pub.pending == 0
                pub.send(topic, Kind.STATUS, [status])
                nine = pub.start_seq + 9
                await eventually(lambda: any(decode(p).seq == nine for _, p in probe.messages),
                                 10, "a new envelope after the outage")
        finally:
            await asyncio.to_thread(broker.__exit__, None, None, None)
    assert pub.dropped == 3


async def test_sequence_numbers_continue_across_restarts(mosquitto_url: str) -> None:
    """The server drops (edge id, seq) pairs it has seen: a restarted edge must not reuse them."""
    topic = "t/restart/status"
    async with Publisher(mosquitto_url, "gw-restart") as first:
        first.send(topic, Kind.STATUS, [EdgeStatus(1.0, 2.0)])
        last = first.seq
    async with Publisher(mosquitto_url, "gw-restart") as second:
        assert second.send(topic, Kind.STATUS, [EdgeStatus(1.0, 2.0)]).seq > last
