"""Fixtures of the edge tests: one asyncua test server per module that asks for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.edge.opcua_server import UaTestServer
from tests.servers import free_port


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ua_server() -> AsyncIterator[UaTestServer]:
    """The OPC UA test server, shared by a module's tests (its start takes seconds)."""
    async with await UaTestServer.create(free_port()) as server:
        yield server
