"""The coater's OPC UA server: the address space the demo plant config browses, kept current.

Edge gateways meet real coaters through OPC UA, so the simulator serves its coating signals the
same way, with the exact layout ``config/plant.example.yaml`` subscribes to: objects
``Line1/Coater/LaneNN/SideA|SideB/ArealWeight``, ``Line1/Coater/WebSpeed`` and
``Line1/Coater/Dryer/ZoneN/Temperature``, every browse name and string node id
(``Line1.Coater.Lane03.SideA.ArealWeight``) in the namespace ``urn:cellwatch:sim``. Variables
are Doubles with EngineeringUnits and EURange properties, as a real AnalogItem would carry, and
each update writes a DataValue whose SourceTimestamp is the sample time, so collectors can be
tested on source time rather than arrival time; an areal weight whose device clock is off
(``CoatingSample.skew``) gets the sample time plus that offset, as a drifting gauge clock would
stamp it. A value the sample marks bad is written with
StatusCode BadSensorFailure, and a NaN (a dropout) is not written at all, so the node goes
stale the way a disconnected sensor's does.

Around those sit the rest of the line: ``Line1/Coater/Web/RollId|Position`` (where the web is),
``Line1/Coater/Dryer/NmpExhaust`` and ``.../ZoneN/Power``, the beta gauge's last scan per side
as one-dimensional Double arrays (``Line1/Coater/BetaGauge/SideA|SideB/Profile|Positions|
LaneAverage``, stamped with the scan's start), the calender's ``Line1/Calender/LaneNN/
Thickness|Density``, and, when asked for, formation channels as many cyclers serve them,
``Line1/Formation/CabNN/ChNN/Voltage|Current|Capacity|Temperature``, or, with
``formation_arrays``, as cyclers that serve a cabinet at a time do: one Double array per cabinet
and quantity, ``Line1/Formation/CabNN/VoltageArray|CurrentArray|CapacityArray|TemperatureArray``,
element k holding channel k + 1. The scalar form is what makes the server big: 40 cabinets of
64 channels are 10,240 variables, each with two property nodes (the arrays are 160). The
address space is therefore built with batched AddNodes calls rather than node by node, and
updates go straight to the address space with ``write_attribute_value``, one call per node
since asyncua has no batch write. What keeps a write of every formation node affordable
with a client subscribed to all of them is ``_ScalarValue`` below, which spares asyncua a deep
copy of each value per monitored item (formation arrays use it too).

The server clock (ServerStatus/CurrentTime) is advanced by the sample writes, at most once a
second, instead of by asyncua's own clock task: that task sleeps a full second between updates
and makes every shutdown wait for it, and the simulator promises to stop within two seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import math
import socket
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

import numpy as np
import numpy.typing as npt
from asyncua import Server, ua

from sim.calender import DENSITY, THICKNESS, CalenderSample
from sim.coating import (
    AREAL_WEIGHT,
    DRYER_POWER,
    DRYER_ZONES,
    NMP_EXHAUST,
    SIDES,
    WEB_SPEED,
    CoatingSample,
)
from sim.error import SimError
from sim.formation import CAPACITY, CELL_TEMPERATURE, CURRENT, VOLTAGE, FormationSample
from sim.gauge import GaugeScan
from sim.gauge import web_width_mm as web_width_mm_of
from sim.nominal import Nominal
from sim.web import ROLL_LENGTH_M

__all__ = ["ENDPOINT_PATH", "NAMESPACE_URI", "CoaterServer"]

log = logging.getLogger(__name__)

#: Path part of the endpoint URL: opc.tcp://HOST:PORT/cellwatch/sim.
ENDPOINT_PATH = "/cellwatch/sim"
#: Namespace of every simulator node id and browse name.
NAMESPACE_URI = "urn:cellwatch:sim"
#: Where engineering unit ids come from (UNECE Recommendation 20 codes).
_UNECE_URI = "http://www.opcfoundation.org/UA/units/un/cefact"
#: UNECE common codes of the units served; units without a code get UnitId -1 (none).
_UNECE_CODES = {
    "m/min": "2X",
    "degC": "CEL",
    "V": "VLT",
    "A": "AMP",
    "Ah": "AMH",
    "mg/cm2": "H63",
    "um": "4H",
    "mm": "MMT",
    "m": "MTR",
    "kW": "KWT",
    "g/cm3": "23",
    "mg/m3": "GP",
}
#: Web position within a roll, for its unit and range (the default roll length).
WEB_POSITION = Nominal(mean=ROLL_LENGTH_M / 2, sigma=0.0, unit="m", low=0.0, high=ROLL_LENGTH_M)
#: Formation variables per channel: browse name and nominal, in ``write_formation`` order.
_FORMATION_VARIABLES = (
    ("Voltage", VOLTAGE),
    ("Current", CURRENT),
    ("Capacity", CAPACITY),
    ("Temperature", CELL_TEMPERATURE),
)
#: Browse name suffix of the per-cabinet formation arrays (``VoltageArray``, ...).
_ARRAY_SUFFIX = "Array"
#: AddNodes items per call while building; between calls the event loop gets a turn.
_BATCH = 3000
# asyncua annotates its dataclass fields with marker classes for the wire encoding
# (ua.UInt32, ua.Int16, ua.Int32, ua.String, ua.DateTime) but takes plain ints, strs and
# datetimes, and builds its own values from them; the casts here and in _node_id and _ua_time
# only tell mypy so, nothing is converted.
_GOOD = ua.StatusCode(cast(ua.UInt32, ua.StatusCodes.Good))
_BAD = ua.StatusCode(cast(ua.UInt32, ua.StatusCodes.BadSensorFailure))
_DOUBLE = ua.VariantType.Double


def _node_id(identifier: int | str, ns: int = 0) -> ua.NodeId:
    """A NodeId from a plain int (``ua.ObjectIds.*``) or string identifier."""
    return ua.NodeId(cast("ua.Int32 | ua.String", identifier), cast(ua.Int16, ns))


def _ua_time(dt: datetime) -> ua.DateTime:
    """``dt`` as a DataValue timestamp (the same object)."""
    return cast(ua.DateTime, dt)


def _unit_id(unit: str) -> int:
    """OPC UA UnitId of a unit: its UNECE code packed into an Int32, or -1 if it has none."""
    code = _UNECE_CODES.get(unit)
    if code is None:
        return -1
    value = 0
    for char in code:
        value = (value << 8) | ord(char)
    return value


def _free_port(host: str) -> int:
    """A port nothing listens on at ``host`` now; asyncua needs a concrete one to advertise."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _check_port(host: str, port: int) -> None:
    """Raise SimError if ``host:port`` cannot be bound, before asyncua logs a traceback for it.

    SO_REUSEADDR matches what asyncio's server uses, so a port held only by connections in
    TIME_WAIT is not reported as taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise _bind_error(host, port, exc) from None


def _bind_error(host: str, port: int, exc: OSError) -> SimError:
    if exc.errno == errno.EADDRINUSE:
        reason = "is already in use"
    else:
        reason = f"cannot be bound ({exc.strerror or exc})"
    return SimError(exc.errno, f"OPC UA port {port} on {host} {reason}")


class _ScalarValue(ua.DataValue):
    """A DataValue that is its own deep copy.

    asyncua deep-copies every written DataValue once per monitored item, to keep what it
    compares later safe from changes to the original; with 10,240 subscribed nodes that copy
    was three quarters of a write's cost. The values written here are built fresh for one write
    from parts nothing changes afterwards (a float or string, datetimes, a shared Good or Bad
    status), so a copy would equal the original and sharing it is safe. The formation arrays
    use it too: each is a list made by ``tolist()`` for that one write and never touched again.
    The gauge scans keep the plain DataValue.
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, object]) -> _ScalarValue:
        return self


