"""The whole simulator against a real Mosquitto: every stream it documents, and a ground truth
whose cell lists agree with the published genealogy and results."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest

from sim import CoatingTarget, Fault, FormationTarget, Simulator
from sim.sparkplug import decode_payload, parse_topic
from sim.web import WebModel
from tests.waiting import eventually

pytestmark = pytest.mark.integration

LANES, CABINETS, CHANNELS = 3, 2, 3
#: 200x: a 120 s formation slot takes 0.6 s of wall time, aging 0.3 s.
SPEED = 200.0
COAT_FAULT = Fault("mean_shift", 0.5, 2.5, CoatingTarget(2, "A"), magnitude=3.0)
CHANNEL_FAULT = Fault("calibration_offset", 1.0, 3.0, FormationTarget(1, 2, "voltage"), 0.01)


class _Recorder:
    """Collects every message on ``sim/line1/#`` and ``spBv1.0/#``."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: c.subscribe([("sim/line1/#", 1), ("spBv1.0/#", 0)])
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload))

    def on(self, prefix: str) -> list[tuple[str, bytes]]:
        with self.lock:
            return [(t, p) for t, p in self.messages if t.startswith(prefix)]


@contextmanager
def _recording(url: str) -> Iterator[_Recorder]:
    rec = _Recorder(url)
    rec.client.loop_start()
    try:
        assert rec.subscribed.wait(5), "subscription was not acknowledged"
        yield rec
    finally:
        rec.client.loop_stop()
        rec.client.disconnect()


@pytest.fixture(scope="module")
def run(mosquitto_url: str) -> dict[str, Any]:
    """One simulator run of about 4 s with both faults; what was published and recorded."""

    async def main() -> dict[str, Any]:
        with _recording(mosquitto_url) as rec:
            sim = Simulator(
                opcua_port=0,
                broker_url=mosquitto_url,
                seed=11,
                rate_hz=10.0,
                lanes=LANES,
                cabinets=CABINETS,
                channels=CHANNELS,
                fault=None,
                faults=[COAT_FAULT, CHANNEL_FAULT],
                speed=SPEED,
                sparkplug=True,
            )
            async with sim:
                await eventually(
                    lambda: (
                        sum(r["event"] == "end" for r in sim.truth) == 2
                        and sim.production["graded"] >= 40
                    ),
                    timeout=30,
                    what="both faults to end and 40 cells to be graded",
                )
                await eventually(
                    lambda: sim.samples_published["mqtt"] >= sim.samples_published["mqtt_queued"],
                    timeout=10,
                    what="the broker to acknowledge everything queued",
                )
                counters = sim.samples_published
                truth = sim.truth
                genealogy = sim.genealogy
                formation = sim.formation
                start_ts = sim.start_ts
            await eventually(
                lambda: rec.on("spBv1.0/cellwatch/NDEATH"), timeout=10, what="the NDEATH"
            )
            return {
                "messages": list(rec.messages),
                "counters": counters,
                "truth": truth,
                "genealogy": genealogy,
                "formation": formation,
                "start_ts": start_ts,
            }

    return asyncio.run(main())


def _json(run: dict[str, Any], prefix: str) -> list[tuple[str, dict[str, Any]]]:
    return [(t, json.loads(p)) for t, p in run["messages"] if t.startswith(prefix)]


def test_gauge_scans_carry_positions_weights_and_lane_averages(run: dict[str, Any]) -> None:
    scans = _json(run, "sim/line1/coater/gauge/")
    assert {t for t, _ in scans} == {
        "sim/line1/coater/gauge/sideA",
        "sim/line1/coater/gauge/sideB",
    }
    web = WebModel()
    for topic, body in scans:
        assert set(body) == {"ts", "te", "side", "roll", "md_m", "pos_mm", "aw", "lane_aw"}
        assert topic.endswith(body["side"]) and body["te"] > body["ts"]
        assert len(body["pos_mm"]) == len(body["aw"]) > 0 and len(body["lane_aw"]) == LANES
        assert body["pos_mm"] == sorted(body["pos_mm"])
        assert all(15.0 < w < 25.0 for w in body["aw"])
        position = web.position(body["ts"] - run["start_ts"])
        assert body["roll"] == position.roll_id
        assert body["md_m"] == pytest.approx(position.md_m, abs=1e-3)
    assert run["counters"]["scans"] == len(scans)


