"""Fixtures of the server tests: plant configurations, an MQTT publisher, InfluxDB helpers."""

from __future__ import annotations

import itertools
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from models.plant import PlantConfig
from tests.servers import free_port, need_binary, victoria_metrics, wait_for

_prefixes = itertools.count(1)


def plant(broker_url: str, **sections: Any) -> PlantConfig:
    """A one-line plant on ``broker_url`` with a topic prefix unique to the caller."""
    body: dict[str, Any] = {
        "site": {"id": "plant1", "name": "Test plant"},
        "broker": {"url": broker_url, "topic_prefix": f"test{next(_prefixes)}/cw"},
        "server": {"host": "127.0.0.1", "port": 0, "db_path": ":memory:"},
        "influxdb": {"series_path": ":memory:"},
        "lines": [{"id": "line1", "area": "cells"}],
    }
    body.update(sections)
    return PlantConfig.model_validate(body)


class Publisher:
    """A paho client that publishes at QoS 1 and waits for the broker's PUBACK."""

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="")
        self.client.connect(u.hostname or "127.0.0.1", u.port or 1883)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=5)
        if not info.is_published():
            raise AssertionError(f"broker did not acknowledge a message on {topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(mosquitto_url: str) -> Iterator[Publisher]:
    pub = Publisher(mosquitto_url)
    try:
        yield pub
    finally:
        pub.close()


@contextmanager
def influxd_with(tmp: Path, http: str) -> Iterator[str]:
    """InfluxDB 1.x with extra ``[http]`` settings (authentication, a small body limit):
    what `tests.servers.influxd` starts, plus ``http``. Yields its URL."""
    binary = need_binary("influxd")
    port, rpc = free_port(), free_port()
    base = tmp / f"influxdb-{port}"
    for sub in ("meta", "data", "wal"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "influxdb.conf").write_text(
        f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc}"\n'
        f'[meta]\n  dir = "{base}/meta"\n'
        f'[data]\n  dir = "{base}/data"\n  wal-dir = "{base}/wal"\n  query-log-enabled = false\n'
        f'[http]\n  bind-address = "127.0.0.1:{port}"\n  log-enabled = false\n{http}\n'
        "[monitor]\n  store-enabled = false\n"
        "[continuous_queries]\n  enabled = false\n"
    )
    log = open(base / "influxd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [binary, "-config", str(base / "influxdb.conf")], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"

    def ping() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=0.5) as r:
                return r.status == 204
        except OSError:
            return False

    try:
        wait_for(ping, 30, "influxd", proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def influxql(url: str, db: str, q: str, auth: tuple[str, str] | None = None) -> list[dict]:
    """The series of an InfluxQL query (``epoch=ns``), or [] when it has none."""
    params = {"db": db, "q": q, "epoch": "ns"}
    r = httpx.post(f"{url}/query", params=params, auth=auth, timeout=30)
    r.raise_for_status()
    result = r.json()["results"][0]
    if "error" in result:
        raise AssertionError(f"InfluxQL error: {result['error']} in {q!r}")
    return result.get("series", [])


@pytest.fixture(scope="session")
def victoria_metrics_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a VictoriaMetrics shared by the session's tests (it accepts /api/v2/write)."""
    with victoria_metrics(Path(tmp_path_factory.mktemp("victoria-metrics"))) as (url, _):
        yield url


def vm_export(url: str, match: str) -> list[dict]:
    """Series stored in VictoriaMetrics matching ``match`` (after flushing its buffers)."""
    httpx.get(f"{url}/internal/force_flush", timeout=10).raise_for_status()
    r = httpx.post(f"{url}/api/v1/export", data={"match[]": match}, timeout=10)
    r.raise_for_status()
    return [json.loads(line) for line in r.text.splitlines() if line]
