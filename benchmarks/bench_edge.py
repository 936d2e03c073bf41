"""Edge agent throughput and latency: values/s from MQTT and OPC UA through framing, detection and
the durable outbox to the broker on one core, beside per-item consumers in the same run.

The agent runs in this process, pinned to core 0 where the machine has more than one; the load
comes from the plant simulator in another process (pinned to the other core), through a
Mosquitto started here and pinned beside the load, so the agent has its core to itself. The
agent's MQTT source subscribes at QoS 1 over MQTT 5 with a receive maximum of 1000 (brokers
default to 20 messages in flight). ``--outbox memory`` swaps the durable SQLite outbox for the
in-memory one, to see what the disk costs. Parts:

* **MQTT, batched**: ``--mqtt-cabinets`` x ``--mqtt-channels`` formation channels at
  ``--mqtt-rate-hz``, four values per sample, one JSON batch per channel per second.
* **OPC UA**: 40 x 64 channels x 4 variables served by the simulator at ``--opcua-rate-hz``,
  subscribed by the agent's OPC UA source: 10,240 scalar nodes, or with ``--opcua-arrays``
  160 array nodes (one per cabinet and variable, element k = channel k).
* **Baselines**, the per-item shapes, each doing for every value what the agent does per tag:
  a paho ``on_message`` that decodes the batch and runs a Python EWMA value by value, and an
  asyncua subscription handler that does the same for each data change.
* **Latency**: with ``--latency-load`` values/s of background load, a probe process (beside the
  load, not in the agent's process) publishes single values (one message each, stamped with
  the send time) and a spike every 0.1 s; the agent runs an EWMA (lam 1, known limits) on the
  probe and the probe process takes the time each detection arrives. The figure is sample to
  published detection, both broker hops included, over ``--latency-seconds`` (60 by default:
  a 99th percentile needs several hundred spikes, not the hundred of a 10 s part).
* **RSS at 10k tags**: the agent alone in a fresh process (models and edge only) collecting
  10,240 tags, its peak resident set size.

Rates are values that reached the monitor per second; the agent's queue rejections and outbox
drops are printed beside them, so a rate is never reported for data that was lost. ``--json``
prints one JSON object on the last line.

    .venv/bin/python benchmarks/bench_edge.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Values each formation sample carries (voltage, current, capacity, temperature).
VALUES_PER_SAMPLE = 4
PARAMS = {"voltage": "v", "current": "i", "capacity": "q", "cell_temperature": "t"}


#: The agent's outbox kind (``--outbox``); sqlite unless asked otherwise.
OUTBOX = ["sqlite"]


def _pin(core: int) -> None:
    """Run this process on one core when the machine has several (the load goes to another).

    The cores are the machine's, not this process's affinity: a load process inherits the
    agent's single core and must still move to the other one.
    """
    cores = sorted(range(os.cpu_count() or 1))
    if len(cores) > 1:
        os.sched_setaffinity(0, {cores[core % len(cores)]})


def _load(
    kind: str,
    url: str | None,
    cabinets: int,
    channels: int,
    rate_hz: float,
    port_out: Any,
    stop: Any,
) -> None:
    """The simulator as a load process: MQTT formation batches or formation over OPC UA."""
    _pin(1)

    async def main() -> None:
        from sim import Simulator

        sim = Simulator(
            opcua_port=0,
            broker_url=url if kind == "mqtt" else None,
            seed=1,
            rate_hz=rate_hz,
            cabinets=cabinets,
            channels=channels,
            fault=None,
            formation_opcua=kind in ("opcua", "opcua-arrays"),
            **({"formation_arrays": True} if kind == "opcua-arrays" else {}),
        )
        async with sim:
            port_out.put(sim.endpoint)
            while not stop.is_set():
                await asyncio.sleep(0.1)

    asyncio.run(main())


class _Load:
    def __init__(
        self, kind: str, url: str | None, cabinets: int, channels: int, rate_hz: float
    ) -> None:
        ctx = mp.get_context("spawn")
        self.stop, out = ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(
            target=_load, args=(kind, url, cabinets, channels, rate_hz, out, self.stop)
        )
        self.proc.start()
        self.endpoint: str = out.get(timeout=180)

    def close(self) -> None:
        self.stop.set()
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()


def _plant(
    url: str,
    outbox: Path,
    *,
    mqtt: bool = False,
    endpoint: str | None = None,
    cabinets: int = 40,
    channels: int = 64,
    window_s: float = 1.0,
    probe: bool = False,
    arrays: bool = False,
) -> Any:
    from models.plant import PlantConfig

    params = [{"id": p, "unit": ""} for p in PARAMS]
    params[-1]["detector"] = {"kind": "ewma", "lam": 0.1, "L": 5.0, "baseline": 100}
    stations = [{"id": "formation", "params": params}]
    sources: dict[str, Any] = {"mqtt": [], "opcua": []}
    if mqtt:
        sources["mqtt"].append(
            {
                "id": "cabinets",
                "topic": "sim/line1/formation/+/+",
                "qos": 1,
                "protocol": "5",
                "receive_maximum": 1000,
                "line": "line1",
                "station": "formation",
                "equipment": "{1}-{2}",
                "payload": {"timestamp": "ts", "values": PARAMS},
            }
        )
    if endpoint is not None:
        names = {
            "voltage": "Voltage",
            "current": "Current",
            "capacity": "Capacity",
            "cell_temperature": "Temperature",
        }
        if arrays:
            # One array node per cabinet and variable, element k = channel k.
            nodes = [
                {
                    "browse_path": f"Line1/Formation/Cab{c:02d}/{names[p]}Array",
                    "elements": f"cab{c:02d}-ch{{k:02}}",
                    "param": p,
                }
                for c in range(1, cabinets + 1)
                for p in PARAMS
            ]
        else:
            nodes = [
                {
                    "browse_path": f"Line1/Formation/Cab{c:02d}/Ch{h:02d}/{names[p]}",
                    "equipment": f"cab{c:02d}-ch{h:02d}",
                    "param": p,
                }
                for c in range(1, cabinets + 1)
                for h in range(1, channels + 1)
                for p in PARAMS
            ]
        sources["opcua"].append(
            {
                "id": "cyclers",
                "endpoint": endpoint,
                "namespace_uri": "urn:cellwatch:sim",
                "line": "line1",
                "station": "formation",
                "publishing_interval_ms": 100,
                "nodes": nodes,
            }
        )
    if probe:
        stations.append(
            {
                "id": "probe",
                "params": [
                    {
                        "id": "value",
                        "detector": {
                            "kind": "ewma",
                            "lam": 1.0,
                            "L": 5.0,
                            "center": 0.0,
                            "sigma": 1.0,
                        },
                    }
                ],
            }
        )
        sources["mqtt"].append(
            {
                "id": "probe",
                "topic": "bench/probe/+",
                "qos": 1,
                "line": "line1",
                "station": "probe",
                "equipment": "{1}",
                "payload": {"timestamp": "ts", "values": {"value": "x"}},
            }
        )
    return PlantConfig.model_validate(
        {
            "site": {"id": "bench"},
            "edge": {
                "id": "bench1",
                "window_s": window_s,
                "status_interval_s": 5.0,
                "outbox": {"kind": OUTBOX[0], "path": str(outbox)},
            },
            "broker": {"url": url},
            "lines": [{"id": "line1", "area": "cells", "stations": stations}],
            "sources": sources,
        }
    )


async def _agent_rate(cfg: Any, seconds: float, warmup: float) -> dict[str, float]:
    """Values/s the agent's monitor took in over ``seconds`` after ``warmup``."""
    from edge.agent import EdgeAgent

    async with EdgeAgent(cfg) as agent:
        await asyncio.sleep(warmup)
        c0, t0 = agent.counters(), time.perf_counter()
        cpu0 = time.process_time()
        await asyncio.sleep(seconds)
        c1, t1 = agent.counters(), time.perf_counter()
        cpu1 = time.process_time()
    taken = sum(c1["readings"].values()) - sum(c0["readings"].values())
    return {
        "values_per_s": taken / (t1 - t0),
        "cpu": (cpu1 - cpu0) / (t1 - t0),
        "rejected": c1["rejected"] - c0["rejected"],
        "dropped": c1["dropped"],
        "pending": c1["pending"],
        "detections": c1["detections"],
    }


