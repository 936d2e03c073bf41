"""An asyncua server for the edge tests: a few Double variables in ``urn:cellwatch:test``.

Address space (browse names in the test namespace, below Objects)::

    Line1/Coater/Lane01/ArealWeight   Line1/Coater/Lane02/ArealWeight
    Line1/Coater/Label (String)       node id s=Line1.Coater.WebSpeed
    Line1/Coater/Profile (Double[3], one element per lane)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Self

from asyncua import Server, ua
from asyncua.common.node import Node

NS = "urn:cellwatch:test"


class UaTestServer:
    """The test server; build it with `create` (slow: loads the standard address space),
    then ``async with`` it to listen. Building the next one while another still runs keeps
    restart tests short."""

    def __init__(self, server: Server, url: str, idx: int, nodes: dict[str, Node]) -> None:
        self.server = server
        self.url = url
        self.idx = idx
        self.nodes = nodes

    @classmethod
    async def create(cls, port: int, extra_namespaces: int = 0) -> UaTestServer:
        """A server for ``port``; ``extra_namespaces`` shifts the index of ``NS``."""
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/test")
        for i in range(extra_namespaces):
            await server.register_namespace(f"urn:cellwatch:other{i}")
        idx = await server.register_namespace(NS)
        line = await server.nodes.objects.add_object(idx, "Line1")
        coater = await line.add_object(idx, "Coater")
        nodes: dict[str, Node] = {}
        for lane in ("Lane01", "Lane02"):
            obj = await coater.add_object(idx, lane)
            nodes[lane] = await obj.add_variable(idx, "ArealWeight", 20.0, ua.VariantType.Double)
        nodes["WebSpeed"] = await coater.add_variable(
            ua.NodeId("Line1.Coater.WebSpeed", idx), "WebSpeed", 60.0, ua.VariantType.Double
        )
        nodes["Label"] = await coater.add_variable(idx, "Label", "ok", ua.VariantType.String)
        nodes["Profile"] = await coater.add_variable(
            idx, "Profile", [1.0, 2.0, 3.0], ua.VariantType.Double
        )
        return cls(server, f"opc.tcp://127.0.0.1:{port}/test", idx, nodes)

    async def __aenter__(self) -> Self:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()

    async def write(
        self, name: str, value: object, ts: float | None = None,
        status: int = ua.StatusCodes.Good, vtype: ua.VariantType = ua.VariantType.Double,
    ) -> None:
        """Write a value with a source timestamp (epoch seconds) and status code."""
        dv = ua.DataValue(
            ua.Variant(value, vtype),
            StatusCode=ua.StatusCode(status),
            SourceTimestamp=None if ts is None else datetime.fromtimestamp(ts, UTC),
        )
        await self.nodes[name].write_value(dv)