@dataclasses.dataclass(frozen=True, slots=True)
class _GaugeNodes:
    """The array variables of one side's beta-gauge scan."""

    profile: ua.NodeId
    positions: ua.NodeId
    lane_average: ua.NodeId


class CoaterServer:
    """An asyncua server exposing a ``lanes``-lane coater; ``port=0`` picks a free port.

    ``formation`` = (cabinets, channels) adds that many formation channels, as four scalar
    variables per channel or, with ``formation_arrays``, as four Double arrays of ``channels``
    elements per cabinet; ``web_width_mm`` is the EURange of the gauge positions (by default the
    ``sim.gauge`` web of ``lanes``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 4840,
        lanes: int = 4,
        formation: tuple[int, int] | None = None,
        web_width_mm: float | None = None,
        formation_arrays: bool = False,
    ) -> None:
        if not 0 <= port <= 65535:
            raise SimError(f"OPC UA port must be in 0..65535, got {port}")
        if not 1 <= lanes <= 99:
            raise SimError(f"lanes must be in 1..99, got {lanes}")
        if formation is not None:
            for name, value in zip(("cabinets", "channels"), formation, strict=True):
                if not 1 <= value <= 99:
                    raise SimError(f"formation {name} must be in 1..99, got {value}")
        if formation_arrays and formation is None:
            raise SimError("formation_arrays needs formation=(cabinets, channels)")
        if web_width_mm is not None and not (math.isfinite(web_width_mm) and web_width_mm > 0):
            raise SimError(f"web_width_mm must be > 0, got {web_width_mm}")
        self.host = host
        self.port = port
        self.lanes = lanes
        self.formation = formation
        self.formation_arrays = formation_arrays
        self.web_width_mm = web_width_mm or web_width_mm_of(lanes)
        self._server: Server | None = None
        self._ns = 0
        self._items: list[ua.AddNodesItem] = []
        self._weights: list[list[ua.NodeId]] = []
        self._speed = ua.NodeId()
        self._zones: list[ua.NodeId] = []
        self._powers: list[ua.NodeId] = []
        self._nmp = ua.NodeId()
        self._roll = ua.NodeId()
        self._position = ua.NodeId()
        self._gauge: dict[str, _GaugeNodes] = {}
        self._calender: list[tuple[ua.NodeId, ua.NodeId]] = []
        self._formation: list[list[ua.NodeId]] = []
        self._formation_cabinets: list[list[ua.NodeId]] = []
        self._clock_at = 0.0

    @property
    def endpoint(self) -> str:
        """Endpoint URL clients connect to (with the actual port once started)."""
        return f"opc.tcp://{self.host}:{self.port}{ENDPOINT_PATH}"

    async def start(self) -> None:
        """Build the address space and listen; raises SimError if the port is taken."""
        logging.getLogger("asyncua.server").setLevel(logging.WARNING)
        if self.port == 0:
            self.port = _free_port(self.host)
        _check_port(self.host, self.port)
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("cellwatch plant simulator")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.set_identity_tokens([ua.AnonymousIdentityToken])
        server.disable_clock()
        self._ns = await server.register_namespace(NAMESPACE_URI)
        self._build()
        items, self._items = self._items, []
        session = server.nodes.objects.session
        for first in range(0, len(items), _BATCH):
            for result in await session.add_nodes(items[first : first + _BATCH]):
                result.StatusCode.check()
            await asyncio.sleep(0)
        try:
            await server.start()
        except OSError as exc:
            raise _bind_error(self.host, self.port, exc) from None
        self._server = server
        log.info("OPC UA server listening on %s", self.endpoint)

    async def stop(self) -> None:
        """Close client connections and the listening socket; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    def _running(self, method: str) -> Server:
        if self._server is None:
            raise RuntimeError(f"CoaterServer.{method}() called before start()")
        return self._server

    async def write(self, sample: CoatingSample) -> None:
        """Publish one coating sample: every variable gets the sample's source timestamp."""
        server = self._running("write")
        source = datetime.fromtimestamp(sample.ts, UTC)
        server_ts = datetime.now(UTC)
        weights = sample.areal_weight.tolist()
        bad = sample.bad.tolist() if sample.bad is not None else None
        skew = sample.skew.tolist() if sample.skew is not None else None
        for lane, (lane_nodes, lane_values) in enumerate(zip(self._weights, weights, strict=True)):
            for side, (node, value) in enumerate(zip(lane_nodes, lane_values, strict=True)):
                if math.isnan(value):
                    continue  # a dropout: the node keeps its last value and goes stale
                is_bad = bad is not None and bad[lane][side]
                stamp = source
                if skew is not None and skew[lane][side]:
                    stamp = datetime.fromtimestamp(sample.ts + skew[lane][side], UTC)
                await server.write_attribute_value(node, _value(value, stamp, server_ts, is_bad))
        await server.write_attribute_value(self._speed, _value(sample.web_speed, source, server_ts))
        for node, value in zip(self._zones, sample.dryer.tolist(), strict=True):
            await server.write_attribute_value(node, _value(value, source, server_ts))
        if sample.dryer_power_kw is not None:
            await self._write_doubles(
                server, self._powers, sample.dryer_power_kw, source, server_ts
            )
        if not math.isnan(sample.nmp_exhaust):
            await server.write_attribute_value(
                self._nmp, _value(sample.nmp_exhaust, source, server_ts)
            )
        if sample.web is not None:
            roll = ua.Variant(sample.web.roll_id, ua.VariantType.String)
            await server.write_attribute_value(
                self._roll,
                _ScalarValue(
                    Value=roll,
                    StatusCode=_GOOD,
                    SourceTimestamp=_ua_time(source),
                    ServerTimestamp=_ua_time(server_ts),
                ),
            )
            await server.write_attribute_value(
                self._position, _value(sample.web.md_m, source, server_ts)
            )
        await self._tick_clock(server, server_ts)

    async def write_scan(self, scan: GaugeScan) -> None:
        """Publish one beta-gauge scan as its side's arrays, stamped with the scan's start; a
        lane without points has NaN in LaneAverage."""
        server = self._running("write_scan")
        nodes = self._gauge.get(scan.side)
        if nodes is None:
            raise ValueError(f"side must be one of {', '.join(SIDES)}, got {scan.side!r}")
        if scan.lane_means.shape != (self.lanes,):
            raise ValueError(
                f"scan lane_means must have shape ({self.lanes},), "
                f"got {tuple(scan.lane_means.shape)}"
            )
        source = datetime.fromtimestamp(scan.ts_start, UTC)
        server_ts = datetime.now(UTC)
        for node, values in (
            (nodes.profile, scan.areal_weight),
            (nodes.positions, scan.pos_mm),
            (nodes.lane_average, scan.lane_means),
        ):
            variant = ua.Variant(values.tolist(), _DOUBLE, is_array=True)
            await server.write_attribute_value(
                node,
                ua.DataValue(
                    Value=variant,
                    StatusCode=_GOOD,
                    SourceTimestamp=_ua_time(source),
                    ServerTimestamp=_ua_time(server_ts),
                ),
            )
        await self._tick_clock(server, server_ts)

    async def write_calender(self, sample: CalenderSample) -> None:
        """Publish one calender sample; a NaN lane is not written (it goes stale)."""
        server = self._running("write_calender")
        source = datetime.fromtimestamp(sample.ts, UTC)
        server_ts = datetime.now(UTC)
        thickness = [t for t, _ in self._calender]
        density = [d for _, d in self._calender]
        await self._write_doubles(server, thickness, sample.thickness_um, source, server_ts)
        await self._write_doubles(server, density, sample.density_g_cm3, source, server_ts)
        await self._tick_clock(server, server_ts)

    async def write_formation(self, sample: FormationSample) -> None:
        """Publish one formation sample to every channel; a NaN is not written (the node goes
        stale), and a channel whose clock is off (``sample.skew``) gets its own timestamp.

        With ``formation_arrays`` each cabinet's four arrays are written whole, one write each,
        all stamped with the sample time: a NaN channel is a NaN element, and ``sample.skew``
        is not applied (one array has one source timestamp)."""
        server = self._running("write_formation")
        if self.formation is None:
            raise RuntimeError("write_formation() needs a CoaterServer built with formation=")
        arrays = (sample.voltage, sample.current, sample.capacity, sample.temperature)
        for array in arrays:
            if array.shape != self.formation:
                raise ValueError(
                    f"formation sample arrays must have shape {self.formation}, "
                    f"got {tuple(array.shape)}"
                )
        source = datetime.fromtimestamp(sample.ts, UTC)
        server_ts = datetime.now(UTC)
        if self.formation_arrays:
            await self._write_arrays(server, arrays, source, server_ts)
            await self._tick_clock(server, server_ts)
            return
        stamps: list[datetime] | None = None
        if sample.skew is not None:
            stamps = [
                datetime.fromtimestamp(sample.ts + offset, UTC) if offset else source
                for offset in sample.skew.ravel().tolist()
            ]
        for nodes, array in zip(self._formation, arrays, strict=True):
            await self._write_doubles(server, nodes, array, source, server_ts, stamps)
        await self._tick_clock(server, server_ts)

    async def _write_arrays(
        self,
        server: Server,
        arrays: Sequence[npt.NDArray[np.float64]],
        source: datetime,
        server_ts: datetime,
    ) -> None:
        """Write row c of ``arrays[j]`` to cabinet c's j-th array variable, NaN included."""
        write = server.write_attribute_value
        rows = [array.tolist() for array in arrays]
        for cab, nodes in enumerate(self._formation_cabinets):
            for node, values in zip(nodes, rows, strict=True):
                dv = _ScalarValue(
                    Value=ua.Variant(values[cab], _DOUBLE, is_array=True),
                    StatusCode=_GOOD,
                    SourceTimestamp=_ua_time(source),
                    ServerTimestamp=_ua_time(server_ts),
                )
                await write(node, dv)

    @staticmethod
    async def _write_doubles(
        server: Server,
        nodes: Sequence[ua.NodeId],
        values: npt.NDArray[np.float64],
        source: datetime,
        server_ts: datetime,
        stamps: Sequence[datetime] | None = None,
    ) -> None:
        """Write ``values`` (flattened) to ``nodes`` in order, skipping NaN; ``stamps`` gives
        each value its own source timestamp instead of ``source``."""
        flat = values.ravel().tolist()
        if len(flat) != len(nodes):
            raise ValueError(f"expected {len(nodes)} values, got {len(flat)}")
        write = server.write_attribute_value
        for n, (node, value) in enumerate(zip(nodes, flat, strict=True)):
            if value != value:  # NaN: not written, the node goes stale
                continue
            stamp = source if stamps is None else stamps[n]
            dv = _ScalarValue(
                Value=ua.Variant(value, _DOUBLE),
                StatusCode=_GOOD,
                SourceTimestamp=_ua_time(stamp),
                ServerTimestamp=_ua_time(server_ts),
            )
            await write(node, dv)

    async def _tick_clock(self, server: Server, now: datetime) -> None:
        if time.monotonic() - self._clock_at >= 1.0:
            self._clock_at = time.monotonic()
            await self._advance_clock(server, now)

    @staticmethod
    async def _advance_clock(server: Server, now: datetime) -> None:
        """Set ServerStatus.CurrentTime (the structure and its component variable) to ``now``."""
        status_node = server.get_node(_node_id(ua.ObjectIds.Server_ServerStatus))
        status = await status_node.read_value()
        if status is not None:
            await status_node.write_value(dataclasses.replace(status, CurrentTime=now))
        time_node = server.get_node(_node_id(ua.ObjectIds.Server_ServerStatus_CurrentTime))
        await time_node.write_value(now, ua.VariantType.DateTime)

    def _build(self) -> None:
        """Queue the AddNodes items of the whole address space in ``self._items``."""
        objects = _node_id(ua.ObjectIds.ObjectsFolder)
        line = self._object(objects, "Line1", "Line1", organizes=True)
        coater = self._object(line, "Line1.Coater", "Coater")
        self._weights = []
        for lane in range(1, self.lanes + 1):
            lane_id = f"Line1.Coater.Lane{lane:02d}"
            lane_node = self._object(coater, lane_id, f"Lane{lane:02d}")
            sides = []
            for side in SIDES:
                side_node = self._object(lane_node, f"{lane_id}.Side{side}", f"Side{side}")
                sides.append(self._variable(side_node, "ArealWeight", AREAL_WEIGHT))
            self._weights.append(sides)
        self._speed = self._variable(coater, "WebSpeed", WEB_SPEED)
        dryer = self._object(coater, "Line1.Coater.Dryer", "Dryer")
        self._zones, self._powers = [], []
        for number, (temperature, power) in enumerate(
            zip(DRYER_ZONES, DRYER_POWER, strict=True), start=1
        ):
            zone = self._object(dryer, f"Line1.Coater.Dryer.Zone{number}", f"Zone{number}")
            self._zones.append(self._variable(zone, "Temperature", temperature))
            self._powers.append(self._variable(zone, "Power", power))
        self._nmp = self._variable(dryer, "NmpExhaust", NMP_EXHAUST)
        web = self._object(coater, "Line1.Coater.Web", "Web")
        self._roll = self._string(web, "RollId")
        self._position = self._variable(web, "Position", WEB_POSITION)
        gauge = self._object(coater, "Line1.Coater.BetaGauge", "BetaGauge")
        width = self.web_width_mm
        positions = Nominal(mean=width / 2, sigma=0.0, unit="mm", low=0.0, high=width)
        for side in SIDES:
            side_node = self._object(gauge, f"Line1.Coater.BetaGauge.Side{side}", f"Side{side}")
            self._gauge[side] = _GaugeNodes(
                profile=self._variable(side_node, "Profile", AREAL_WEIGHT, array=True),
                positions=self._variable(side_node, "Positions", positions, array=True),
                lane_average=self._variable(side_node, "LaneAverage", AREAL_WEIGHT, array=True),
            )
        calender = self._object(line, "Line1.Calender", "Calender")
        self._calender = []
        for lane in range(1, self.lanes + 1):
            lane_node = self._object(calender, f"Line1.Calender.Lane{lane:02d}", f"Lane{lane:02d}")
            self._calender.append(
                (
                    self._variable(lane_node, "Thickness", THICKNESS),
                    self._variable(lane_node, "Density", DENSITY),
                )
            )
        self._formation = []
        self._formation_cabinets = []
        if self.formation is not None:
            self._build_formation(line, *self.formation)

    def _build_formation(self, line: ua.NodeId, cabinets: int, channels: int) -> None:
        formation = self._object(line, "Line1.Formation", "Formation")
        columns: list[list[ua.NodeId]] = [[] for _ in _FORMATION_VARIABLES]
        for cab in range(1, cabinets + 1):
            cab_node = self._object(formation, f"Line1.Formation.Cab{cab:02d}", f"Cab{cab:02d}")
            if self.formation_arrays:
                self._formation_cabinets.append(
                    [
                        self._variable(cab_node, name + _ARRAY_SUFFIX, nominal, length=channels)
                        for name, nominal in _FORMATION_VARIABLES
                    ]
                )
                continue
            for ch in range(1, channels + 1):
                ch_node = self._object(
                    cab_node, f"Line1.Formation.Cab{cab:02d}.Ch{ch:02d}", f"Ch{ch:02d}"
                )
                for column, (name, nominal) in zip(columns, _FORMATION_VARIABLES, strict=True):
                    column.append(self._variable(ch_node, name, nominal))
        self._formation = columns

    def _object(
        self, parent: ua.NodeId, node_id: str, name: str, organizes: bool = False
    ) -> ua.NodeId:
        """Queue an object (a folder's child is Organized, an object's a component)."""
        nodeid = _node_id(node_id, self._ns)
        attrs = ua.ObjectAttributes(
            DisplayName=ua.LocalizedText(name),
            Description=ua.LocalizedText(name),
            EventNotifier=0,
            WriteMask=0,
            UserWriteMask=0,
        )
        reference = ua.ObjectIds.Organizes if organizes else ua.ObjectIds.HasComponent
        self._items.append(
            ua.AddNodesItem(
                ParentNodeId=parent,
                ReferenceTypeId=_node_id(reference),
                RequestedNewNodeId=nodeid,
                BrowseName=ua.QualifiedName(name, self._ns),
                NodeClass=ua.NodeClass.Object,
                NodeAttributes=attrs,
                TypeDefinition=_node_id(ua.ObjectIds.BaseObjectType),
            )
        )
        return nodeid

    def _variable(
        self,
        parent: ua.NodeId,
        name: str,
        nominal: Nominal,
        array: bool = False,
        length: int | None = None,
    ) -> ua.NodeId:
        """Queue a Double variable ``<parent id>.<name>`` with its unit and range, a scalar
        starting at the nominal mean or a one-dimensional array: of variable length starting
        empty (``array``), or of ``length`` elements starting at the nominal mean. The standard
        property browse names (EngineeringUnits, EURange) stay in namespace 0, where OPC UA
        Part 8 defines them."""
        node_id = f"{str(parent.Identifier)}.{name}"
        if length is not None:
            value = ua.Variant([nominal.mean] * length, _DOUBLE, is_array=True)
            rank, dims = ua.ValueRank.OneDimension, [length]
        elif array:
            value = ua.Variant([], _DOUBLE, is_array=True)
            rank, dims = ua.ValueRank.OneDimension, [0]
        else:
            value = ua.Variant(nominal.mean, _DOUBLE)
            rank, dims = ua.ValueRank.Scalar, None
        nodeid = self._add_variable(parent, node_id, name, value, ua.ObjectIds.Double, rank, dims)
        units = ua.EUInformation(
            NamespaceUri=_UNECE_URI,
            UnitId=_unit_id(nominal.unit),
            DisplayName=ua.LocalizedText(nominal.unit),
            Description=ua.LocalizedText(nominal.unit),
        )
        eu_range = ua.Range(Low=nominal.low, High=nominal.high)
        for prop, prop_value, datatype in (
            ("EngineeringUnits", units, ua.ObjectIds.EUInformation),
            ("EURange", eu_range, ua.ObjectIds.Range),
        ):
            self._add_variable(
                nodeid,
                f"{node_id}.{prop}",
                prop,
                ua.Variant(prop_value, ua.VariantType.ExtensionObject),
                datatype,
                property_of=True,
            )
        return nodeid

    def _string(self, parent: ua.NodeId, name: str) -> ua.NodeId:
        """Queue a String variable ``<parent id>.<name>``, starting empty."""
        node_id = f"{str(parent.Identifier)}.{name}"
        value = ua.Variant("", ua.VariantType.String)
        return self._add_variable(parent, node_id, name, value, ua.ObjectIds.String)

    def _add_variable(
        self,
        parent: ua.NodeId,
        node_id: str,
        name: str,
        value: ua.Variant,
        datatype: int,
        rank: int = ua.ValueRank.Scalar,
        dims: list[int] | None = None,
        property_of: bool = False,
    ) -> ua.NodeId:
        """Queue a read-only variable; ``property_of`` makes it a property of ``parent``, with
        its browse name in namespace 0."""
        nodeid = _node_id(node_id, self._ns)
        attrs = ua.VariableAttributes(
            DisplayName=ua.LocalizedText(name),
            Description=ua.LocalizedText(name),
            Value=value,
            DataType=_node_id(datatype),
            ValueRank=rank,
            # None (a scalar) is encoded as a null array; asyncua's annotation omits None.
            ArrayDimensions=dims,  # type: ignore[arg-type]
            AccessLevel=ua.AccessLevel.CurrentRead.mask,
            UserAccessLevel=ua.AccessLevel.CurrentRead.mask,
            WriteMask=0,
            UserWriteMask=0,
            Historizing=False,
        )
        if property_of:
            reference, typedef = ua.ObjectIds.HasProperty, ua.ObjectIds.PropertyType
        else:
            reference, typedef = ua.ObjectIds.HasComponent, ua.ObjectIds.BaseDataVariableType
        self._items.append(
            ua.AddNodesItem(
                ParentNodeId=parent,
                ReferenceTypeId=_node_id(reference),
                RequestedNewNodeId=nodeid,
                BrowseName=ua.QualifiedName(name, 0 if property_of else self._ns),
                NodeClass=ua.NodeClass.Variable,
                NodeAttributes=attrs,
                TypeDefinition=_node_id(typedef),
            )
        )
        return nodeid


def _value(value: float, source: datetime, server_ts: datetime, bad: bool = False) -> ua.DataValue:
    return _ScalarValue(
        Value=ua.Variant(float(value), _DOUBLE),
        StatusCode=_BAD if bad else _GOOD,
        SourceTimestamp=_ua_time(source),
        ServerTimestamp=_ua_time(server_ts),
    )
