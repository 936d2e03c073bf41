"""The plant simulator: coating line over OPC UA, formation cabinets over MQTT, one clock.

``Simulator`` ties the numeric models to their transports and runs them on a fixed sample
grid (``start_ts + k / rate_hz``, wall-clock epoch seconds), so sample times are regular and
the fault schedule, counted from the start, lands where the ground truth says. The coating
sample of every tick is written to the OPC UA server; formation samples are buffered per channel
and published once a second. When a scripted fault begins, its ground-truth record is kept in
memory and, if asked, appended to a JSONL file, so a demo or an evaluation run can score
detections afterwards. The two models draw from independent child streams of one seed, so
switching MQTT off does not change the coating numbers.

Typical use::

    async with Simulator(opcua_port=0, broker_url=None) as sim:
        print(sim.endpoint)
        await stop.wait()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np

from sim.coating import AREAL_WEIGHT, CoatingModel
from sim.error import SimError
from sim.fault import CoatingTarget, Fault, FaultSpec, FormationTarget
from sim.formation import CAPACITY, CELL_TEMPERATURE, CURRENT, VOLTAGE, FormationModel
from sim.mqtt_publisher import FormationPublisher, parse_broker_url
from sim.nominal import Nominal
from sim.opcua_server import CoaterServer

__all__ = ["DEFAULT_FAULT", "NOMINALS", "Simulator"]

log = logging.getLogger(__name__)

#: Seconds between two MQTT batches of one channel.
BATCH_S = 1.0
#: A tick later than this (process suspended, overloaded host) restarts the sample grid at
#: "now" instead of producing a burst of back-dated samples.
MAX_LAG_S = 1.0
#: The demo's scripted drift, used when no fault is given.
DEFAULT_FAULT = FaultSpec()
#: In-control noise and unit of every parameter a fault can target, for the ground truth.
NOMINALS: dict[str, Nominal] = {
    "areal_weight": AREAL_WEIGHT,
    "voltage": VOLTAGE,
    "current": CURRENT,
    "capacity": CAPACITY,
    "cell_temperature": CELL_TEMPERATURE,
}


class Simulator:
    """Async context manager running the simulated coating line and formation cabinets.

    ``opcua_port=0`` picks a free port (see ``endpoint``); ``broker_url=None`` runs without
    MQTT. ``faults`` are the scripted faults (``Fault`` or the short ``FaultSpec``); without
    them ``fault`` (the demo's lane 3 drift by default) is the one fault, and ``fault=None``
    with no ``faults`` keeps every series in control. An explicit ``fault`` given together with
    ``faults`` is injected too. ``speed`` compresses the formation cycles only.
    """

    def __init__(
        self,
        opcua_host: str = "127.0.0.1",
        opcua_port: int = 4840,
        broker_url: str | None = "mqtt://127.0.0.1:1883",
        seed: int = 1,
        rate_hz: float = 2.0,
        lanes: int = 4,
        cabinets: int = 2,
        channels: int = 4,
        fault: FaultSpec | None = DEFAULT_FAULT,
        truth_path: str | Path | None = None,
        faults: Sequence[Fault | FaultSpec] | None = None,
        speed: float = 1.0,
    ) -> None:
        if not (math.isfinite(rate_hz) and 0.0 < rate_hz <= 100.0):
            raise SimError(f"rate_hz must be in (0, 100], got {rate_hz}")
        for name, value in (("lanes", lanes), ("cabinets", cabinets), ("channels", channels)):
            if not 1 <= value <= 99:
                raise SimError(f"{name} must be in 1..99, got {value}")
        if not (math.isfinite(speed) and speed > 0.0):
            raise SimError(f"speed must be > 0, got {speed}")
        chosen: list[Fault | FaultSpec] = []
        if fault is not None and (faults is None or fault is not DEFAULT_FAULT):
            chosen.append(fault)
        chosen.extend(faults or ())
        self.faults = tuple(f.to_fault() if isinstance(f, FaultSpec) else f for f in chosen)
        for f in self.faults:
            t = f.target
            if isinstance(t, CoatingTarget) and t.lane > lanes:
                raise SimError(f"fault lane {t.lane} does not exist on a {lanes}-lane coater")
            if isinstance(t, FormationTarget) and (t.cabinet > cabinets or t.channel > channels):
                raise SimError(
                    f"fault channel cab{t.cabinet:02d}/ch{t.channel:02d} does not exist with "
                    f"{cabinets} cabinets of {channels} channels"
                )
        if broker_url is not None:
            parse_broker_url(broker_url)
        self.seed = seed
        self.rate_hz = rate_hz
        self.lanes = lanes
        self.cabinets = cabinets
        self.channels = channels
        self.fault = fault
        self.speed = speed
        self._begun: set[int] = set()
        self.truth_path = Path(truth_path) if truth_path is not None else None
        self._server = CoaterServer(opcua_host, opcua_port, lanes)
        self._broker_url = broker_url
        self._publisher: FormationPublisher | None = None
        self._coating: CoatingModel | None = None
        self._formation: FormationModel | None = None
        self._task: asyncio.Task[None] | None = None
        self._start_ts: float | None = None
        self._truth: list[dict[str, Any]] = []
        self._ticks = 0
        self._errors = 0

    @property
    def endpoint(self) -> str:
        """OPC UA endpoint URL, with the actual port once started."""
        return self._server.endpoint

    @property
    def start_ts(self) -> float:
        """Epoch seconds of the first sample; the fault schedule counts from here."""
        if self._start_ts is None:
            raise RuntimeError("the simulator has not been started")
        return self._start_ts

    @property
    def truth(self) -> list[dict[str, Any]]:
        """Ground-truth records of the faults that have begun so far (a copy)."""
        return [dict(r) for r in self._truth]

    @property
    def samples_published(self) -> dict[str, int]:
        """Counters: ``opcua`` coating samples written (one per tick, all nodes), ``mqtt``
        formation samples the broker acknowledged, ``mqtt_queued`` handed to the client,
        ``mqtt_dropped`` lost to a full queue, ``errors`` ticks that failed."""
        counters = {"opcua": self._ticks, "mqtt": 0, "mqtt_queued": 0, "mqtt_dropped": 0}
        if self._publisher is not None:
            c = self._publisher.counters
            counters.update(mqtt=c["published"], mqtt_queued=c["queued"], mqtt_dropped=c["dropped"])
        counters["errors"] = self._errors
        return counters

    async def __aenter__(self) -> Self:
        if self._task is not None:
            raise RuntimeError("the simulator is already running")
        await self._server.start()
        try:
            if self._broker_url is not None:
                self._publisher = FormationPublisher(self._broker_url)
                await self._publisher.start()
            self._start_ts = time.time()
            coat_seed, form_seed = np.random.SeedSequence(self.seed).spawn(2)
            self._coating = CoatingModel(
                coat_seed, self.lanes, None, self._start_ts, faults=self.faults
            )
            self._formation = FormationModel(
                form_seed,
                self.cabinets,
                self.channels,
                self._start_ts,
                faults=self.faults,
                speed=self.speed,
            )
            self._task = asyncio.create_task(self._loop(), name="cellwatch-sim-loop")
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._shutdown()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down."""
        async with self:
            await stop.wait()

    async def _shutdown(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        publisher = self._publisher
        stops = [self._server.stop()]
        if publisher is not None:
            stops.append(publisher.stop())
        await asyncio.gather(*stops)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.rate_hz
        base_ts, base_mono = self.start_ts, loop.time()
        k = 0
        next_flush = base_ts + BATCH_S
        while True:
            ts = base_ts + k * period
            delay = base_mono + k * period - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > MAX_LAG_S:
                log.warning("simulator fell %.1f s behind; restarting the sample grid", -delay)
                base_ts, base_mono, k = time.time(), loop.time(), 0
                ts = base_ts
            try:
                await self._tick(ts)
            except Exception:
                self._errors += 1
                log.exception("simulator tick at %.3f failed", ts)
            if self._publisher is not None and ts + 1e-9 >= next_flush:
                self._publisher.flush()
                next_flush = max(next_flush + BATCH_S, ts)
            k += 1

    async def _tick(self, ts: float) -> None:
        assert self._coating is not None and self._formation is not None
        t_rel = ts - self.start_ts
        for n, fault in enumerate(self.faults):
            if n not in self._begun and fault.active(t_rel):
                self._begun.add(n)
                self._begin_fault(fault)
        await self._server.write(self._coating.sample(ts))
        self._ticks += 1
        if self._publisher is not None:
            self._publisher.add(self._formation.sample(ts))

    def _begin_fault(self, fault: Fault) -> None:
        nominal = NOMINALS[fault.param]
        record = fault.record(
            self.start_ts,
            self.cabinets,
            self.channels,
            nominal.sigma,
            nominal.unit,
            lanes=self.lanes,
            mean=nominal.mean,
        )
        self._truth.append(record)
        everything = "all lanes" if fault.station == "coater" else "all channels"
        target = everything if fault.target is None else fault.target.equipment
        log.info("fault begins: %s on %s %s", fault.kind, target, fault.param)
        if self.truth_path is not None:
            try:
                with self.truth_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            except OSError as exc:
                self._errors += 1
                log.error("cannot write ground truth to %s: %s", self.truth_path, exc)
