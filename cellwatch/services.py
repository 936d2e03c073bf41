"""Long-running services started on their own: ``cellwatch sim``, ``edge`` and ``server``.

Each runs until SIGINT or SIGTERM and then shuts down in order, so a systemd unit can stop a
gateway or the central server without losing what is in flight.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from models.plant import PlantConfig

__all__ = ["run_edge", "run_server", "run_sim"]


async def run_sim(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Serve the simulated plant until stopped; prints the OPC UA endpoint and broker."""
    from sim import FaultSpec, Simulator

    broker = None if args.broker in ("", "none") else args.broker
    fault = None if args.no_fault else FaultSpec(start_s=args.fault_at)
    async with Simulator(
        opcua_host=args.opcua_host,
        opcua_port=args.opcua_port,
        broker_url=broker,
        seed=args.seed,
        rate_hz=args.rate_hz,
        fault=fault,
        truth_path=Path(args.truth) if args.truth else None,
    ) as sim:
        print(f"cellwatch sim: OPC UA {sim.endpoint}  MQTT {broker or 'off'}", flush=True)
        await stop.wait()


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
