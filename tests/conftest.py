"""Shared fixtures: real Mosquitto and InfluxDB servers started on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import influxd, mosquitto


@pytest.fixture(scope="session")
def mosquitto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Mosquitto broker shared by the session's tests (use unique topics)."""
    with mosquitto(Path(tmp_path_factory.mktemp("mosquitto"))) as (url, _):
        yield url


@pytest.fixture(scope="session")
def influxdb_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of an InfluxDB 1.x server shared by the session's tests (use unique databases)."""
    with influxd(Path(tmp_path_factory.mktemp("influxdb"))) as (url, _):
        yield url