class _Ewma:
    """The per-item baseline's detector: one value at a time, in Python."""

    __slots__ = ("z", "n")

    def __init__(self) -> None:
        self.z, self.n = 0.0, 0

    def update(self, x: float, lam: float = 0.1) -> bool:
        self.n += 1
        self.z = x if self.n == 1 else lam * x + (1 - lam) * self.z
        return abs(self.z - 25.0) > 5 * 0.3 * 0.23


def _mqtt_baseline(url: str, seconds: float, warmup: float) -> float:
    """Values/s of a paho on_message that handles each value of each batch on its own."""
    import paho.mqtt.client as mqtt

    host, port = url.removeprefix("mqtt://").split(":")
    charts: dict[tuple[str, str], _Ewma] = {}
    counted = [0]

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        body = json.loads(msg.payload)
        for param, key in PARAMS.items():
            for x in body[key]:
                chart = charts.get((msg.topic, param))
                if chart is None:
                    chart = charts[(msg.topic, param)] = _Ewma()
                chart.update(x)
                counted[0] += 1

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *_: c.subscribe("sim/line1/formation/+/+", qos=1)
    client.on_message = on_message
    client.connect(host, int(port))
    client.loop_start()
    time.sleep(warmup)  # the measured span itself; nothing to synchronise on
    n0, t0 = counted[0], time.perf_counter()
    time.sleep(seconds)
    n1, t1 = counted[0], time.perf_counter()
    client.loop_stop()
    client.disconnect()
    return (n1 - n0) / (t1 - t0)


