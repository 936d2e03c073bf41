"""Load the plant simulator can serve: OPC UA nodes at 1 Hz and formation values/s over MQTT.

The edge benchmarks need a load source, so this measures what one simulator process delivers
to a consumer in another process, not what it merely attempts:

* **OPC UA**: the simulator serves formation channels over OPC UA too (``--opcua-cabinets`` x
  ``--opcua-channels`` x 4 variables, 10,240 by default) at 1 Hz; a client process subscribes
  to every variable and counts data-change notifications per second. The baseline is the
  usual way of updating a variable in asyncua, ``await node.write_value(v)`` one node at a time,
  timed over the same nodes in the same run.
* **MQTT**: the simulator publishes batched per-channel JSON (``--mqtt-cabinets`` x
  ``--mqtt-channels`` channels at ``--mqtt-rate-hz``, four values per sample) to a Mosquitto
  started here; a subscriber process counts the values it receives per second and the delay
  from sample time to arrival (which includes the one-second batching). The baseline publishes
  one value per message, the naive shape, through the same broker to the same subscriber.

Both run on the machine's cores as they are (the simulator and the consumer in separate
processes). ``--json`` prints one JSON object on the last line.

    .venv/bin/python benchmarks/bench_sim.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Values each formation sample carries (voltage, current, capacity, temperature).
VALUES_PER_SAMPLE = 4


def _mqtt_consumer(host: str, port: int, topic: str, ready: Any, stop: Any, out: Any) -> None:
    """Subscribe to ``topic`` and report (arrival time, values, sample-to-arrival delays)."""
    import paho.mqtt.client as mqtt

    arrivals: list[tuple[float, int]] = []
    delays: list[float] = []

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        now = time.time()
        body = json.loads(msg.payload)
        if "ts" in body and isinstance(body["ts"], list):
            stamps = body["ts"]
            arrivals.append((now, len(stamps) * VALUES_PER_SAMPLE))
            delays.extend(now - t for t in stamps)
        else:
            arrivals.append((now, 1))
            delays.append(now - body["ts"])

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda *_: ready.set()
    client.on_message = on_message
    client.connect(host, port)
    client.loop_start()
    stop.wait()
    client.loop_stop()
    client.disconnect()
    out.put((arrivals, delays))


def _rate(arrivals: list[tuple[float, int]], t0: float, t1: float) -> float:
    """Values per second that arrived in [t0, t1)."""
    return sum(n for t, n in arrivals if t0 <= t < t1) / (t1 - t0)


def _percentiles(delays: list[float]) -> tuple[float, float]:
    if not delays:
        return float("nan"), float("nan")
    p50, p99 = np.percentile(np.asarray(delays), [50, 99])
    return float(p50) * 1e3, float(p99) * 1e3


def _opcua_consumer(endpoint: str, node_ids: list[str], ready: Any, stop: Any, out: Any) -> None:
    """Subscribe to every node id and report (arrival time, 1) per notification and delays."""
    asyncio.run(_opcua_consume(endpoint, node_ids, ready, stop, out))


async def _opcua_consume(
    endpoint: str, node_ids: list[str], ready: Any, stop: Any, out: Any
) -> None:
    from asyncua import Client, ua

    from sim.opcua_server import NAMESPACE_URI

    arrivals: list[tuple[float, int]] = []
    delays: list[float] = []
    cycles: dict[Any, int] = {}

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            now = time.time()
            arrivals.append((now, 1))
            stamp = data.monitored_item.Value.SourceTimestamp
            if stamp is not None:
                delays.append(now - stamp.timestamp())
                cycles[stamp] = cycles.get(stamp, 0) + 1

    async with Client(endpoint, timeout=60) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        nodes = [client.get_node(ua.NodeId(i, ns)) for i in node_ids]
        sub = await client.create_subscription(250, Handler())
        # Trigger StatusValueTimestamp: every write is reported, also when a value repeats
        # (a capacity reading of 0 during rest), so a complete cycle has one per node.
        every_write = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValueTimestamp)
        requests = [
            ua.MonitoredItemCreateRequest(
                ItemToMonitor=ua.ReadValueId(NodeId=node.nodeid, AttributeId=ua.AttributeIds.Value),
                MonitoringMode=ua.MonitoringMode.Reporting,
                RequestedParameters=ua.MonitoringParameters(
                    ClientHandle=handle,
                    SamplingInterval=0.0,
                    Filter=every_write,
                    QueueSize=4,
                    DiscardOldest=True,
                ),
            )
            for handle, node in enumerate(nodes, start=1)
        ]
        for k in range(0, len(requests), 1000):  # within common OperationLimits
            for result in await sub.create_monitored_items(requests[k : k + 1000]):
                if isinstance(result, ua.StatusCode):
                    result.check()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.2)
    # Cycles (source timestamps) seen, and how many of them reached every node.
    full = sum(1 for n in cycles.values() if n == len(node_ids))
    out.put((arrivals, delays, (len(cycles), full)))


def _formation_node_ids(cabinets: int, channels: int) -> list[str]:
    return [
        f"Line1.Formation.Cab{cab:02d}.Ch{ch:02d}.{name}"
        for cab in range(1, cabinets + 1)
        for ch in range(1, channels + 1)
        for name in ("Voltage", "Current", "Capacity", "Temperature")
    ]


async def _opcua_sim(
    cabinets: int, channels: int, seconds: float, warmup: float
) -> dict[str, float]:
    """Notifications/s a subscribed client receives from the simulator at 1 Hz."""
    from sim import Simulator

    sim = Simulator(
        opcua_port=0,
        broker_url=None,
        seed=1,
        rate_hz=1.0,
        cabinets=cabinets,
        channels=channels,
        fault=None,
        formation_opcua=True,
    )
    async with sim:
        consumer = await asyncio.to_thread(
            _Consumer, _opcua_consumer, sim.endpoint, _formation_node_ids(cabinets, channels)
        )
        t0 = time.time() + warmup
        await asyncio.sleep(warmup + seconds)
        t1 = time.time()
        arrivals, delays, (cycles, full) = await asyncio.to_thread(consumer.result)
        counters = sim.samples_published
    p50, p99 = _percentiles(delays)
    return {
        "notifications_per_s": _rate(arrivals, t0, t1),
        "cycles": cycles,
        "complete_cycles": full,
        "nodes": cabinets * channels * VALUES_PER_SAMPLE,
        "p50_ms": p50,
        "p99_ms": p99,
        "errors": counters["errors"],
    }


async def _opcua_write_rates(cabinets: int, channels: int, passes: int = 5) -> tuple[float, float]:
    """Node updates/s of the simulator's write path and of ``node.write_value`` per node."""
    from asyncua import ua

    from sim.formation import FormationModel
    from sim.opcua_server import CoaterServer

    server = CoaterServer(port=0, formation=(cabinets, channels))
    await server.start()
    try:
        model = FormationModel(seed=1, cabinets=cabinets, channels=channels, start_ts=time.time())
        n = cabinets * channels * VALUES_PER_SAMPLE
        best = float("inf")
        for k in range(passes):
            sample = model.sample(time.time() + k)
            t = time.perf_counter()
            await server.write_formation(sample)
            best = min(best, time.perf_counter() - t)
        fast = n / best
        assert server._server is not None
        ns = server._ns
        nodes = [
            server._server.get_node(ua.NodeId(i, ns))
            for i in _formation_node_ids(cabinets, channels)
        ]
        best = float("inf")
        for k in range(passes):
            values = np.random.default_rng(k).normal(3.7, 0.01, n).tolist()
            t = time.perf_counter()
            for node, value in zip(nodes, values, strict=True):
                await node.write_value(value)
            best = min(best, time.perf_counter() - t)
        return fast, n / best
    finally:
        await server.stop()


