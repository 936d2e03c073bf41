"""Prometheus /metrics of running agents (MQTT source on Mosquitto), scraped over HTTP.

Also the status envelopes the same agent publishes: rate and lag of its source, outbox state.
"""

from __future__ import annotations

import doctest
import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge import metrics
from edge.agent import EdgeAgent
from models.messages import EdgeStatus
from models.plant import PlantConfig
from models.wire import decode
from tests.edge.plants import plant
from tests.edge.probe import MqttProbe
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample of ``/metrics``, parsed by prometheus-client's own parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def config(broker: str, edge_id: str, root: str, **edge: Any) -> PlantConfig:
    return plant(
        detector={"kind": "stuck", "n": 3},
        broker=broker,
        edge={"id": edge_id, "window_s": 0.1, "status_interval_s": 0.2, "metrics_port": 0, **edge},
        mqtt=[
            {
                "id": f"src-{edge_id}",
                "topic": f"{root}/+",
                "line": "l1",
                "station": "coater",
                "equipment": "{1}",
                "payload": {"values": {"weight": "v"}},
            }
        ],
    )


async def test_metrics_of_two_agents_are_their_own_and_follow_the_counters(
    mosquitto_url: str,
) -> None:
    ids = [f"gw-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    roots = [f"metrics/{i}" for i in ids]
    agents = [EdgeAgent(config(mosquitto_url, i, r)) for i, r in zip(ids, roots, strict=True)]
    status_topics = [f"cellwatch/v1/s1/_edge/{i}/status" for i in ids]
    async with MqttProbe(mosquitto_url, *status_topics) as probe, agents[0] as a, agents[1] as b:
        assert a.metrics_port and b.metrics_port and a.metrics_port != b.metrics_port
        src = f"src-{ids[0]}"
        await eventually(
            lambda: a.sources[0].state == "connected" and b.sources[0].state == "connected",
            10,
            "sources connected",
        )
        now = time.time()
        values = [1.0, 2.0, 5.0, 5.0, 5.0, 5.0, 6.0]  # 5.0 repeated 3 times after itself: stuck
        for i, v in enumerate(values):
            await probe.publish(f"{roots[0]}/lane01", json.dumps({"ts": now + i * 0.01, "v": v}))
        await probe.publish(f"{roots[0]}/lane01", b"{broken")
        await probe.publish(f"{roots[1]}/lane09", json.dumps({"ts": now, "v": 1.0}))

        def settled() -> Samples | None:
            m = scrape(a.metrics_port or 0)
            done = m.get(("cellwatch_edge_source_readings_total", (("source", src),))) == 7
            stuck = m.get(("cellwatch_edge_detections_total", (("rule", "stuck"),)))
            return m if done and stuck == 1 else None

        m = await eventually(settled, 10, "readings and the stuck detection in /metrics")
        one = (("source", src),)
        assert m[("cellwatch_edge_source_rejected_total", one)] == 1  # the broken payload
        assert m[("cellwatch_edge_source_bad_quality_total", one)] == 0
        assert m[("cellwatch_edge_source_reconnects_total", one)] == 0
        assert m[("cellwatch_edge_source_backfilled_total", one)] == 0
        assert m[("cellwatch_edge_source_stale", one)] == 0
        assert m[("cellwatch_edge_source_connected", one)] == 1
        assert 0 <= m[("cellwatch_edge_source_lag_seconds", one)] < 10
        assert m[("cellwatch_edge_info", (("edge", ids[0]),))] == 1
        assert m[("cellwatch_edge_windows_total", ())] >= 1
        assert m[("cellwatch_edge_window_seconds_count", ())] >= 1
        assert m[("cellwatch_edge_window_seconds_sum", ())] > 0
        for name in (
            "published_total",
            "dropped_total",
            "outbox_pending",
            "outbox_bytes",
            "excluded_total",
            "refused_total",
            "window_errors_total",
        ):
            assert ("cellwatch_edge_" + name, ()) in m, name
        assert m[("cellwatch_edge_window_errors_total", ())] == 0
        await eventually(
            lambda: scrape(a.metrics_port or 0)[("cellwatch_edge_published_total", ())] > 0,
            10,
            "published envelopes counted",
        )

        other = await eventually(
            lambda: (
                (m := scrape(b.metrics_port or 0)).get(
                    ("cellwatch_edge_source_readings_total", (("source", f"src-{ids[1]}"),))
                )
                == 1
                and m
            ),
            10,
            "the second agent's reading",
        )
        assert not [k for k in other if dict(k[1]).get("source") == src]
        assert ("cellwatch_edge_detections_total", (("rule", "stuck"),)) not in other

        def reported() -> EdgeStatus | None:
            for topic, payload in probe.messages:
                if topic != status_topics[0]:
                    continue
                [s] = decode(payload).items
                assert isinstance(s, EdgeStatus)
                if s.sources[0].readings == 7:
                    return s
            return None

        status = await eventually(reported, 10, "a status report with all readings")
        port = a.metrics_port
    [s] = status.sources
    assert (s.source, s.state, s.rejected, s.bad_quality) == (src, "connected", 1, 0)
    assert s.lag_s is not None and 0 <= s.lag_s < 10
    assert status.detections == 1
    # The reports that counted the readings show them as a rate over their interval.
    rates = [
        decode(p).items[0].sources[0].rate_per_s for t, p in probe.messages if t == status_topics[0]
    ]
    assert max(rates) > 0
    with pytest.raises(urllib.error.URLError):  # the agent has left: nothing listens any more
        scrape(port or 0)


async def test_a_metrics_port_in_use_stops_the_start_with_the_key_named(
    mosquitto_url: str,
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        agent = EdgeAgent(config(mosquitto_url, "gw-busy", "metrics/busy", metrics_port=port))
        with pytest.raises(
            OSError,
            match=rf"edge.metrics_port: cannot serve /metrics on "
            rf"127.0.0.1:{port}",
        ):
            async with agent:
                pass
    assert agent.sources[0]._closed  # what had started was closed again


async def test_docstring_examples() -> None:
    result = doctest.testmod(metrics)
    assert result.attempted > 0 and result.failed == 0