async def _opcua_baseline(
    endpoint: str,
    cabinets: int,
    channels: int,
    seconds: float,
    warmup: float,
    arrays: bool = False,
) -> float:
    """Values/s of an asyncua handler that handles each data change on its own (for array
    nodes: each element of it, one at a time)."""
    from asyncua import Client, ua

    charts: dict[Any, _Ewma] = {}
    counted = [0]

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            for k, x in enumerate(val if isinstance(val, list) else [val]):
                chart = charts.get((node, k))
                if chart is None:
                    chart = charts[(node, k)] = _Ewma()
                chart.update(float(x))
                counted[0] += 1

    async with Client(endpoint, timeout=60) as client:
        ns = await client.get_namespace_index("urn:cellwatch:sim")
        names = ("Voltage", "Current", "Capacity", "Temperature")
        nodes = (
            [
                client.get_node(ua.NodeId(f"Line1.Formation.Cab{c:02d}.{n}Array", ns))
                for c in range(1, cabinets + 1)
                for n in names
            ]
            if arrays
            else [
                client.get_node(ua.NodeId(f"Line1.Formation.Cab{c:02d}.Ch{h:02d}.{n}", ns))
                for c in range(1, cabinets + 1)
                for h in range(1, channels + 1)
                for n in names
            ]
        )
        sub = await client.create_subscription(100, Handler())
        for k in range(0, len(nodes), 1000):
            await sub.subscribe_data_change(nodes[k : k + 1000], queuesize=10)
        await asyncio.sleep(warmup)
        n0, t0 = counted[0], time.perf_counter()
        await asyncio.sleep(seconds)
        n1, t1 = counted[0], time.perf_counter()
    return (n1 - n0) / (t1 - t0)


def _probe(url: str, seconds: float, ready: Any, go: Any, out: Any) -> None:
    """The latency probe as its own process beside the load: it publishes single values with
    their send time, a 50 sigma spike every 0.1 s, and timestamps each detection as it
    arrives. Outside the agent's process it takes no interpreter time from the agent."""
    import paho.mqtt.client as mqtt

    _pin(1)
    host, port = url.removeprefix("mqtt://").split(":")
    arrivals: list[tuple[float, float]] = []

    def on_detection(client: Any, userdata: Any, msg: Any) -> None:
        now = time.time()
        body = json.loads(msg.payload)
        for item in body.get("items", []):
            if item["key"][2] == "p1":
                arrivals.append((now, float(item["ts"])))

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, *_: c.subscribe("cellwatch/v1/bench/+/line1/probe/detection", 1)
    sub.on_message = on_detection
    sub.connect(host, int(port))
    sub.loop_start()
    probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    probe.connect(host, int(port))
    probe.loop_start()
    ready.set()
    go.wait()
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end:
        k += 1
        x = 50.0 if k % 10 == 0 else 0.0
        probe.publish("bench/probe/p1", json.dumps({"ts": time.time(), "x": x}), qos=1)
        time.sleep(0.01)  # the probe's sampling period
    time.sleep(2.0)  # detections still on their way
    probe.loop_stop()
    sub.loop_stop()
    out.put((k, [a - t for a, t in arrivals]))


