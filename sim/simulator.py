"""The plant simulator: a coating line and formation cabinets on one clock, over OPC UA and MQTT.

``Simulator`` ties the numeric models to their transports and runs them on a fixed sample
grid (``start_ts + k / rate_hz``, wall-clock epoch seconds), so sample times are regular and
the fault schedule, counted from the start, lands where the ground truth says. Every tick:

* the coater sample (areal weight per lane and side, web speed and position, dryer zones and
  their power, NMP exhaust) and the calender sample (thickness, density per lane) are written
  to the OPC UA server; every ``scan_s`` each side's beta gauge finishes a cross-direction
  scan, served as OPC UA arrays and published as JSON;
* the formation sample of every channel is buffered and published once a second as one JSON
  batch per channel (and written to OPC UA too with ``formation_opcua``, as one array per
  cabinet and quantity with ``formation_arrays``); cells that finished
  formation are published with their genealogy, and graded after their (compressed) aging;
* once a second, the dryer and cabinet energy meters advance and, with ``sparkplug``, are
  published as a Sparkplug B edge node.

Scripted faults leave a ground-truth log (``sim.truth``): a record when each begins and one
when it ends, with the cells it reached. All models draw from independent child streams of one
seed, so switching a transport off does not change any number.

Typical use::

    async with Simulator(opcua_port=0, broker_url=None) as sim:
        print(sim.endpoint)
        await stop.wait()
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from sim.calender import CalenderModel
from sim.coating import AREAL_WEIGHT, DRYER_ZONES, SIDES, CoatingModel, CoatingSample
from sim.energy import EnergyMeters, cabinet_meter_names, dryer_meter_names
from sim.error import SimError
from sim.fault import CoatingTarget, Fault, FaultSpec, FormationTarget
from sim.formation import (
    CAPACITY,
    CELL_TEMPERATURE,
    CURRENT,
    VOLTAGE,
    FormationModel,
    result_payload,
)
from sim.gauge import BetaGauge, scan_payload
from sim.genealogy import Genealogy
from sim.grading import GradingModel, GradingResult, grading_payload
from sim.loading import ElectrodeLoading
from sim.mqtt_publisher import FormationPublisher, parse_broker_url
from sim.nominal import Nominal
from sim.opcua_server import CoaterServer
from sim.truth import GroundTruth
from sim.web import WebModel

if TYPE_CHECKING:
    from sim.genealogy import CellRecord
    from sim.sparkplug import SparkplugPublisher

__all__ = ["DEFAULT_FAULT", "NOMINALS", "TOPICS", "Simulator"]

log = logging.getLogger(__name__)

#: Seconds between two MQTT batches of one channel, and between two energy-meter readings.
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
#: MQTT topics of the JSON streams besides the formation channels' batches.
TOPICS = {
    "gauge": "sim/line1/coater/gauge/side{side}",
    "result": "sim/line1/formation/cab{cabinet:02d}/ch{channel:02d}/result",
    "grading": "sim/line1/grading/result",
}
#: Sparkplug B identity of the simulator's meters: spBv1.0/cellwatch/.../line1-sim/<meter>.
SPARKPLUG_GROUP = "cellwatch"
SPARKPLUG_NODE = "line1-sim"
#: Child streams of the seed, by model; the first two are the original coater and formation.
_STREAMS = ("coating", "formation", "grading", "gauge", "calender", "dryer_meters", "cab_meters")


class Simulator:
    """Async context manager running the simulated coating line and formation cabinets.

    ``opcua_port=0`` picks a free port (see ``endpoint``); ``broker_url=None`` runs without
    MQTT (and without Sparkplug). ``faults`` are the scripted faults (``Fault`` or the short
    ``FaultSpec``); without them ``fault`` (the demo's lane 3 drift by default) is the one
    fault, and ``fault=None`` with no ``faults`` keeps every series in control. An explicit
    ``fault`` given together with ``faults`` is injected too. ``speed`` compresses the
    formation cycles and the aging before grading. ``formation_opcua`` serves the formation
    channels over OPC UA as well, four scalars per channel; ``formation_arrays`` serves them as
    four arrays per cabinet instead (and implies ``formation_opcua``); ``sparkplug`` publishes
    the energy meters as Sparkplug B (it needs the ``cellwatch[sparkplug]`` extra);
    ``mqtt_batch=False`` publishes every formation sample as its own message of scalar values
    instead of one batch per second.
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
        formation_opcua: bool = False,
        sparkplug: bool = False,
        mqtt_batch: bool = True,
        formation_arrays: bool = False,
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
        self.formation_opcua = formation_opcua or formation_arrays
        self.formation_arrays = formation_arrays
        self.sparkplug = sparkplug and broker_url is not None
        self.mqtt_batch = mqtt_batch
        self.truth_path = Path(truth_path) if truth_path is not None else None
        self._server = CoaterServer(
            opcua_host,
            opcua_port,
            lanes,
            formation=(cabinets, channels) if self.formation_opcua else None,
            formation_arrays=formation_arrays,
        )
        self._broker_url = broker_url
        self._publisher: FormationPublisher | None = None
        self._spb: SparkplugPublisher | None = None
        self._coating: CoatingModel | None = None
        self._formation: FormationModel | None = None
        self._calender: CalenderModel | None = None
        self._gauge: BetaGauge | None = None
        self._grading: GradingModel | None = None
        self._genealogy: Genealogy | None = None
        self._dryer_meters: EnergyMeters | None = None
        self._cab_meters: EnergyMeters | None = None
        self._ground_truth: GroundTruth | None = None
        self._pending: list[tuple[float, int, GradingResult, CellRecord]] = []
        self._task: asyncio.Task[None] | None = None
        self._start_ts: float | None = None
        self._ticks = 0
        self._errors = 0
        self._next_scan = 0.0
        self._production = {"formed": 0, "graded": 0, "A": 0, "B": 0, "C": 0, "NG": 0}
        self._scans = 0
        self._last_coat: CoatingSample | None = None

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
        """Ground-truth records so far (start and end events, a copy)."""
        if self._ground_truth is None:
            return []
        return [dict(r) for r in self._ground_truth.records]

    @property
    def production(self) -> dict[str, int]:
        """Cells ``formed`` and ``graded`` so far, and graded cells per bin (A, B, C, NG)."""
        return dict(self._production)

    @property
    def genealogy(self) -> Genealogy:
        """The electrode genealogy of this run (cell index -> roll, lane, MD range)."""
        if self._genealogy is None:
            raise RuntimeError("the simulator has not been started")
        return self._genealogy

    @property
    def formation(self) -> FormationModel:
        """The formation model of this run (cell results and channel queries)."""
        if self._formation is None:
            raise RuntimeError("the simulator has not been started")
        return self._formation

    @property
    def samples_published(self) -> dict[str, int]:
        """Counters: ``opcua`` coating samples written (one per tick, all nodes), ``mqtt``
        formation samples and other JSON records the broker acknowledged, ``mqtt_queued``
        handed to the client, ``mqtt_dropped`` lost to a full queue, ``scans`` gauge scans,
        ``sparkplug`` Sparkplug data messages, ``errors`` ticks that failed."""
        counters = {"opcua": self._ticks, "mqtt": 0, "mqtt_queued": 0, "mqtt_dropped": 0}
        if self._publisher is not None:
            c = self._publisher.counters
            counters.update(mqtt=c["published"], mqtt_queued=c["queued"], mqtt_dropped=c["dropped"])
        counters["scans"] = self._scans
        counters["sparkplug"] = self._spb.counters["data"] if self._spb is not None else 0
        counters["errors"] = self._errors + (
            self._ground_truth.errors if self._ground_truth is not None else 0
        )
        return counters

    def describe(self) -> str:
        """One line on what this simulator serves, for the console."""
        parts = [
            f"coater {self.lanes} lanes, calender and beta gauges on OPC UA",
            f"formation {self.cabinets}x{self.channels} channels on "
            + ("MQTT and OPC UA" if self.formation_opcua else "MQTT")
            + (" (arrays per cabinet)" if self.formation_arrays else ""),
        ]
        if self._broker_url is None:
            parts[-1] = (
                parts[-1]
                .replace("MQTT and OPC UA", "OPC UA")
                .replace("on MQTT", "unpublished (no broker)")
            )
        else:
            parts.append("gauge scans, cell results and grading as JSON on sim/line1/#")
        if self.sparkplug:
            parts.append(
                f"energy meters as Sparkplug B spBv1.0/{SPARKPLUG_GROUP}/+/{SPARKPLUG_NODE}"
            )
        return "; ".join(parts)

    async def __aenter__(self) -> Self:
        if self._task is not None:
            raise RuntimeError("the simulator is already running")
        spb_cls = _sparkplug_publisher() if self.sparkplug else None
        await self._server.start()
        if self.formation_opcua:
            # Thousands of long-lived address-space objects: without this, each full garbage
            # collection walks them all and stalls a tick by up to a second (measured).
            gc.freeze()
        try:
            if self._broker_url is not None:
                self._publisher = FormationPublisher(self._broker_url, batch=self.mqtt_batch)
                await self._publisher.start()
            self._start_ts = start = time.time()
            children = np.random.SeedSequence(self.seed).spawn(len(_STREAMS))
            streams = dict(zip(_STREAMS, children, strict=True))
            web = WebModel()
            self._coating = CoatingModel(
                streams["coating"], self.lanes, None, start, faults=self.faults, web=web
            )
            self._genealogy = Genealogy(web, self.lanes)
            self._formation = FormationModel(
                streams["formation"],
                self.cabinets,
                self.channels,
                start,
                faults=self.faults,
                speed=self.speed,
                capacity_scale=ElectrodeLoading(self.faults, self._genealogy).scale,
            )
            self._calender = CalenderModel(self.lanes, streams["calender"])
            self._gauge = BetaGauge(self.lanes, streams["gauge"])
            self._grading = GradingModel(streams["grading"], speed=self.speed)
            dryer_names = dryer_meter_names(len(DRYER_ZONES))
            cab_names = cabinet_meter_names(self.cabinets)
            self._dryer_meters = EnergyMeters(dryer_names, streams["dryer_meters"])
            self._cab_meters = EnergyMeters(cab_names, streams["cab_meters"])
            self._ground_truth = GroundTruth(
                self.faults, start, NOMINALS, self._genealogy, self._formation, self.truth_path
            )
            self._next_scan = start
            if spb_cls is not None:
                assert self._broker_url is not None
                self._spb = spb_cls(
                    self._broker_url,
                    SPARKPLUG_GROUP,
                    SPARKPLUG_NODE,
                    devices={name: _meter_metrics() for name in (*dryer_names, *cab_names)},
                )
                await self._spb.start()
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
        if self._ground_truth is not None and self._start_ts is not None:
            self._ground_truth.close(time.time() - self._start_ts)
        stops = [self._server.stop()]
        if self._publisher is not None:
            stops.append(self._publisher.stop())
        if self._spb is not None:
            stops.append(self._spb.stop())
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
            if ts + 1e-9 >= next_flush:
                next_flush = max(next_flush + BATCH_S, ts)
                try:
                    self._second(ts)
                except Exception:
                    self._errors += 1
                    log.exception("simulator once-a-second work at %.3f failed", ts)
            k += 1

    async def _tick(self, ts: float) -> None:
        assert self._coating is not None and self._formation is not None
        assert self._calender is not None and self._ground_truth is not None
        self._ground_truth.update(ts - self.start_ts)
        coat = self._coating.sample(ts)
        await self._server.write(coat)
        await self._server.write_calender(self._calender.sample(ts, coat.areal_weight))
        if ts >= self._next_scan:
            self._next_scan = ts + self._gauge_s()
            await self._scan(ts, coat)
        self._ticks += 1
        self._last_coat = coat
        form = self._formation.sample(ts)
        if self.formation_opcua:
            await self._server.write_formation(form)
        if self._publisher is not None:
            self._publisher.add(form)
        self._cells(ts)

    def _gauge_s(self) -> float:
        assert self._gauge is not None
        return self._gauge.scan_s

    async def _scan(self, ts: float, coat: CoatingSample) -> None:
        """Both sides' gauges start a scan at ``ts`` over the lanes as they are now."""
        assert self._gauge is not None and coat.web is not None
        for column, side in enumerate(SIDES):
            scan = self._gauge.scan(ts, side, coat.areal_weight[:, column], coat.web)
            await self._server.write_scan(scan)
            self._scans += 1
            if self._publisher is not None:
                self._publisher.send(
                    TOPICS["gauge"].format(side=side), scan_payload(scan), scan.pos_mm.size
                )

    def _cells(self, ts: float) -> None:
        """Publish the cells that finished formation, and the grades that are due."""
        assert self._formation is not None and self._genealogy is not None
        assert self._grading is not None
        for result in self._formation.completed(ts):
            self._production["formed"] += 1
            record = self._genealogy.record(result)
            grade = self._grading.grade(result)
            heapq.heappush(self._pending, (grade.ts, result.n, grade, record))
            if self._publisher is not None:
                topic = TOPICS["result"].format(cabinet=result.cabinet, channel=result.channel)
                self._publisher.send(topic, result_payload(result, record))
        while self._pending and self._pending[0][0] <= ts:
            _, _, grade, record = heapq.heappop(self._pending)
            self._production["graded"] += 1
            self._production[grade.bin] += 1
            if self._publisher is not None:
                self._publisher.send(TOPICS["grading"], grading_payload(grade, record))

    def _second(self, ts: float) -> None:
        """Once a second: flush the formation batches and read the energy meters."""
        if self._publisher is not None:
            self._publisher.flush()
        assert self._dryer_meters is not None and self._cab_meters is not None
        assert self._formation is not None
        coat = self._last_coat
        if coat is None or coat.dryer_power_kw is None:
            return
        dryer = self._dryer_meters.update(ts, coat.dryer_power_kw)
        # Formation runs on a compressed clock: the cabinet meters integrate over process
        # time, so their registers hold the energy the cells really took.
        process_ts = self.start_ts + (ts - self.start_ts) * self._formation.time_factor
        cabs = self._cab_meters.update(process_ts, self._formation.cabinet_power_kw(ts))
        if self._spb is not None:
            for reading in (dryer, cabs):
                rows = zip(
                    reading.names,
                    reading.power_kw.tolist(),
                    reading.energy_kwh.tolist(),
                    reading.export_kwh.tolist(),
                    strict=True,
                )
                for name, kw, kwh, export in rows:
                    values = {"power_kw": kw, "energy_kwh": kwh, "export_kwh": export}
                    self._spb.publish(name, values, ts)


def _meter_metrics() -> tuple[Any, ...]:
    from sim.sparkplug import MetricSpec

    return (
        MetricSpec("power_kw", "kW"),
        MetricSpec("energy_kwh", "kWh"),
        MetricSpec("export_kwh", "kWh"),
    )


def _sparkplug_publisher() -> type[SparkplugPublisher]:
    """The Sparkplug B publisher class, or a SimError naming the extra that provides it."""
    try:
        from sim.sparkplug import SparkplugPublisher
    except ImportError as exc:
        raise SimError(
            f"Sparkplug B needs the esio-spb-builder package ({exc.name} is missing): "
            "pip install 'cellwatch[sparkplug]', or run without Sparkplug (--no-sparkplug)"
        ) from None
    return SparkplugPublisher
