"""Sparkplug B 3.0 topics and payloads: the codec shared by the edge host and the simulator.

Sparkplug B is how many plants publish meters and small devices, so both sides of cellwatch
speak it: the simulator's edge node writes it and the gateway's host source reads it. Both use
this one codec so they cannot disagree on the wire. The protobuf schema comes from the
``esio-spb-builder`` package (the ``cellwatch[sparkplug]`` extra); it is imported only when a
payload is encoded or decoded, so ``models`` and a gateway without Sparkplug sources work
without it. `require_codec` says clearly what is missing.

What is kept here is what a host relies on:

* topics ``spBv1.0/{group}/{NBIRTH|NDEATH|DBIRTH|DDEATH|NDATA|DDATA|NCMD|DCMD}/{node}[/{dev}]``;
* metrics carry a name and an alias in births and, in DATA messages, often the alias only and
  no datatype: `decode_payload` takes the alias -> datatype map of the birth to restore signed
  integers;
* a null value (``is_null``) decodes to None, as do DataSet and Template values, which are
  not decoded here;
* a payload that is not Sparkplug B raises ValueError with the reason, never anything else.

Timestamps in payloads are integer milliseconds since the epoch, as on the wire.

>>> parse_topic("spBv1.0/cellwatch/DDATA/line1-sim/meters")
SparkplugTopic(namespace='spBv1.0', group_id='cellwatch', message_type='DDATA', \
edge_node_id='line1-sim', device_id='meters')
>>> metric = SparkplugMetric("energy_kwh", 3, 1_700_000_000_000, DataType.Double, 12.5,
...                          {"engUnit": "kWh"})
>>> decoded = decode_payload(encode_payload(SparkplugPayload(1_700_000_000_000, 7, (metric,))))
>>> decoded.seq, decoded.metrics[0] == metric
(7, True)
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

__all__ = [
    "BD_SEQ",
    "ENG_UNIT",
    "MESSAGE_TYPES",
    "NAMESPACE",
    "NUMERIC",
    "PUBLISHABLE",
    "REBIRTH",
    "DataType",
    "MetricValue",
    "SparkplugMetric",
    "SparkplugPayload",
    "SparkplugTopic",
    "check_id",
    "datatype_name",
    "decode_payload",
    "encode_payload",
    "parse_topic",
    "require_codec",
    "sparkplug_topic",
]

#: Topic namespace of Sparkplug B.
NAMESPACE = "spBv1.0"
#: Message types of an edge node's topics (the host's STATE topic has another layout).
MESSAGE_TYPES = ("NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "DCMD")
#: Name of the birth/death sequence metric in NBIRTH and NDEATH.
BD_SEQ = "bdSeq"
#: Name of the node control metric a host sets true to ask for new births.
REBIRTH = "Node Control/Rebirth"
#: Metric property holding the engineering unit.
ENG_UNIT = "engUnit"

#: A decoded metric or property value (None for null or a type not decoded here).
MetricValue = bool | int | float | str | bytes | None


class DataType(IntEnum):
    """Metric and property datatypes of sparkplug_b.proto (enum DataType)."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    DataSet = 16
    Bytes = 17
    File = 18
    Template = 19
    PropertySet = 20
    PropertySetList = 21


_DT = DataType
#: Bits of the signed and unsigned integer types; up to 32 bits travel in ``int_value``.
_SIGNED_BITS: dict[int, int] = {_DT.Int8: 8, _DT.Int16: 16, _DT.Int32: 32, _DT.Int64: 64}
_UNSIGNED_BITS: dict[int, int] = {
    _DT.UInt8: 8,
    _DT.UInt16: 16,
    _DT.UInt32: 32,
    _DT.UInt64: 64,
    _DT.DateTime: 64,
}
_STRINGS = {_DT.String, _DT.Text, _DT.UUID}
_BYTES = {_DT.Bytes, _DT.File}
#: Scalar datatypes a numeric device value fits (what a publisher may declare).
PUBLISHABLE = frozenset({*_SIGNED_BITS, *_UNSIGNED_BITS, _DT.Float, _DT.Double, _DT.Boolean})
#: Datatypes whose values a host can turn into a number (DateTime is a time, not a measurement).
NUMERIC = PUBLISHABLE - {_DT.DateTime}


def datatype_name(datatype: int | None) -> str:
    """The datatype's name for messages, e.g. ``Double``; ``unknown`` for anything else.

    >>> datatype_name(10), datatype_name(99)
    ('Double', 'unknown')
    """
    try:
        return DataType(datatype).name if datatype is not None else "unknown"
    except ValueError:
        return "unknown"


def require_codec() -> Any:
    """The protobuf module of the Sparkplug B schema; ImportError naming the extra without it."""
    try:
        return importlib.import_module("esio_spb_builder.core.sparkplug_b_pb2")
    except ImportError as exc:
        raise ImportError(
            f"Sparkplug B needs the esio-spb-builder package ({exc.name} is missing): "
            "pip install 'cellwatch[sparkplug]'",
            name=exc.name,
        ) from None