class _Consumer:
    """A consumer process for one measurement; ``result()`` stops it and returns its data."""

    def __init__(self, target: Any, *args: Any) -> None:
        ctx = mp.get_context("spawn")
        self.ready, self.stop, self.out = ctx.Event(), ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=target, args=(*args, self.ready, self.stop, self.out))
        self.proc.start()
        if not self.ready.wait(120):
            self.proc.kill()
            raise RuntimeError("the consumer process did not get ready")

    def result(self) -> Any:
        self.stop.set()
        data = self.out.get(timeout=120)
        self.proc.join(30)
        return data


async def _mqtt_sim(
    url: str, cabinets: int, channels: int, rate_hz: float, seconds: float, warmup: float
) -> dict[str, float]:
    from sim import Simulator

    host, port = url.removeprefix("mqtt://").split(":")
    consumer = _Consumer(_mqtt_consumer, host, int(port), "sim/line1/formation/+/+")
    async with Simulator(
        opcua_port=0,
        broker_url=url,
        seed=1,
        rate_hz=rate_hz,
        cabinets=cabinets,
        channels=channels,
        fault=None,
    ) as sim:
        t0 = time.time() + warmup
        await asyncio.sleep(warmup + seconds)
        t1 = time.time()
        counters = sim.samples_published
    arrivals, delays = await asyncio.to_thread(consumer.result)
    p50, p99 = _percentiles([d for d in delays])
    return {
        "values_per_s": _rate(arrivals, t0, t1),
        "offered_values_per_s": cabinets * channels * rate_hz * VALUES_PER_SAMPLE,
        "p50_ms": p50,
        "p99_ms": p99,
        "dropped": counters["mqtt_dropped"],
        "errors": counters["errors"],
    }


