"""``cellwatch demo``: a live battery line with a real drift alert, in one process.

Starts, in order, an MQTT broker (embedded amqtt unless ``--broker`` names one), the plant
simulator (OPC UA coating line, MQTT formation cabinets, one scripted drift), the central server
(alerts, API, dashboard) and the edge agent, all wired through the example plant file with the
ports rewritten to the ones actually used. Everything runs on one asyncio loop so that Ctrl-C
stops every part in order, within seconds, without a traceback. New alerts are printed as they
open; ``--summary`` writes what happened as JSON for scripts and tests.
"""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cellwatch.broker import EmbeddedBroker, PortInUseError, check_port_free
from cellwatch.errors import CliError
from edge.agent import EdgeAgent
from models.plant import PlantConfig
from server.app import CentralServer
from sim import Simulator
from sim.scenario import Scenario

__all__ = ["DemoOptions", "run_demo"]


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What the command line can change about the demo."""

    broker_url: str | None = None
    influxdb_url: str | None = None
    http_port: int | None = None
    opcua_port: int = 4840
    mqtt_port: int = 1883
    duration_s: float | None = None
    summary_path: Path | None = None
    seed: int | None = None
    fault_at_s: float | None = None
    db_path: str | None = None


def _reachable(url: str) -> None:
    """Fail with one line unless ``url`` is an mqtt:// URL whose broker accepts connections."""
    parts = urlsplit(url)
    try:
        port = parts.port or 1883
    except ValueError:
        port = -1
    if parts.scheme != "mqtt" or not parts.hostname or port < 0:
        raise CliError(f"--broker must be a URL like mqtt://HOST:PORT, got {url!r}")
    host = parts.hostname
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as e:
        raise PortInUseError(
            f"cannot reach the MQTT broker at {host}:{port}: {e.strerror or e}"
        ) from None