@dataclass(frozen=True, slots=True)
class SparkplugMetric:
    """A metric as carried in a payload; ``value`` None is a null (or a type not decoded)."""

    name: str | None
    alias: int | None
    timestamp: int | None
    datatype: int | None
    value: MetricValue
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SparkplugPayload:
    """A Sparkplug B payload: send time (ms), sequence number (None in an NDEATH), metrics."""

    timestamp: int | None
    seq: int | None
    metrics: tuple[SparkplugMetric, ...] = ()


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    """The parts of an edge node's topic; ``device_id`` is None for node messages."""

    namespace: str
    group_id: str
    message_type: str
    edge_node_id: str
    device_id: str | None


def check_id(what: str, value: str) -> None:
    """ValueError unless ``value`` can be a group, edge node or device id (one topic level)."""
    if not value or any(c in value for c in "/+#"):
        raise ValueError(f"{what} must be non-empty without '/', '+' or '#', got {value!r}")


def sparkplug_topic(
    group_id: str, message_type: str, edge_node_id: str, device_id: str | None = None
) -> str:
    """Topic of a node (``device_id`` None) or device message.

    >>> sparkplug_topic("cellwatch", "NBIRTH", "line1-sim")
    'spBv1.0/cellwatch/NBIRTH/line1-sim'
    """
    if message_type not in MESSAGE_TYPES:
        raise ValueError(f"message_type must be one of {MESSAGE_TYPES}, got {message_type!r}")
    check_id("group_id", group_id)
    check_id("edge_node_id", edge_node_id)
    if message_type.startswith("D") != (device_id is not None):
        raise ValueError(
            f"{message_type} topics {'need' if device_id is None else 'take no'} "
            f"device_id, got {device_id!r}"
        )
    if device_id is None:
        return f"{NAMESPACE}/{group_id}/{message_type}/{edge_node_id}"
    check_id("device_id", device_id)
    return f"{NAMESPACE}/{group_id}/{message_type}/{edge_node_id}/{device_id}"


def parse_topic(topic: str) -> SparkplugTopic:
    """Split an edge node's Sparkplug B topic; a ValueError says what is wrong with it."""
    parts = topic.split("/")
    if parts[0] != NAMESPACE:
        raise ValueError(f"Sparkplug B topic {topic!r} must start with {NAMESPACE}/")
    if len(parts) >= 2 and parts[1] == "STATE":
        raise ValueError(f"topic {topic!r} is a host application's STATE topic, not a node's")
    if len(parts) < 4 or parts[2] not in MESSAGE_TYPES:
        raise ValueError(
            f"topic {topic!r} must look like {NAMESPACE}/GROUP/TYPE/EDGE_NODE[/DEVICE] "
            f"with TYPE one of {MESSAGE_TYPES}"
        )
    message_type = parts[2]
    expected = 5 if message_type.startswith("D") else 4
    if len(parts) != expected:
        raise ValueError(
            f"{message_type} topic {topic!r} must have {expected} levels, got {len(parts)}"
        )
    device = parts[4] if expected == 5 else None
    for what, value in (("group_id", parts[1]), ("edge_node_id", parts[3]), ("device_id", device)):
        if value is not None and (not value or "+" in value or "#" in value):
            raise ValueError(f"{what} in topic {topic!r} must be non-empty without wildcards")
    return SparkplugTopic(NAMESPACE, parts[1], message_type, parts[3], device)


def _set_value(msg: Any, datatype: int, value: MetricValue, where: str) -> None:
    """Put ``value`` in the protobuf value field of ``datatype`` (a Metric or PropertyValue)."""
    where = f"{where}: datatype {datatype} ({datatype_name(datatype)})"
    if datatype in _SIGNED_BITS or datatype in _UNSIGNED_BITS:
        signed = datatype in _SIGNED_BITS
        bits = _SIGNED_BITS[datatype] if signed else _UNSIGNED_BITS[datatype]
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{where} needs an int in {low}..{high}, got {value!r}")
        # Two's complement in the field's width (uint32 up to 32 bits, else uint64).
        if bits <= 32:
            msg.int_value = value & 0xFFFFFFFF
        else:
            msg.long_value = value & 0xFFFFFFFFFFFFFFFF
    elif datatype in (_DT.Float, _DT.Double):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where} needs a number, got {value!r}")
        if datatype == _DT.Float:
            msg.float_value = float(value)
        else:
            msg.double_value = float(value)
    elif datatype == _DT.Boolean:
        if not isinstance(value, bool):
            raise ValueError(f"{where} needs a bool, got {value!r}")
        msg.boolean_value = value
    elif datatype in _STRINGS:
        if not isinstance(value, str):
            raise ValueError(f"{where} needs a str, got {value!r}")
        msg.string_value = value
    elif datatype in _BYTES and hasattr(msg, "bytes_value"):
        if not isinstance(value, bytes):
            raise ValueError(f"{where} needs bytes, got {value!r}")
        msg.bytes_value = value
    else:
        raise ValueError(f"{where} is not encoded here")