def test_cell_results_carry_their_genealogy(run: dict[str, Any]) -> None:
    results = _json(run, "sim/line1/formation/")
    results = [(t, b) for t, b in results if t.endswith("/result")]
    assert len(results) >= 40
    for topic, body in results:
        assert (
            topic == f"sim/line1/formation/cab{body['cabinet']:02d}/ch{body['channel']:02d}/result"
        )
        cut = run["genealogy"].electrode(body["n"])
        assert (body["roll"], body["lane"]) == (cut.roll_id, cut.lane)
        assert body["md_from"] == pytest.approx(cut.md_from_m, abs=1e-3)
        assert body["fce"] == pytest.approx(body["discharge_ah"] / body["charge_ah"], abs=1e-4)
        assert body["e_rec_wh"] < body["e_dis_wh"] < body["e_chg_wh"]
        slot = run["formation"].slot(body["n"])
        assert (slot.cabinet, slot.channel) == (body["cabinet"], body["channel"])
    assert len({b["cell"] for _, b in results}) == len(results), "a cell was published twice"


def test_grading_records_bin_every_formed_cell_once(run: dict[str, Any]) -> None:
    grades = _json(run, "sim/line1/grading/result")
    formed = {b["cell"] for t, b in _json(run, "sim/line1/formation/") if t.endswith("/result")}
    assert len(grades) >= 40
    assert {b["cell"] for _, b in grades} <= formed
    for _, body in grades:
        assert body["bin"] in ("A", "B", "C", "NG")
        assert bool(body["reasons"]) == (body["bin"] == "NG")
        days = body["aging_days"]
        k = (body["ocv1_v"] - body["ocv2_v"]) * 1000.0 / days
        # Each OCV is rounded to 10 uV: the difference is good to 0.01 mV over the days.
        assert body["k_mv_per_day"] == pytest.approx(k, abs=0.01 / days + 1e-4)


def test_energy_meters_are_a_sparkplug_edge_node(run: dict[str, Any]) -> None:
    births: dict[str, dict[str, int]] = {}
    energy: dict[str, list[float]] = {}
    types = [parse_topic(t).message_type for t, _ in run["messages"] if t.startswith("spBv1.0/")]
    assert types[0] == "NBIRTH" and types[-1] == "NDEATH"
    for topic, payload in run["messages"]:
        if not topic.startswith("spBv1.0/"):
            continue
        parts = parse_topic(topic)
        decoded = decode_payload(payload)
        if parts.message_type == "DBIRTH":
            assert parts.device_id is not None
            births[parts.device_id] = {m.name: m.alias for m in decoded.metrics if m.name}
        elif parts.message_type == "DDATA":
            assert parts.device_id in births, "data before its birth"
            alias = births[parts.device_id]["energy_kwh"]
            for m in decoded.metrics:
                if m.alias == alias:
                    energy.setdefault(parts.device_id, []).append(float(m.value))
    meters = {f"dryer_zone{z}" for z in range(1, 5)} | {f"cab{c:02d}" for c in (1, 2)}
    assert set(births) == meters
    for metrics in births.values():
        assert set(metrics) == {"power_kw", "energy_kwh", "export_kwh"}
    for name in meters:
        registers = energy[name]
        assert len(registers) >= 3 and registers == sorted(registers) and registers[-1] > 0


def test_ground_truth_names_the_cells_each_fault_reached(run: dict[str, Any]) -> None:
    start_ts = run["start_ts"]
    ends = {r["fault"]: r for r in run["truth"] if r["event"] == "end"}
    starts = {r["fault"]: r for r in run["truth"] if r["event"] == "start"}
    assert set(starts) == set(ends) == {0, 1}
    coat, chan = ends[0], ends[1]
    assert not coat["open"] and coat["affects"] == "product"
    assert coat["end_ts"] == pytest.approx(start_ts + COAT_FAULT.end_s)
    # Independently: lane 2's web coated between 0.5 s and 2.5 s (1 m/s) is run metres
    # 0.5..2.5; a cell's cut overlaps it when it starts before 2.5 and ends after 0.5.
    expected = []
    for n in range(200):
        cut = run["genealogy"].electrode(n)
        if cut.lane == 2 and cut.total_from_m < 2.5 and cut.total_to_m > 0.5:
            expected.append(run["genealogy"].cell_id(n))
    assert coat["cells"] == expected and expected
    # The channel fault: the published results of cab01/ch02 whose formation overlaps the
    # window are exactly the cells listed.
    lo, hi = start_ts + CHANNEL_FAULT.start_s, start_ts + CHANNEL_FAULT.end_s
    published = [
        b["cell"]
        for t, b in _json(run, "sim/line1/formation/cab01/ch02/result")
        if b["ts_start"] < hi and b["ts_end"] > lo
    ]
    assert chan["affects"] == "records" and chan["cells"] == published and published
