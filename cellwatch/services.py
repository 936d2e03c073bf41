"""Long-running services started on their own: ``cellwatch sim``, ``edge`` and ``server``.

Each runs until SIGINT or SIGTERM and then shuts down in order, so a systemd unit can stop a
gateway or the central server without losing what is in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path
from typing import Any

from cellwatch.errors import CliError
from models.plant import PlantConfig

__all__ = ["run_edge", "run_server", "run_sim"]


async def run_sim(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Serve the simulated plant until stopped; prints the OPC UA endpoint and broker.

    With ``--scenario`` the file sets the seed, rate, plant size, faults and optional duration
    (``--seed``, ``--rate-hz`` and ``--speed`` override it); a bad file raises ``ConfigError``
    with every problem. Without it the demo's single lane 3 drift runs (``--fault-at``,
    ``--no-fault``).
    """
    from sim import FaultSpec, Simulator
    from sim.scenario import parse_scenario

    broker = None if args.broker in ("", "none") else args.broker
    scenario = None
    if args.scenario:
        path = Path(args.scenario)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise CliError(f"cannot read scenario {path}: {e.strerror or e}") from None
        scenario = parse_scenario(text, str(path))
    # Keyword arguments of Simulator, of several types.
    options: dict[str, Any]
    if scenario is not None:
        options = {
            "seed": scenario.seed if args.seed is None else args.seed,
            "rate_hz": scenario.rate_hz if args.rate_hz is None else args.rate_hz,
            "speed": scenario.speed if args.speed is None else args.speed,
            "lanes": scenario.lanes,
            "cabinets": scenario.cabinets,
            "channels": scenario.channels,
            "fault": None,
            "faults": scenario.faults,
        }
        duration = scenario.duration_s
    else:
        fault_at = 40.0 if args.fault_at is None else args.fault_at
        options = {
            "seed": 1 if args.seed is None else args.seed,
            "rate_hz": 2.0 if args.rate_hz is None else args.rate_hz,
            "speed": 1.0 if args.speed is None else args.speed,
            "fault": None if args.no_fault else FaultSpec(start_s=fault_at),
        }
        duration = None
    for name in ("lanes", "cabinets", "channels"):
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    async with Simulator(
        opcua_host=args.opcua_host,
        opcua_port=args.opcua_port,
        broker_url=broker,
        truth_path=Path(args.truth) if args.truth else None,
        formation_opcua=getattr(args, "formation_opcua", False),
        formation_arrays=getattr(args, "formation_opcua_arrays", False),
        sparkplug=not getattr(args, "no_sparkplug", False),
        mqtt_batch=not getattr(args, "single_values", False),
        **options,
    ) as sim:
        name = f"  scenario {scenario.name}" if scenario is not None else ""
        print(f"cellwatch sim: OPC UA {sim.endpoint}  MQTT {broker or 'off'}{name}", flush=True)
        print(f"cellwatch sim: {sim.describe()}", flush=True)
        if duration is None:
            await stop.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration)


async def run_edge(cfg: PlantConfig, stop: asyncio.Event) -> None:
    """Run the edge agent for ``cfg`` until stopped."""
    from edge.agent import EdgeAgent

    async with EdgeAgent(cfg):
        print(f"cellwatch edge {cfg.edge.id}: publishing to {cfg.broker.url}", flush=True)
        await stop.wait()


async def run_server(cfg: PlantConfig, stop: asyncio.Event) -> None:
    """Run the central server for ``cfg`` until stopped."""
    from server.app import CentralServer

    async with CentralServer(cfg) as server:
        print(f"cellwatch server: dashboard {server.url}/", flush=True)
        await stop.wait()