def _get_value(msg: Any, datatype: int | None) -> MetricValue:
    """The value of a Metric or PropertyValue; integers are signed again by their datatype."""
    which = msg.WhichOneof("value")
    if which is None or msg.is_null:
        return None
    raw = getattr(msg, which)
    if which in ("int_value", "long_value"):
        bits = _SIGNED_BITS.get(datatype, 0) if datatype is not None else 0
        if bits:
            # The low ``bits`` bits are the value, whether the sender sign-extended to the
            # field width or not.
            raw &= (1 << bits) - 1
            if raw >= 1 << (bits - 1):
                raw -= 1 << bits
        return int(raw)
    if which in ("float_value", "double_value"):
        return float(raw)
    if which in ("boolean_value", "string_value", "bytes_value"):
        value: MetricValue = raw
        return value
    return None  # DataSet, Template and extensions are not decoded


def _property_value(value: Any, msg: Any, where: str) -> None:
    if isinstance(value, Mapping):
        msg.type = _DT.PropertySet
        _fill_properties(msg.propertyset_value, value, where)
    elif isinstance(value, bool):
        msg.type = _DT.Boolean
        msg.boolean_value = value
    elif isinstance(value, int):
        msg.type = _DT.Int64
        _set_value(msg, _DT.Int64, value, where)
    elif isinstance(value, float):
        msg.type = _DT.Double
        msg.double_value = value
    elif isinstance(value, str):
        msg.type = _DT.String
        msg.string_value = value
    else:
        raise ValueError(
            f"{where}: a property must be a bool, int, float, str or mapping, got {value!r}"
        )


def _fill_properties(pset: Any, properties: Mapping[str, Any], where: str) -> None:
    for key, value in properties.items():
        pset.keys.append(key)
        _property_value(value, pset.values.add(), f"{where} property {key!r}")


def _read_properties(pset: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in zip(pset.keys, pset.values, strict=False):
        if value.type == _DT.PropertySet:
            out[key] = _read_properties(value.propertyset_value)
        elif value.type == _DT.PropertySetList:
            out[key] = [_read_properties(p) for p in value.propertysets_value.propertyset]
        else:
            out[key] = _get_value(value, value.type)
    return out


def encode_payload(payload: SparkplugPayload, *, with_datatypes: bool = True) -> bytes:
    """Serialise ``payload``; ``with_datatypes`` False leaves the datatype out of each metric
    (the value still goes in the field its datatype names), as Sparkplug asks of DATA
    messages. A metric with value None is sent as null."""
    msg = require_codec().Payload()
    if payload.timestamp is not None:
        msg.timestamp = payload.timestamp
    if payload.seq is not None:
        msg.seq = payload.seq
    for m in payload.metrics:
        where = f"metric {m.name if m.name is not None else m.alias!r}"
        out = msg.metrics.add()
        if m.name is not None:
            out.name = m.name
        if m.alias is not None:
            out.alias = m.alias
        if m.timestamp is not None:
            out.timestamp = m.timestamp
        if m.datatype is None:
            raise ValueError(f"{where}: datatype is needed to encode a metric")
        if with_datatypes:
            out.datatype = m.datatype
        if m.value is None:
            out.is_null = True
        else:
            _set_value(out, m.datatype, m.value, where)
        if m.properties:
            _fill_properties(out.properties, m.properties, where)
    return bytes(msg.SerializeToString())


def decode_payload(data: bytes, datatypes: Mapping[int, int] | None = None) -> SparkplugPayload:
    """Parse a Sparkplug B payload. ``datatypes`` maps alias to datatype, from the birth, for
    metrics that carry none (as in DATA messages); without it their integers stay unsigned.

    Anything that is not a Sparkplug B payload raises ValueError with the reason.

    >>> try:
    ...     decode_payload(b"\\x0a\\x05")
    ... except ValueError as exc:
    ...     print(str(exc).split(":")[0])
    not a Sparkplug B payload
    """
    pb = require_codec()
    msg = pb.Payload()
    try:
        msg.ParseFromString(data)
    except Exception as exc:  # DecodeError, or RecursionError on absurd nesting
        raise ValueError(f"not a Sparkplug B payload: {exc}") from None
    metrics = []
    for m in msg.metrics:
        alias = m.alias if m.HasField("alias") else None
        if m.HasField("datatype"):
            datatype: int | None = m.datatype
        else:
            datatype = None if datatypes is None or alias is None else datatypes.get(alias)
        try:
            properties = _read_properties(m.properties) if m.HasField("properties") else {}
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"not a Sparkplug B payload: metric properties: {exc}") from None
        metrics.append(
            SparkplugMetric(
                name=m.name if m.HasField("name") else None,
                alias=alias,
                timestamp=m.timestamp if m.HasField("timestamp") else None,
                datatype=datatype,
                value=_get_value(m, datatype),
                properties=properties,
            )
        )
    return SparkplugPayload(
        timestamp=msg.timestamp if msg.HasField("timestamp") else None,
        seq=msg.seq if msg.HasField("seq") else None,
        metrics=tuple(metrics),
    )
