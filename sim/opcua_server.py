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
stale the way a disconnected sensor's does. Updates go straight to the address space
(``write_attribute_value``), which is cheap enough for dozens of nodes at several Hz.

The server clock (ServerStatus/CurrentTime) is advanced by the sample writes, at most once a
second, instead of by asyncua's own clock task: that task sleeps a full second between updates
and makes every shutdown wait for it, and the simulator promises to stop within two seconds.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import math
import socket
import time
from datetime import UTC, datetime

from asyncua import Node, Server, ua

from sim.coating import AREAL_WEIGHT, DRYER_ZONES, SIDES, WEB_SPEED, CoatingSample
from sim.error import SimError
from sim.nominal import Nominal

__all__ = ["ENDPOINT_PATH", "NAMESPACE_URI", "CoaterServer"]

log = logging.getLogger(__name__)

#: Path part of the endpoint URL: opc.tcp://HOST:PORT/cellwatch/sim.
ENDPOINT_PATH = "/cellwatch/sim"
#: Namespace of every simulator node id and browse name.
NAMESPACE_URI = "urn:cellwatch:sim"
#: Where engineering unit ids come from (UNECE Recommendation 20 codes).
_UNECE_URI = "http://www.opcfoundation.org/UA/units/un/cefact"
#: UNECE common codes of the units served; units without a code get UnitId -1 (none).
_UNECE_CODES = {"m/min": "2X", "degC": "CEL", "V": "VLT", "A": "AMP", "Ah": "AMH"}


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


class CoaterServer:
    """An asyncua server exposing a ``lanes``-lane coater; ``port=0`` picks a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 4840, lanes: int = 4) -> None:
        if not 0 <= port <= 65535:
            raise SimError(f"OPC UA port must be in 0..65535, got {port}")
        self.host = host
        self.port = port
        self.lanes = lanes
        self._server: Server | None = None
        self._ns = 0
        self._weights: list[list[ua.NodeId]] = []
        self._speed = ua.NodeId()
        self._zones: list[ua.NodeId] = []
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
        await self._build(server.nodes.objects)
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

    async def write(self, sample: CoatingSample) -> None:
        """Publish one coating sample: every variable gets the sample's source timestamp."""
        server = self._server
        if server is None:
            raise RuntimeError("CoaterServer.write() called before start()")
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
        if time.monotonic() - self._clock_at >= 1.0:
            self._clock_at = time.monotonic()
            await self._advance_clock(server, server_ts)

    @staticmethod
    async def _advance_clock(server: Server, now: datetime) -> None:
        """Set ServerStatus.CurrentTime (the structure and its component variable) to ``now``."""
        status_node = server.get_node(ua.NodeId(ua.ObjectIds.Server_ServerStatus))
        status = await status_node.read_value()
        if status is not None:
            await status_node.write_value(dataclasses.replace(status, CurrentTime=now))
        time_node = server.get_node(ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime))
        await time_node.write_value(now, ua.VariantType.DateTime)

    async def _build(self, objects: Node) -> None:
        line = await self._object(objects, "Line1", "Line1")
        coater = await self._object(line, "Line1.Coater", "Coater")
        self._weights = []
        for lane in range(1, self.lanes + 1):
            lane_id = f"Line1.Coater.Lane{lane:02d}"
            lane_node = await self._object(coater, lane_id, f"Lane{lane:02d}")
            sides = []
            for side in SIDES:
                side_node = await self._object(lane_node, f"{lane_id}.Side{side}", f"Side{side}")
                sides.append(
                    await self._variable(
                        side_node, f"{lane_id}.Side{side}.ArealWeight", "ArealWeight", AREAL_WEIGHT
                    )
                )
            self._weights.append(sides)
        self._speed = await self._variable(coater, "Line1.Coater.WebSpeed", "WebSpeed", WEB_SPEED)
        dryer = await self._object(coater, "Line1.Coater.Dryer", "Dryer")
        self._zones = []
        for number, nominal in enumerate(DRYER_ZONES, start=1):
            zone_id = f"Line1.Coater.Dryer.Zone{number}"
            zone = await self._object(dryer, zone_id, f"Zone{number}")
            self._zones.append(
                await self._variable(zone, f"{zone_id}.Temperature", "Temperature", nominal)
            )

    async def _object(self, parent: Node, node_id: str, name: str) -> Node:
        return await parent.add_object(
            ua.NodeId(node_id, self._ns), ua.QualifiedName(name, self._ns)
        )

    async def _variable(self, parent: Node, node_id: str, name: str, nominal: Nominal) -> ua.NodeId:
        """Add a Double variable with its unit and range; the standard property browse names
        (EngineeringUnits, EURange) stay in namespace 0, where OPC UA Part 8 defines them."""
        var = await parent.add_variable(
            ua.NodeId(node_id, self._ns),
            ua.QualifiedName(name, self._ns),
            nominal.mean,
            ua.VariantType.Double,
        )
        units = ua.EUInformation(
            NamespaceUri=_UNECE_URI,
            UnitId=_unit_id(nominal.unit),
            DisplayName=ua.LocalizedText(nominal.unit),
            Description=ua.LocalizedText(nominal.unit),
        )
        await var.add_property(
            ua.NodeId(f"{node_id}.EngineeringUnits", self._ns),
            ua.QualifiedName("EngineeringUnits", 0),
            units,
            ua.VariantType.ExtensionObject,
            ua.ObjectIds.EUInformation,
        )
        await var.add_property(
            ua.NodeId(f"{node_id}.EURange", self._ns),
            ua.QualifiedName("EURange", 0),
            ua.Range(Low=nominal.low, High=nominal.high),
            ua.VariantType.ExtensionObject,
            ua.ObjectIds.Range,
        )
        return var.nodeid


def _value(
    value: float, source: datetime, server_ts: datetime, bad: bool = False
) -> ua.DataValue:
    status = ua.StatusCodes.BadSensorFailure if bad else ua.StatusCodes.Good
    return ua.DataValue(
        Value=ua.Variant(float(value), ua.VariantType.Double),
        StatusCode=ua.StatusCode(status),
        SourceTimestamp=source,
        ServerTimestamp=server_ts,
    )
