"""Array nodes: one notification carries a value per equipment (element k -> equipment k)."""

from __future__ import annotations

import logging
import math

import pytest
from asyncua import ua
from pydantic import TypeAdapter

from edge.opcua_source import OpcUaSource
from models.messages import Quality, SeriesKey
from models.plant import OpcUaNode
from tests.edge.opcua_server import UaTestServer
from tests.edge.test_opcua_source import config, take

PROFILE = {"browse_path": "Line1/Coater/Profile", "elements": "lane{k:02}", "param": "weight"}


def key(eq: str) -> SeriesKey:
    return SeriesKey("l1", "coater", eq, "weight")


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="module")
async def test_each_element_is_a_reading_of_its_equipment(ua_server: UaTestServer) -> None:
    server = ua_server
    await server.write("Profile", [1.0, 2.0, 3.0])
    async with OpcUaSource(config(server.url, [PROFILE])) as src:
        await eventually_connected(src)
        first = await take(src, 3)
        await server.write("Profile", [20.5, 21.0, 19.75], ts=1_800_000_000.25)
        got = await take(src, 3)
    assert [r.key for r in first] == [key("lane01"), key("lane02"), key("lane03")]
    assert [(r.key.equipment, r.value, r.ts) for r in got] == [
        ("lane01", 20.5, 1_800_000_000.25),
        ("lane02", 21.0, 1_800_000_000.25),
        ("lane03", 19.75, 1_800_000_000.25),
    ]
    assert all(r.quality is Quality.GOOD for r in got)
    assert src.rejected == 0


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="module")
async def test_a_bad_sample_without_an_array_marks_every_known_element_bad(
    ua_server: UaTestServer,
) -> None:
    server = ua_server
    await server.write("Profile", [1.0, 2.0, 3.0])
    async with OpcUaSource(config(server.url, [PROFILE])) as src:
        await eventually_connected(src)
        await take(src, 3)
        dv = ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure))
        await server.nodes["Profile"].write_value(dv)
        got = await take(src, 3)
    assert [r.key.equipment for r in got] == ["lane01", "lane02", "lane03"]
    assert all(r.quality is Quality.BAD and math.isnan(r.value) for r in got)


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="module")
async def test_a_scalar_where_an_array_belongs_is_rejected_and_counted(
    ua_server: UaTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = ua_server
    node = {"browse_path": "Line1/Coater/Lane01/ArealWeight", "elements": "x{k}", "param": "w"}
    await server.write("Profile", [1.0, 2.0, 3.0])
    with caplog.at_level(logging.WARNING, "cellwatch.edge.opcua"):
        async with OpcUaSource(config(server.url, [node, PROFILE])) as src:
            await eventually_connected(src)
            got = await take(src, 3)  # the profile's elements; the scalar gave nothing
            rejected = src.rejected
    assert [r.key.equipment for r in got] == ["lane01", "lane02", "lane03"]
    assert rejected == 1
    assert "elements need an array value" in caplog.text


async def eventually_connected(src: OpcUaSource) -> None:
    from tests.waiting import eventually

    await eventually(lambda: src.state == "connected", 10, "OPC UA source connected")


@pytest.mark.parametrize(
    ("node", "reason"),
    [
        ({"elements": "lane"}, "{k}"),
        ({"elements": "lane{k}{k}"}, "{k}"),
        ({"elements": "lane{j}"}, "{k}"),
        ({"elements": "lane{k:02}", "equipment": "lane01"}, "exactly one of equipment"),
        ({}, "exactly one of equipment"),
        ({"elements": "lane{k:zz}"}, "not a valid template"),
    ],
)
def test_element_templates_are_checked_at_load(node: dict, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("{", r"\{").replace("}", r"\}")):
        TypeAdapter(OpcUaNode).validate_python({"browse_path": "A/B", "param": "p", **node})
