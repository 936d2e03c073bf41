"""The Sparkplug B edge node: the payload codec and topics, then the session rules against a
real Mosquitto (births, data by alias, seq, rebirth, the will, graceful death, reconnection)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
from esio_spb_builder import MetricDataType as DT
from esio_spb_builder.core import sparkplug_b_pb2

from sim.sparkplug import (
    REBIRTH,
    MetricSpec,
    SparkplugMetric,
    SparkplugPayload,
    SparkplugPublisher,
    SparkplugTopic,
    decode_payload,
    encode_payload,
    parse_topic,
    sparkplug_topic,
)
from tests.servers import free_port, mosquitto
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
T_MS = 1_700_000_000_123
DEVICES = {
    "dryer_zone1": [MetricSpec("power_kw", "kW"), MetricSpec("energy_kwh", "kWh")],
    "cab01": [
        MetricSpec("power_kw", "kW"),
        MetricSpec("energy_kwh", "kWh"),
        MetricSpec("channels_on", "", DT.UInt8),
    ],
}


# --- codec and topics ------------------------------------------------------------------------


def test_every_publishable_datatype_survives_a_round_trip() -> None:
    cases = [
        (DT.Int8, -128),
        (DT.Int8, 127),
        (DT.Int16, -32768),
        (DT.Int32, -(2**31)),
        (DT.Int64, -(2**63)),
        (DT.Int64, 2**63 - 1),
        (DT.UInt8, 255),
        (DT.UInt16, 65535),
        (DT.UInt32, 2**32 - 1),
        (DT.UInt64, 2**64 - 1),
        (DT.DateTime, T_MS),
        (DT.Float, 0.5),
        (DT.Double, -1.0e-300),
        (DT.Boolean, True),
        (DT.String, "R00001"),
        (DT.Double, None),
    ]
    metrics = tuple(
        SparkplugMetric(f"m{k}", k + 1, T_MS + k, datatype, value, {"engUnit": "kW", "k": k})
        for k, (datatype, value) in enumerate(cases)
    )
    payload = SparkplugPayload(T_MS, 255, metrics)
    assert decode_payload(encode_payload(payload)) == payload


def test_data_messages_leave_datatypes_out_and_the_birth_restores_the_sign() -> None:
    metric = SparkplugMetric(None, 4, T_MS, DT.Int16, -2)
    data = encode_payload(SparkplugPayload(T_MS, 3, (metric,)), with_datatypes=False)
    (raw,) = decode_payload(data).metrics
    assert raw.datatype is None and raw.value == 2**32 - 2  # the uint32 field as sent
    (signed,) = decode_payload(data, datatypes={4: DT.Int16}).metrics
    assert signed == metric


@pytest.mark.parametrize("field_value", [0xFF, 0xFFFFFFFF])
def test_int8_decodes_whether_or_not_the_sender_sign_extended(field_value: int) -> None:
    msg = sparkplug_b_pb2.Payload()
    m = msg.metrics.add()
    m.name, m.datatype, m.int_value = "x", DT.Int8, field_value
    assert decode_payload(msg.SerializeToString()).metrics[0].value == -1


def test_nested_properties_round_trip() -> None:
    props = {"engUnit": "degC", "range": {"low": 0.0, "high": 250.0}, "ok": False}
    metric = SparkplugMetric("t", 1, T_MS, DT.Double, 120.0, props)
    assert decode_payload(encode_payload(SparkplugPayload(T_MS, 0, (metric,)))).metrics[0] == metric


def test_encoding_refuses_values_that_do_not_fit_and_names_the_metric() -> None:
    def encode(datatype: int | None, value: object) -> bytes:
        metric = SparkplugMetric("m", 1, T_MS, datatype, value)  # type: ignore[arg-type]
        return encode_payload(SparkplugPayload(T_MS, 0, (metric,)))

    with pytest.raises(
        ValueError, match=r"metric 'm': datatype 5 \(UInt8\) needs an int in 0..255, got 256"
    ):
        encode(DT.UInt8, 256)
    with pytest.raises(ValueError, match="needs an int"):
        encode(DT.Int32, 1.5)
    with pytest.raises(ValueError, match="needs a bool"):
        encode(DT.Boolean, 1)
    with pytest.raises(ValueError, match="needs a number"):
        encode(DT.Double, "1")
    with pytest.raises(ValueError, match="datatype is needed"):
        encode(None, 1.0)


def test_garbage_is_not_a_payload() -> None:
    with pytest.raises(ValueError, match="not a Sparkplug B payload"):
        decode_payload(b"\xff\xff\xff")


def test_topics_parse_into_their_parts() -> None:
    assert parse_topic("spBv1.0/g/NBIRTH/n") == SparkplugTopic("spBv1.0", "g", "NBIRTH", "n", None)
    assert parse_topic("spBv1.0/g/DDATA/n/cab01") == SparkplugTopic(
        "spBv1.0", "g", "DDATA", "n", "cab01"
    )
    assert sparkplug_topic("g", "DDEATH", "n", "d") == "spBv1.0/g/DDEATH/n/d"


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("spAv1.0/g/NBIRTH/n", r"must start with spBv1.0/"),
        ("spBv1.0/STATE/host", "STATE topic"),
        ("spBv1.0/g/NFOO/n", "TYPE one of"),
        ("spBv1.0/g/NBIRTH", "must look like"),
        ("spBv1.0/g/DDATA/n", r"DDATA topic .* must have 5 levels, got 4"),
        ("spBv1.0/g/NDATA/n/d", r"NDATA topic .* must have 4 levels, got 5"),
        ("spBv1.0//NDATA/n", "group_id in topic"),
        ("spBv1.0/g/DDATA/n/+", "device_id in topic"),
    ],
)
def test_malformed_topics_are_refused_with_the_reason(topic: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_topic(topic)


def test_topic_ids_must_be_usable() -> None:
    with pytest.raises(ValueError, match="DBIRTH topics need device_id"):
        sparkplug_topic("g", "DBIRTH", "n")
    with pytest.raises(ValueError, match="edge_node_id must be non-empty without"):
        sparkplug_topic("g", "NBIRTH", "a/b")


def test_bad_device_definitions_and_values_are_refused() -> None:
    with pytest.raises(ValueError, match=r"must be one of .*Double=10.*got 12 \(String\)"):
        MetricSpec("x", "kW", DT.String)
    with pytest.raises(ValueError, match="lists metric 'p' twice"):
        SparkplugPublisher("mqtt://127.0.0.1:1", devices={"d": [MetricSpec("p", "kW")] * 2})
    with pytest.raises(ValueError, match="device id must be non-empty"):
        SparkplugPublisher("mqtt://127.0.0.1:1", devices={"d#": [MetricSpec("p", "kW")]})
    pub = SparkplugPublisher("mqtt://127.0.0.1:1", devices=DEVICES)
    with pytest.raises(ValueError, match=r"device must be one of \['cab01', 'dryer_zone1'\]"):
        pub.publish("cab02", {"power_kw": 1.0}, 0.0)
    with pytest.raises(ValueError, match=r"has no metrics \['power'\]"):
        pub.publish("cab01", {"power": 1.0}, 0.0)
    with pytest.raises(ValueError, match="channels_on.*needs a whole number, got 1.5"):
        pub.publish("cab01", {"channels_on": 1.5}, 0.0)
    with pytest.raises(ValueError, match="finite epoch time"):
        pub.publish("cab01", {"power_kw": 1.0}, math.inf)
    # Not started: no session, so the message is dropped and counted, not raised.
    assert pub.publish("cab01", {"power_kw": 1.0}, 0.0) is False
    assert pub.counters["dropped"] == 1


# --- against Mosquitto ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Message:
    topic: SparkplugTopic
    payload: SparkplugPayload
    raw: bytes
    qos: int
    retain: bool


class _Host:
    """A paho client standing in for a Sparkplug host: records the group's messages in order."""

    def __init__(self, url: str, group: str) -> None:
        parts = urlsplit(url)
        self.group = group
        self.messages: list[_Message] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: c.subscribe(f"spBv1.0/{group}/#", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect_async(parts.hostname, parts.port)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        raw = bytes(msg.payload)
        message = _Message(parse_topic(msg.topic), decode_payload(raw), raw, msg.qos, msg.retain)
        with self.lock:
            self.messages.append(message)

    def snapshot(self, message_type: str | None = None) -> list[_Message]:
        with self.lock:
            return [
                m
                for m in self.messages
                if message_type is None or m.topic.message_type == message_type
            ]

    def command_rebirth(self, node: str, value: bool = True) -> None:
        metric = SparkplugMetric(REBIRTH, None, T_MS, DT.Boolean, value)
        payload = encode_payload(SparkplugPayload(T_MS, 0, (metric,)))
        self.client.publish(sparkplug_topic(self.group, "NCMD", node), payload, qos=0)


@contextmanager
def _host(url: str, group: str) -> Iterator[_Host]:
    host = _Host(url, group)
    host.client.loop_start()
    try:
        assert host.subscribed.wait(5), "subscription was not acknowledged"
        yield host
    finally:
        host.client.disconnect()
        host.client.loop_stop()


@asynccontextmanager
async def _node(
    url: str, group: str, clock: Callable[[], float] = time.time
) -> AsyncIterator[SparkplugPublisher]:
    publisher = SparkplugPublisher(url, group, "node1", devices=DEVICES, clock=clock)
    await publisher.start()
    try:
        yield publisher
    finally:
        await publisher.stop()


def _group() -> str:
    return f"g{uuid.uuid4().hex[:10]}"


def _births(host: _Host, n: int) -> list[_Message]:
    """The first ``n`` rounds of births (NBIRTH + one DBIRTH per device) once all are in."""
    births = [m for m in host.snapshot() if m.topic.message_type in ("NBIRTH", "DBIRTH")]
    return births if len(births) >= n * (1 + len(DEVICES)) else []


def _value(message: _Message, name: str) -> object:
    (metric,) = [m for m in message.payload.metrics if m.name == name]
    return metric.value


@pytest.mark.integration
async def test_a_session_starts_with_nbirth_then_a_dbirth_per_device(mosquitto_url: str) -> None:
    group = _group()
    with _host(mosquitto_url, group) as host:
        async with _node(mosquitto_url, group, clock=lambda: T_MS / 1000) as node:
            births = await eventually(lambda: _births(host, 1), 10, "the births")
            assert node.connected.is_set()
    nbirth, *dbirths = births
    assert nbirth.topic == SparkplugTopic("spBv1.0", group, "NBIRTH", "node1", None)
    assert nbirth.payload.seq == 0 and nbirth.payload.timestamp == T_MS
    assert [(m.name, m.datatype, m.value) for m in nbirth.payload.metrics] == [
        ("bdSeq", DT.Int64, 0),
        (REBIRTH, DT.Boolean, False),
    ]
    assert [(m.topic.device_id, m.payload.seq) for m in dbirths] == [
        ("dryer_zone1", 1),
        ("cab01", 2),
    ]
    aliases = []
    for birth in dbirths:
        specs = DEVICES[birth.topic.device_id or ""]
        assert [m.name for m in birth.payload.metrics] == [s.name for s in specs]
        for metric, spec in zip(birth.payload.metrics, specs, strict=True):
            assert metric.datatype == spec.datatype
            assert metric.value is None  # nothing published yet: an explicit null
            assert metric.timestamp == T_MS
            assert metric.properties == ({"engUnit": spec.unit} if spec.unit else {})
            assert metric.alias == node.alias(birth.topic.device_id or "", spec.name)
            aliases.append(metric.alias)
    assert len(set(aliases)) == len(aliases) == 5  # unique across the node
    # Births are QoS 0 and not retained, although the host subscribed at QoS 1.
    assert {(m.qos, m.retain) for m in births} == {(0, False)}


@pytest.mark.integration
async def test_ddata_carries_metrics_by_alias_with_their_timestamps(mosquitto_url: str) -> None:
    group = _group()
    with _host(mosquitto_url, group) as host:
        async with _node(mosquitto_url, group) as node:
            (_, dryer, cab) = await eventually(lambda: _births(host, 1), 10, "the births")
            assert node.publish("cab01", {"power_kw": 41.5, "channels_on": 7.0}, 1_700_000_000.25)
            assert node.publish("dryer_zone1", {"energy_kwh": math.nan}, 1_700_000_001.0)
            data = await eventually(lambda: host.snapshot("DDATA")[1:], 10, "two DDATA")
            counters = node.counters
    data = host.snapshot("DDATA")
    assert [m.topic.device_id for m in data] == ["cab01", "dryer_zone1"]
    assert [m.payload.seq for m in data] == [3, 4]  # after NBIRTH 0 and DBIRTHs 1, 2
    datatypes = {m.alias: m.datatype for m in cab.payload.metrics if m.alias is not None}
    names = {m.alias: m.name for m in (*cab.payload.metrics, *dryer.payload.metrics)}
    for metric in data[0].payload.metrics:
        assert metric.name is None and metric.datatype is None  # alias only
    cab_data = decode_payload(data[0].raw, datatypes)
    assert [(names[m.alias or 0], m.value, m.timestamp) for m in cab_data.metrics] == [
        ("power_kw", 41.5, 1_700_000_000_250),
        ("channels_on", 7, 1_700_000_000_250),
    ]
    (null,) = data[1].payload.metrics
    assert names[null.alias or 0] == "energy_kwh" and null.value is None
    assert counters["data"] == 2 and counters["metrics"] == 3 and counters["births"] == 3
    assert {(m.qos, m.retain) for m in data} == {(0, False)}


@pytest.mark.integration
async def test_seq_counts_every_message_and_wraps_after_255(mosquitto_url: str) -> None:
    group = _group()
    n = 300
    with _host(mosquitto_url, group) as host:
        async with _node(mosquitto_url, group) as node:
            await eventually(lambda: _births(host, 1), 10, "the births")
            for k in range(n):
                assert node.publish("dryer_zone1", {"power_kw": float(k)}, 1_700_000_000.0 + k)
            await eventually(lambda: len(host.snapshot("DDATA")) == n, 10, f"{n} DDATA")
        await eventually(lambda: host.snapshot("NDEATH"), 10, "the NDEATH")
    # NBIRTH, DBIRTHs, DDATA and the DDEATHs at stop count on; the NDEATH carries no seq.
    seqs = [m.payload.seq for m in host.snapshot()]
    total = 1 + len(DEVICES) + n + len(DEVICES)
    assert seqs == [k % 256 for k in range(total)] + [None]
    assert [_value_of(m) for m in host.snapshot("DDATA")] == [float(k) for k in range(n)]


def _value_of(message: _Message) -> object:
    (metric,) = message.payload.metrics
    return metric.value


@pytest.mark.integration
async def test_a_rebirth_request_republishes_the_births_with_current_values(
    mosquitto_url: str,
) -> None:
    group = _group()
    with _host(mosquitto_url, group) as host:
        async with _node(mosquitto_url, group) as node:
            await eventually(lambda: _births(host, 1), 10, "the births")
            node.publish("cab01", {"power_kw": 12.0, "energy_kwh": 3.5}, 1_700_000_000.0)
            await eventually(lambda: host.snapshot("DDATA"), 10, "the DDATA")
            host.command_rebirth("node1", value=False)  # not a request: ignored
            host.command_rebirth("node1")
            births = await eventually(lambda: _births(host, 2), 10, "the second births")
            node.publish("cab01", {"power_kw": 13.0}, 1_700_000_001.0)
            await eventually(lambda: len(host.snapshot("DDATA")) == 2, 10, "DDATA after rebirth")
            counters = node.counters
    first, again = births[:3], births[3:]
    assert [m.topic.message_type for m in again] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    assert len(host.snapshot("NBIRTH")) == 2  # the request with false did nothing
    assert _value(again[0], "bdSeq") == _value(first[0], "bdSeq") == 0  # same session
    assert [m.payload.seq for m in again] == [0, 1, 2]
    cab = again[2]
    assert cab.topic.device_id == "cab01"
    assert [(m.name, m.value) for m in cab.payload.metrics] == [
        ("power_kw", 12.0),
        ("energy_kwh", 3.5),
        ("channels_on", None),
    ]
    assert cab.payload.metrics[0].timestamp == 1_700_000_000_000
    assert host.snapshot("DDATA")[-1].payload.seq == 3
    assert counters["rebirths"] == 1 and counters["births"] == 6


_KILLED_NODE = """
import asyncio, sys
from sim.sparkplug import MetricSpec, SparkplugPublisher

async def main() -> None:
    node = SparkplugPublisher(sys.argv[1], sys.argv[2], "doomed",
                              devices={"d": [MetricSpec("p", "kW")]})
    await node.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.integration
async def test_the_will_announces_ndeath_with_the_session_bdseq(
    mosquitto_url: str, tmp_path: Path
) -> None:
    """The node runs in a process killed with SIGKILL: no DISCONNECT, so the broker must
    publish the will registered at CONNECT."""
    group = _group()
    script = tmp_path / "node.py"
    script.write_text(_KILLED_NODE)
    with _host(mosquitto_url, group) as host:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, str(script), mosquitto_url, group], env=env)
        try:
            nbirth = (await eventually(lambda: host.snapshot("NBIRTH"), 20, "the NBIRTH"))[0]
        finally:
            proc.kill()
            proc.wait()
        (death,) = await eventually(lambda: host.snapshot("NDEATH"), 10, "the NDEATH")
    assert death.topic == SparkplugTopic("spBv1.0", group, "NDEATH", "doomed", None)
    assert death.payload.seq is None
    assert [(m.name, m.datatype) for m in death.payload.metrics] == [("bdSeq", DT.Int64)]
    assert _value(death, "bdSeq") == _value(nbirth, "bdSeq")
    assert death.qos == 1  # the will is QoS 1: delivered at 1 to a QoS 1 subscriber
    # Not retained: a host subscribing now gets no NDEATH; its own marker, published after
    # its subscription, comes back first.
    with _host(mosquitto_url, group) as late:
        marker = encode_payload(SparkplugPayload(T_MS, 0))
        late.client.publish(sparkplug_topic(group, "NDATA", "marker"), marker, qos=1)
        await eventually(lambda: late.snapshot("NDATA"), 10, "the marker")
        assert late.snapshot("NDEATH") == []


@pytest.mark.integration
async def test_a_graceful_stop_sends_ddeaths_and_the_ndeath_itself(mosquitto_url: str) -> None:
    group = _group()
    with _host(mosquitto_url, group) as host:
        async with _node(mosquitto_url, group) as node:
            await eventually(lambda: _births(host, 1), 10, "the births")
            node.publish("cab01", {"power_kw": 1.0}, 1_700_000_000.0)
        await eventually(lambda: host.snapshot("NDEATH"), 10, "the NDEATH")
        assert not node.connected.is_set()
    tail = host.snapshot()[-3:]
    assert [(m.topic.message_type, m.topic.device_id) for m in tail] == [
        ("DDEATH", "dryer_zone1"),
        ("DDEATH", "cab01"),
        ("NDEATH", None),
    ]
    assert [m.payload.seq for m in tail] == [4, 5, None]  # after NBIRTH, 2 DBIRTH, 1 DDATA
    assert _value(tail[2], "bdSeq") == 0
    assert tail[2].qos == 1


@pytest.mark.integration
async def test_reconnecting_after_a_broker_restart_is_a_new_session(tmp_path: Path) -> None:
    port = free_port()
    group = _group()
    node = SparkplugPublisher(f"mqtt://127.0.0.1:{port}", group, "node1", devices=DEVICES)
    try:
        with mosquitto(tmp_path, port) as (url, _), _host(url, group) as host:
            await node.start()
            first = await eventually(lambda: _births(host, 1), 10, "the first births")
            node.publish("cab01", {"power_kw": 1.0}, 1_700_000_000.0)
            await eventually(lambda: host.snapshot("DDATA"), 10, "the DDATA")
        # The broker is gone: publishing neither raises nor blocks, and counts the drop.
        await eventually(lambda: not node.connected.is_set(), 5, "the disconnect")
        assert node.publish("cab01", {"power_kw": 2.0}, 1_700_000_001.0) is False
        assert node.counters["dropped"] == 1
        with mosquitto(tmp_path, port) as (url, _), _host(url, group) as host:
            assert not node.connected.is_set(), (
                "the node reconnected before the host subscribed (broker start took > 1 s)"
            )
            second = await eventually(lambda: _births(host, 1), 15, "the births after restart")
    finally:
        await node.stop()
    assert _value(first[0], "bdSeq") == 0
    assert _value(second[0], "bdSeq") == 1 == node.bd_seq
    assert [m.payload.seq for m in second] == [0, 1, 2]
    # The birth carries the value published while the broker was away.
    assert _value(second[2], "power_kw") == 2.0
