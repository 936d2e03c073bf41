"""MQTT source over TLS against Mosquitto with a TLS listener, a password file made by
``mosquitto_passwd`` and ``require_certificate``; certificates are made by the test."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from edge.mqtt_source import MqttSource
from models.messages import Reading
from models.plant import MqttSource as MqttSourceConfig
from tests.edge.mqtt_publish import Device
from tests.edge.tls_files import Pki, make_pki, other_ca
from tests.servers import mosquitto_tls
from tests.waiting import eventually

pytestmark = pytest.mark.integration

USERS = {"edge": "s3cret-pw", "device": "dev-pw"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def config(root: str, broker: dict[str, Any], **extra: Any) -> MqttSourceConfig:
    return MqttSourceConfig.model_validate(
        {
            "id": "secure",
            "topic": f"{root}/+",
            "line": "l1",
            "station": "formation",
            "equipment": "{1}",
            "payload": {"values": {"voltage": "v"}},
            "broker": broker,
            "client_id": f"gw-{uuid.uuid4().hex[:8]}",
            **extra,
        }
    )


async def first(src: MqttSource) -> Reading:
    async with asyncio.timeout(10):
        return await anext(aiter(src))


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_tls_with_a_password_file(tmp_path: Path, pki: Pki, protocol: str) -> None:
    root = f"t/{uuid.uuid4().hex[:8]}"
    with mosquitto_tls(
        tmp_path, ca=pki.ca, cert=pki.server_cert, key=pki.server_key, passwords=USERS
    ) as (url, _):
        broker = {
            "url": url,
            "username": "edge",
            "password": USERS["edge"],
            "tls": {"ca_file": str(pki.ca)},
        }
        cfg = config(root, broker, protocol=protocol)
        async with (
            MqttSource(cfg, "mqtt://unused:1") as src,
            Device(
                url, ca=pki.ca, username="device", password=USERS["device"], protocol=protocol
            ) as dev,
        ):
            await eventually(lambda: src.state == "connected", 10, "TLS connection")
            await dev.publish(f"{root}/cab01", json.dumps({"ts": 5.0, "v": 3.7}))
            r = await first(src)
    assert (r.key.equipment, r.ts, r.value) == ("cab01", 5.0, 3.7)
    assert src.session.address == url


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"password": "wrong"}, "not authorized"),
        ({"username": None, "password": None}, "not authorized"),
        ({"tls": "other-ca"}, "certificate verify failed"),
    ],
)
async def test_refusals_show_in_the_status_and_never_raise(
    tmp_path: Path, pki: Pki, change: dict[str, Any], reason: str
) -> None:
    broker: dict[str, Any] = {
        "username": "edge",
        "password": USERS["edge"],
        "tls": {"ca_file": str(pki.ca)},
    }
    if change.get("tls") == "other-ca":
        change = {"tls": {"ca_file": str(other_ca(tmp_path / "other"))}}
    with mosquitto_tls(
        tmp_path, ca=pki.ca, cert=pki.server_cert, key=pki.server_key, passwords=USERS
    ) as (url, _):
        cfg = config("t/refused", {**broker, **change, "url": url})
        async with MqttSource(cfg) as src:
            await eventually(lambda: reason in src.last_error.lower(), 10, f"'{reason}'")
            assert src.state != "connected"
            assert src.session.connections == 0


async def test_a_broker_that_requires_a_client_certificate(tmp_path: Path, pki: Pki) -> None:
    root = f"t/{uuid.uuid4().hex[:8]}"
    with mosquitto_tls(
        tmp_path, ca=pki.ca, cert=pki.server_cert, key=pki.server_key, require_certificate=True
    ) as (url, _):
        tls = {
            "ca_file": str(pki.ca),
            "cert_file": str(pki.client_cert),
            "key_file": str(pki.client_key),
        }
        async with (
            MqttSource(config(root, {"url": url, "tls": tls})) as src,
            Device(url, ca=pki.ca, cert=pki.client_cert, key=pki.client_key) as dev,
        ):
            await eventually(lambda: src.state == "connected", 10, "connected with a cert")
            await dev.publish(f"{root}/cab02", json.dumps({"ts": 6.0, "v": 3.8}))
            r = await first(src)
        assert (r.key.equipment, r.value) == ("cab02", 3.8)
        without = config("t/nocert", {"url": url, "tls": {"ca_file": str(pki.ca)}})
        async with MqttSource(without) as refused:
            await eventually(lambda: refused.last_error, 10, "the refusal")
            assert refused.session.connections == 0
            assert refused.state != "connected"


@pytest.mark.parametrize("verify", [True, False])
async def test_a_certificate_for_another_name_is_refused_unless_told_otherwise(
    tmp_path: Path, verify: bool
) -> None:
    pki = make_pki(tmp_path / "pki", server_names=("broker.plant.example",))
    with mosquitto_tls(tmp_path, ca=pki.ca, cert=pki.server_cert, key=pki.server_key) as (url, _):
        tls = {"ca_file": str(pki.ca), "verify_hostname": verify}
        async with MqttSource(config("t/name", {"url": url, "tls": tls})) as src:
            if verify:
                await eventually(lambda: "mismatch" in src.last_error, 10, "the name check")
                assert src.session.connections == 0
            else:
                await eventually(lambda: src.state == "connected", 10, "connected")


def test_an_unusable_certificate_file_is_an_error_naming_the_key(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    cfg = config("t/x", {"url": "mqtts://127.0.0.1:8883", "tls": {"ca_file": missing}})
    with pytest.raises(ValueError, match=r"broker\.tls\.ca_file: cannot use '.*nope\.pem'"):
        MqttSource(cfg)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    cfg = config("t/x", {"url": "mqtts://127.0.0.1:8883", "tls": {"cert_file": str(garbage)}})
    with pytest.raises(ValueError, match=r"broker\.tls\.cert_file/key_file: cannot use"):
        MqttSource(cfg)