def _mqtt_baseline(url: str, seconds: float) -> float:
    """Values/s delivered when each value is its own QoS 1 message (one publisher thread)."""
    import paho.mqtt.client as mqtt

    host, port = url.removeprefix("mqtt://").split(":")
    consumer = _Consumer(_mqtt_consumer, host, int(port), "bench/naive/#")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(1000)
    client.connect(host, int(port))
    client.loop_start()
    rng = np.random.default_rng(0)
    t0 = time.time()
    sent = 0
    while time.time() - t0 < seconds:
        # A window of 1000 messages in flight, then wait for its last acknowledgement: as fast
        # as one client goes without letting paho's queue grow without bound.
        info = None
        for value in rng.normal(25.0, 0.3, 1000).tolist():
            body = json.dumps({"ts": time.time(), "t": value})
            info = client.publish(f"bench/naive/ch{sent % 64:02d}", body, qos=1)
            sent += 1
        assert info is not None
        info.wait_for_publish(timeout=30)
    t1 = time.time()
    client.loop_stop()
    client.disconnect()
    arrivals, _ = consumer.result()
    return _rate(arrivals, t0, t1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per part")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    p.add_argument("--opcua-cabinets", type=int, default=40)
    p.add_argument("--opcua-channels", type=int, default=64)
    p.add_argument("--mqtt-cabinets", type=int, default=99)
    p.add_argument("--mqtt-channels", type=int, default=64)
    p.add_argument("--mqtt-rate-hz", type=float, default=4.0)
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = p.parse_args(argv)

    from tests.servers import mosquitto

    figures: dict[str, Any] = {"cpus": os.cpu_count()}
    op = asyncio.run(
        _opcua_sim(args.opcua_cabinets, args.opcua_channels, args.seconds, args.warmup)
    )
    write_fast, write_naive = asyncio.run(
        _opcua_write_rates(args.opcua_cabinets, args.opcua_channels)
    )
    figures.update(
        opcua_nodes=op["nodes"],
        opcua_notifications_per_s=round(op["notifications_per_s"]),
        opcua_cycles=op["cycles"],
        opcua_complete_cycles=op["complete_cycles"],
        opcua_p50_ms=round(op["p50_ms"], 1),
        opcua_p99_ms=round(op["p99_ms"], 1),
        opcua_errors=op["errors"],
        opcua_write_nodes_per_s=round(write_fast),
        baseline_opcua_write_nodes_per_s=round(write_naive),
        opcua_write_ratio=round(write_fast / write_naive, 1),
    )
    print(
        f"OPC UA: {figures['opcua_nodes']:,} nodes at 1 Hz -> "
        f"{figures['opcua_notifications_per_s']:,} notifications/s at the client, "
        f"{figures['opcua_complete_cycles']} of {figures['opcua_cycles']} cycles complete "
        f"(source->arrival p50 {figures['opcua_p50_ms']} ms, p99 {figures['opcua_p99_ms']} ms); "
        f"write path {figures['opcua_write_nodes_per_s']:,} nodes/s vs node.write_value "
        f"{figures['baseline_opcua_write_nodes_per_s']:,} ({figures['opcua_write_ratio']}x)"
    )
    with tempfile.TemporaryDirectory() as tmp, mosquitto(Path(tmp)) as (url, _proc):
        mq = asyncio.run(
            _mqtt_sim(
                url,
                args.mqtt_cabinets,
                args.mqtt_channels,
                args.mqtt_rate_hz,
                args.seconds,
                args.warmup,
            )
        )
        base = _mqtt_baseline(url, min(args.seconds, 10.0))
    figures.update(
        mqtt_values_per_s=round(mq["values_per_s"]),
        mqtt_offered_values_per_s=round(mq["offered_values_per_s"]),
        mqtt_p50_ms=round(mq["p50_ms"], 1),
        mqtt_p99_ms=round(mq["p99_ms"], 1),
        mqtt_dropped=mq["dropped"],
        baseline_mqtt_values_per_s=round(base),
        mqtt_ratio=round(mq["values_per_s"] / base, 1) if base else None,
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    )
    print(
        f"MQTT: {figures['mqtt_values_per_s']:,} values/s delivered "
        f"(offered {figures['mqtt_offered_values_per_s']:,}; "
        f"sample->arrival p50 {figures['mqtt_p50_ms']} ms, p99 {figures['mqtt_p99_ms']} ms; "
        f"dropped {figures['mqtt_dropped']}); one value per message: "
        f"{figures['baseline_mqtt_values_per_s']:,} values/s ({figures['mqtt_ratio']}x)"
    )
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