def _with_port(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{host}:{port}", parts.path, parts.query, parts.fragment))


def _wire(
    cfg: PlantConfig, broker: str, opcua_endpoint: str, http_port: int, db: str, influx: str | None
) -> PlantConfig:
    """The example plant rewired to the broker, simulator and ports this demo really uses."""
    sim = urlsplit(opcua_endpoint)
    sources = cfg.sources.model_copy(
        update={
            "opcua": [
                s.model_copy(
                    update={
                        "endpoint": _with_port(
                            s.endpoint, sim.hostname or "127.0.0.1", sim.port or 4840
                        )
                    }
                )
                for s in cfg.sources.opcua
            ]
        }
    )
    influxdb = cfg.influxdb.model_copy(update={"url": influx}) if influx else cfg.influxdb
    return cfg.model_copy(
        update={
            "broker": cfg.broker.model_copy(update={"url": broker}),
            "server": cfg.server.model_copy(update={"port": http_port, "db_path": db}),
            "sources": sources,
            "influxdb": influxdb,
        }
    )


def _warn_if_fault_in_baseline(cfg: PlantConfig, fault_at_s: float, rate_hz: float) -> None:
    """Say so when the scripted drift would fall inside Phase I and be learned as normal."""
    longest = max(
        (
            p.detector.baseline
            for ln in cfg.lines
            for st in ln.stations
            for p in st.params
            if p.detector is not None and p.detector.center is None
        ),
        default=0,
    )
    phase1_s = longest / rate_hz
    if fault_at_s < phase1_s + 2.0:
        print(
            f"  note: the fault at +{fault_at_s:.0f} s starts before the {longest}-sample "
            f"baselines end (about +{phase1_s + 2.0:.0f} s); it may be learned as normal",
            flush=True,
        )


def _alert_line(alert: dict[str, Any], t0: float) -> str:
    first = float(alert.get("first_ts") or time.time())
    return (
        f"ALERT {alert.get('tag')} rule={alert.get('rule')} "
        f"+{first - t0:.1f} s after start: {alert.get('message', '')}"
    )


async def run_demo(
    cfg: PlantConfig, scenario: Scenario, opts: DemoOptions, stop: asyncio.Event
) -> int:
    """Run the whole demo until ``stop`` is set or the duration ends; returns the exit code."""
    host = "127.0.0.1"
    http_port = cfg.server.port if opts.http_port is None else opts.http_port
    # Fail fast, with one line, on ports that are taken, before anything starts.
    if http_port:
        check_port_free(cfg.server.host, http_port, "dashboard")
    if opts.opcua_port:
        check_port_free(host, opts.opcua_port, "simulator's OPC UA server")
    if opts.broker_url:
        _reachable(opts.broker_url)
    t0 = time.time()
    tmp = tempfile.TemporaryDirectory(prefix="cellwatch-demo-")
    db = opts.db_path or str(Path(tmp.name) / "cellwatch.sqlite")
    summary: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        stack.callback(tmp.cleanup)
        if opts.broker_url:
            broker_url = opts.broker_url
        else:
            broker = await stack.enter_async_context(EmbeddedBroker(host, opts.mqtt_port))
            broker_url = broker.url
        faults = scenario.faults
        if opts.fault_at_s is not None:
            faults = tuple(replace(f, start_s=opts.fault_at_s) for f in faults)
        sim = await stack.enter_async_context(
            Simulator(
                opcua_host=host,
                opcua_port=opts.opcua_port,
                broker_url=broker_url,
                seed=scenario.seed if opts.seed is None else opts.seed,
                rate_hz=scenario.rate_hz,
                lanes=scenario.lanes,
                cabinets=scenario.cabinets,
                channels=scenario.channels,
                faults=faults,
                speed=scenario.speed,
            )
        )
        plant = _wire(cfg, broker_url, sim.endpoint, http_port, db, opts.influxdb_url)
        server = await stack.enter_async_context(CentralServer(plant))
        agent = await stack.enter_async_context(EdgeAgent(plant))
        print(f"cellwatch demo: dashboard {server.url}/  (API {server.url}/api/alerts)", flush=True)
        print(f"  simulator OPC UA {sim.endpoint}, MQTT broker {broker_url}", flush=True)
        print(f"  scenario {scenario.name}: {scenario.description} Ctrl-C stops", flush=True)
        if faults:
            _warn_if_fault_in_baseline(plant, min(f.start_s for f in faults), scenario.rate_hz)
        deadline = None if opts.duration_s is None else t0 + opts.duration_s
        shown: set[Any] = set()
        next_progress = t0 + 10.0
        while not stop.is_set():
            timeout = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.time()))
            try:
                await asyncio.wait_for(stop.wait(), timeout)
            except TimeoutError:
                pass
            for alert in server.counters().get("alerts", []):
                key = (alert.get("tag"), alert.get("rule"), alert.get("first_ts"))
                if key not in shown:
                    shown.add(key)
                    print(_alert_line(alert, t0), flush=True)
            if time.time() >= next_progress:
                next_progress += 10.0
                print(_progress_line(t0, agent, server), flush=True)
            if deadline is not None and time.time() >= deadline:
                break
        print("cellwatch demo: stopping", flush=True)
        summary = _summary(t0, sim, agent, server, broker_url)
    if opts.summary_path is not None:
        opts.summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        print(f"cellwatch demo: summary written to {opts.summary_path}", flush=True)
    return 0


def _progress_line(t0: float, agent: EdgeAgent, server: CentralServer) -> str:
    edge = agent.counters()
    per_source = ", ".join(f"{k} {v}" for k, v in edge.get("readings", {}).items())
    open_alerts = sum(1 for a in server.counters().get("alerts", []) if a.get("status") == "open")
    return (
        f"  +{time.time() - t0:.0f} s: readings {per_source}; "
        f"detections {edge.get('detections', 0)}; open alerts {open_alerts}"
    )


def _summary(
    t0: float, sim: Simulator, agent: EdgeAgent, server: CentralServer, broker_url: str
) -> dict[str, Any]:
    edge = agent.counters()
    central = server.counters()
    alerts = [
        {
            "tag": a.get("tag"),
            "rule": a.get("rule"),
            "first_ts": a.get("first_ts"),
            "first_s_after_start": (float(a["first_ts"]) - t0) if a.get("first_ts") else None,
        }
        for a in central.get("alerts", [])
    ]
    return {
        "started_ts": t0,
        "duration_s": time.time() - t0,
        "dashboard": server.url,
        "broker": broker_url,
        "opcua_endpoint": sim.endpoint,
        "fault": list(sim.truth),
        "readings_per_source": edge.get("readings", {}),
        "edge": {k: v for k, v in edge.items() if k != "sources"},
        "sources": {k: asdict(v) for k, v in edge.get("sources", {}).items()},
        "detections": central.get("detections"),
        "alerts": alerts,
        "points_written": central.get("points_written", 0),
        "server": {k: v for k, v in central.items() if k != "alerts"},
        "errors": {
            "edge_rejected": edge.get("rejected"),
            "server_rejected": central.get("rejected"),
            "influx_write_errors": central.get("write_errors", 0),
        },
    }