async def _latency(url: str, tmp: Path, seconds: float, load_rate: float) -> dict[str, float]:
    """Sample-to-published-detection delay of probe spikes under background load."""
    from edge.agent import EdgeAgent

    channels = 32
    cabinets = max(1, round(load_rate / (channels * VALUES_PER_SAMPLE * 4.0)))
    load = _Load("mqtt", url, cabinets, channels, 4.0)
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_probe, args=(url, seconds, ready, go, out))
    proc.start()
    cfg = _plant(url, tmp / "latency.sqlite", mqtt=True, window_s=0.005, probe=True)
    try:
        await asyncio.to_thread(ready.wait, 60)
        async with EdgeAgent(cfg):
            await asyncio.sleep(3.0)
            go.set()
            k, delays_s = await asyncio.to_thread(out.get, True, seconds + 60)
    finally:
        load.close()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    delays = np.array(delays_s) * 1e3
    p50, p99 = np.percentile(delays, [50, 99]) if delays.size else (np.nan, np.nan)
    return {
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "spikes": k // 10,
        "detections": int(delays.size),
        "load_values_per_s": cabinets * channels * 16.0,
    }


def _rss_child(url: str, outbox: str, endpoint: str, out: Any) -> None:
    """Run the agent alone on 10,240 OPC UA tags and report its peak RSS in MB."""
    import resource

    async def main() -> None:
        from edge.agent import EdgeAgent

        cfg = _plant(url, Path(outbox), endpoint=endpoint)
        async with EdgeAgent(cfg):
            await asyncio.sleep(15.0)

    asyncio.run(main())
    blocked = [m for m in ("sklearn", "fastapi", "uvicorn", "sim", "server") if m in sys.modules]
    out.put((_peak_rss_mb(resource), blocked))


