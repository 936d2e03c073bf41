"""The whole path with real parts: simulator -> edge agent -> Mosquitto -> server -> InfluxDB 1.x.

The simulator's OPC UA server (asyncua), Debian's Mosquitto and InfluxDB run on free loopback
ports. The simulator runs at 10 Hz and shifts lane 3 side A areal weight by +1.5 sigma at +8 s;
the edge learns each series' baseline from its first 50 samples, so Phase I ends before the
fault. The test asserts the drift is detected on the right series after the fault started and
not before, that nothing else alarms (EWMA lam 0.1, L 5.0: in-control ARL about 2.4 million
samples, so a false alarm among the ~1,500 monitored samples here has probability well under
1 %), and that the points are in InfluxDB, read back with InfluxQL.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from edge.agent import EdgeAgent
from models.configfile import parse_plant
from models.plant import PlantConfig
from server.app import CentralServer
from sim import FaultSpec, Simulator
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
FAULT_TAG = "line1/coater/lane03_A/areal_weight"

pytestmark = pytest.mark.integration


def plant_for_test(
    endpoint: str, broker: str, influx: str | None, db: Path, baseline: int
) -> PlantConfig:
    """The example plant with its ports, storage and Phase I length changed for a fast run."""
    text = (ROOT / "config" / "plant.example.yaml").read_text()
    text = text.replace("baseline: 60", f"baseline: {baseline}")
    cfg = parse_plant(text, "plant.example.yaml")
    sources = cfg.sources.model_copy(
        update={"opcua": [s.model_copy(update={"endpoint": endpoint}) for s in cfg.sources.opcua]}
    )
    return cfg.model_copy(
        update={
            "edge": cfg.edge.model_copy(update={"window_s": 0.2, "status_interval_s": 1.0}),
            "broker": cfg.broker.model_copy(update={"url": broker}),
            "server": cfg.server.model_copy(update={"port": 0, "db_path": str(db)}),
            "influxdb": cfg.influxdb.model_copy(
                update={"url": influx, "database": "e2e", "flush_interval_s": 0.2}
            ),
            "sources": sources,
        }
    )


def influxql(url: str, db: str, q: str) -> list[list]:
    query = urllib.parse.urlencode({"db": db, "q": q})
    with urllib.request.urlopen(f"{url}/query?{query}", timeout=10) as r:
        body = json.load(r)
    series = body["results"][0].get("series", [])
    return series[0]["values"] if series else []


async def test_drift_travels_from_simulator_to_alert_and_influxdb(
    mosquitto_url: str, influxdb_url: str, tmp_path: Path
) -> None:
    async with Simulator(
        opcua_port=0,
        broker_url=mosquitto_url,
        seed=7,
        rate_hz=10.0,
        fault=FaultSpec(start_s=8.0),
    ) as sim:
        cfg = plant_for_test(sim.endpoint, mosquitto_url, influxdb_url, tmp_path / "a.sqlite", 50)
        async with CentralServer(cfg) as server, EdgeAgent(cfg) as agent:

            def fault_alerts() -> list[dict]:
                return [a for a in server.counters()["alerts"] if a["tag"] == FAULT_TAG]

            await eventually(lambda: fault_alerts(), 40, "the lane03_A drift alert")
            fault_start = sim.truth[0]["start_ts"]
            alert = fault_alerts()[0]
            assert alert["rule"] == "ewma"
            assert alert["first_ts"] >= fault_start
            # 1.5 sigma with lam 0.1, L 5.0: ARL 14.1 samples at 10 Hz; 10 s is far in the tail.
            assert alert["first_ts"] - fault_start < 10.0
            others = [a for a in server.counters()["alerts"] if a["tag"] != FAULT_TAG]
            assert others == []
            edge = agent.counters()
            assert edge["readings"]["coater-plc"] > 0
            assert edge["readings"]["formation-cabinets"] > 0

            def stored() -> bool:
                rows = influxql(
                    influxdb_url,
                    "e2e",
                    "SELECT count(value) FROM detection WHERE equipment = 'lane03_A'",
                )
                return bool(rows) and rows[0][1] >= 1

            await eventually(stored, 20, "the detection point in InfluxDB")

    rows = influxql(
        influxdb_url,
        "e2e",
        "SELECT count(value) FROM telemetry WHERE equipment = 'lane03_A' "
        "AND param = 'areal_weight'",
    )
    assert rows and rows[0][1] > 50
    mqtt_rows = influxql(
        influxdb_url,
        "e2e",
        "SELECT count(value) FROM telemetry WHERE station = 'formation' "
        "AND param = 'cell_temperature'",
    )
    assert mqtt_rows and mqtt_rows[0][1] > 0
    # The shifted series really is shifted in storage: +1.5 sigma = +0.15 mg/cm2, within four
    # standard errors of a difference of two means (sigma 0.1).
    ns = int(fault_start * 1e9)
    where = "FROM telemetry WHERE equipment = 'lane03_A'"
    n1, m1 = influxql(
        influxdb_url, "e2e", f"SELECT count(value), mean(value) {where} AND time < {ns}"
    )[0][1:]
    n2, m2 = influxql(
        influxdb_url, "e2e", f"SELECT count(value), mean(value) {where} AND time >= {ns}"
    )[0][1:]
    se = 0.1 * (1 / n1 + 1 / n2) ** 0.5
    assert abs((m2 - m1) - 0.15) < 4 * se, (n1, m1, n2, m2)
