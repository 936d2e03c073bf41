"""The MQTT and Sparkplug keys of a plant file: defaults, and errors that name the key path,
what is allowed and what was given; the agent builds a Sparkplug source from the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.agent import EdgeAgent
from edge.sparkplug_source import SparkplugSource
from models.configfile import ConfigError, parse_plant

EXAMPLE = (Path(__file__).resolve().parents[2] / "config" / "plant.example.yaml").read_text()
SPARKPLUG = """  sparkplug:
    - id: cab-meters
      group: cellwatch
      devices: ["cab*"]
      line: line1
      station: formation
      metrics: {power_kw: POWER}
"""


def with_sparkplug(param: str = "current") -> str:
    return EXAMPLE.replace("  sparkplug: []", SPARKPLUG.replace("POWER", param))


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_plant(text, "p.yaml")
    return [str(p).split(" ", 1)[1] for p in info.value.problems]


def test_the_example_documents_the_defaults() -> None:
    [src] = parse_plant(EXAMPLE).sources.mqtt
    assert (src.protocol, src.persistent_session, src.session_expiry_s) == ("3.1.1", True, 86400)
    assert src.broker is None and src.client_id is None and src.stale_after_s is None
    assert src.payload.elements == [] and src.payload.records is None


def test_a_sparkplug_source_is_built_by_the_agent() -> None:
    cfg = parse_plant(with_sparkplug(), "p.yaml")
    [spb] = cfg.sources.sparkplug
    assert (spb.nodes, spb.devices, spb.equipment, spb.persistent_session) == (
        ["*"],
        ["cab*"],
        "{device}",
        False,
    )
    agent = EdgeAgent(cfg)
    [src] = [s for s in agent.sources if isinstance(s, SparkplugSource)]
    assert src.session.client_id == "cellwatch-gw-line1-cab-meters"
    assert src.session.subscriptions == (("spBv1.0/cellwatch/#", 1),)


def test_a_sparkplug_metric_must_map_to_a_param_of_the_station() -> None:
    assert problems(with_sparkplug("power")) == [
        "sources.sparkplug[0].metrics.power_kw: must be one of the params of station "
        "line1/formation (capacity, cell_temperature, current, voltage), got 'power'"
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            '      protocol: "3.1.1"\n',
            "      protocol: 4\n",
            "sources.mqtt[0].protocol: must be one of '3.1.1' or '5', got '4'",
        ),
        (
            "      session_expiry_s: 86400\n",
            "      session_expiry_s: -1\n",
            "sources.mqtt[0].session_expiry_s: must be >= 0, got -1",
        ),
        (
            "      broker: null\n",
            "      broker: {url: 'mqtt://h:1883', tls: {ca_file: ca.pem}}\n",
            "sources.mqtt[0].broker.tls: needs an mqtts:// url (TLS is off on mqtt://), "
            "got 'a tls section'",
        ),
        (
            "      broker: null\n",
            "      broker: {url: 'mqtts://h', tls: {key_file: k.pem}}\n",
            "sources.mqtt[0].broker.tls.key_file: needs cert_file (the key's certificate), "
            "got 'k.pem'",
        ),
        (
            "      broker: null\n",
            "      broker: {url: 'http://h'}\n",
            "sources.mqtt[0].broker.url: must be a URL like mqtt://HOST:PORT, got 'http://h'",
        ),
        (
            "        elements: []\n",
            "        elements: [{param: voltage, path: v, equipment: 'ch'}]\n",
            "sources.mqtt[0].payload.elements[0].equipment: must contain {k} (or {k:02}) so that "
            "each element names its own, got 'ch'",
        ),
        (
            "        elements: []\n",
            "        elements: [{param: voltage, path: v, equipment: '{3}-{k}'}]\n",
            "sources.mqtt[0].payload.elements[0].equipment: may use {1}..{2} for the topic's 2 '+' "
            "levels, got '{3}-{k}'",
        ),
        (
            "        elements: []\n",
            "        elements: [{param: volts, path: v, equipment: '{k}'}]\n",
            "sources.mqtt[0].payload.elements[0].param: must be one of the params of station "
            "line1/formation (capacity, cell_temperature, current, voltage), got 'volts'",
        ),
    ],
)
def test_mqtt_key_errors_name_the_key_allowed_and_given(old: str, new: str, expected: str) -> None:
    assert old in EXAMPLE
    [got] = problems(EXAMPLE.replace(old, new, 1))
    assert got.split(": ", 1)[0] == expected.split(": ", 1)[0]
    assert got == expected


def test_protocol_5_may_be_written_as_a_number() -> None:
    cfg = parse_plant(EXAMPLE.replace('protocol: "3.1.1"', "protocol: 5"))
    assert cfg.sources.mqtt[0].protocol == "5"


def test_sparkplug_equipment_may_use_node_and_device_only() -> None:
    text = with_sparkplug().replace(
        "\n      metrics: {", "\n      equipment: '{line}'\n      metrics: {"
    )
    [got] = problems(text)
    assert got.startswith("sources.sparkplug[0].equipment: may use {node} and {device}")