def _peak_rss_mb(resource: Any) -> float:
    """This process's peak resident set size in MB. Linux's VmHWM: ``ru_maxrss`` survives
    ``exec``, so a child started from a large benchmark process would report the parent's."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def _rss_10k(url: str, tmp: Path) -> tuple[float, list[str]]:
    load = _Load("opcua", None, 40, 64, 1.0)
    try:
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        proc = ctx.Process(
            target=_rss_child, args=(url, str(tmp / "rss.sqlite"), load.endpoint, out)
        )
        proc.start()
        rss, loaded = out.get(timeout=300)
        proc.join(30)
        return rss, loaded
    finally:
        load.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=15.0, help="measured seconds per part")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--parts", default="mqtt,opcua,latency,rss", help="which parts to run")
    p.add_argument("--mqtt-cabinets", type=int, default=99)
    p.add_argument("--mqtt-channels", type=int, default=64)
    p.add_argument("--mqtt-rate-hz", type=float, default=8.0)
    p.add_argument("--opcua-rate-hz", type=float, default=5.0)
    p.add_argument(
        "--opcua-arrays",
        action="store_true",
        help="formation as 160 array nodes of 64 channels instead of 10,240 scalar nodes",
    )
    p.add_argument(
        "--latency-seconds",
        type=float,
        default=60.0,
        help="measured seconds of the latency part: 10 spikes a second, so the default's "
        "~590 put about six beyond the 99th percentile (default %(default)s)",
    )
    p.add_argument(
        "--latency-load",
        type=float,
        default=50_000.0,
        help="background values/s during the latency part",
    )
    p.add_argument(
        "--outbox",
        choices=("sqlite", "memory"),
        default="sqlite",
        help="the agent's outbox (default %(default)s, the durable one)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = p.parse_args(argv)
    OUTBOX[0] = args.outbox
    parts = set(args.parts.split(","))

    from tests.servers import mosquitto

    _pin(0)
    figures: dict[str, Any] = {"cpus": os.cpu_count(), "agent_cores": 1}
    keys = (
        "mqtt_values_per_s",
        "opcua_values_per_s",
        "baseline_mqtt_values_per_s",
        "baseline_opcua_values_per_s",
        "p50_ms",
        "p99_ms",
        "rss_mb_10k_tags",
    )
    figures.update(dict.fromkeys(keys))
    with tempfile.TemporaryDirectory() as tmpdir, mosquitto(Path(tmpdir)) as (url, broker):
        # The broker is infrastructure, not the agent: it runs beside the load (the core the
        # simulator gets), so the agent has its core to itself.
        cores = sorted(range(os.cpu_count() or 1))
        if len(cores) > 1:
            os.sched_setaffinity(broker.pid, {cores[1]})
        figures["broker_cores"] = sorted(os.sched_getaffinity(broker.pid))
        tmp = Path(tmpdir)
        if "mqtt" in parts:
            offered = (
                args.mqtt_cabinets * args.mqtt_channels * args.mqtt_rate_hz * VALUES_PER_SAMPLE
            )
            load = _Load("mqtt", url, args.mqtt_cabinets, args.mqtt_channels, args.mqtt_rate_hz)
            try:
                mq = asyncio.run(
                    _agent_rate(
                        _plant(url, tmp / "mqtt.sqlite", mqtt=True), args.seconds, args.warmup
                    )
                )
                base_mq = _mqtt_baseline(url, args.seconds, 2.0)
            finally:
                load.close()
            print(
                f"MQTT batched: agent {mq['values_per_s']:,.0f} values/s of {offered:,.0f} "
                f"offered (cpu {mq['cpu']:.2f} cores, rejected {mq['rejected']}, outbox pending "
                f"{mq['pending']}, dropped {mq['dropped']}); per-item on_message "
                f"{base_mq:,.0f} values/s (agent/baseline {mq['values_per_s'] / base_mq:.2f}x)",
                flush=True,
            )
            figures.update(
                mqtt_values_per_s=round(mq["values_per_s"]),
                mqtt_offered_values_per_s=round(offered),
                mqtt_rejected=mq["rejected"],
                baseline_mqtt_values_per_s=round(base_mq),
                mqtt_vs_baseline=round(mq["values_per_s"] / base_mq, 3),
            )
        if "opcua" in parts:
            arrays = args.opcua_arrays
            load = _Load("opcua-arrays" if arrays else "opcua", None, 40, 64, args.opcua_rate_hz)
            try:
                op = asyncio.run(
                    _agent_rate(
                        _plant(url, tmp / "opcua.sqlite", endpoint=load.endpoint, arrays=arrays),
                        args.seconds,
                        args.warmup + 10.0,
                    )
                )
                try:
                    base_op = asyncio.run(
                        _opcua_baseline(load.endpoint, 40, 64, args.seconds, 5.0, arrays)
                    )
                except (ConnectionError, TimeoutError, OSError) as e:
                    # The per-item client could not even subscribe under this load: say so.
                    print(f"OPC UA baseline failed: {type(e).__name__}: {e}", flush=True)
                    base_op = float("nan")
            finally:
                load.close()
            print(
                f"OPC UA{' array nodes' if arrays else ''}: agent {op['values_per_s']:,.0f} "
                "values/s of "
                f"{40 * 64 * 4 * args.opcua_rate_hz:,.0f} offered (cpu {op['cpu']:.2f}, "
                f"rejected {op['rejected']}); per-item handler {base_op:,.0f} values/s "
                f"(agent/baseline {op['values_per_s'] / base_op:.2f}x)",
                flush=True,
            )
            figures.update(
                opcua_nodes="arrays (40 x 4 nodes of 64 channels)" if arrays else "scalars",
                opcua_values_per_s=round(op["values_per_s"]),
                opcua_rejected=op["rejected"],
                baseline_opcua_values_per_s=None if base_op != base_op else round(base_op),
                opcua_vs_baseline=None
                if base_op != base_op
                else round(op["values_per_s"] / base_op, 3),
            )
        if "latency" in parts:
            lat = asyncio.run(_latency(url, tmp, args.latency_seconds, args.latency_load))
            print(
                f"latency at {lat['load_values_per_s']:,.0f} values/s: p50 {lat['p50_ms']:.1f} "
                f"ms, p99 {lat['p99_ms']:.1f} ms ({lat['detections']} of {lat['spikes']} "
                "spikes detected)",
                flush=True,
            )
            figures.update(
                p50_ms=round(lat["p50_ms"], 2),
                p99_ms=round(lat["p99_ms"], 2),
                latency_load_values_per_s=round(lat["load_values_per_s"]),
                latency_spikes=lat["spikes"],
                latency_detected=lat["detections"],
            )
        if "rss" in parts:
            rss, loaded = _rss_10k(url, tmp)
            print(f"RSS at 10,240 tags: {rss:.0f} MB (server-side modules: {loaded or 'none'})")
            figures.update(rss_mb_10k_tags=round(rss, 1))
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
