"""OPC UA security against a real asyncua server with security on.

The server has its own certificate (made here) and offers only secured endpoints: the three
policies, each with Sign and SignAndEncrypt, and username/password logins. The source trusts
the server through its trust directory and keeps the client certificate it generated once.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from edge.opcua_security import SecurityError, client_identity
from edge.opcua_source import OpcUaSource
from models.configfile import ConfigError, parse_plant
from models.plant import OpcUaSource as OpcUaSourceConfig
from tests.edge.opcua_server import NS, UaTestServer
from tests.edge.opcua_servers import ALL_SECURE, UaServer, Users, build, server_pki
from tests.edge.test_opcua_source import connected, take
from tests.servers import free_port
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

USER, PASSWORD = "operator", "s3cret-pw"


@dataclass
class Secured:
    server: UaServer
    users: Users
    pki: Path
    server_cert: Path
    client_certs: list[bytes]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secured]:
    pki = tmp_path_factory.mktemp("pki")
    cert, key = server_pki(pki / "server")
    users = Users(USER, PASSWORD)
    server = await build(free_port(), policies=ALL_SECURE, pki=(cert, key), users=users)
    seen: list[bytes] = []

    async def record(client_cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
        seen.append(client_cert.public_bytes(Encoding.DER))  # and accept it

    server.server.set_certificate_validator(record)
    (pki / "trusted").mkdir()
    shutil.copy(cert, pki / "trusted" / "plc.der")
    async with server:
        yield Secured(server, users, pki, cert, seen)


def config(
    s: Secured,
    policy: str = "Basic256Sha256",
    mode: str = "SignAndEncrypt",
    password: str = PASSWORD,
    **extra: Any,
) -> OpcUaSourceConfig:
    return OpcUaSourceConfig.model_validate(
        {
            "id": "secure-plc",
            "endpoint": s.server.url,
            "namespace_uri": NS,
            "line": "l1",
            "station": "coater",
            "publishing_interval_ms": 20,
            "timeout_s": 3,
            "retry_max_s": 0.2,
            "username": USER,
            "password": password,
            "security": {
                "policy": policy,
                "mode": mode,
                "certificate": str(s.pki / "own" / "cert.der"),
                "private_key": str(s.pki / "own" / "private" / "key.pem"),
                "trust_dir": str(s.pki / "trusted"),
            },
            "nodes": [
                {
                    "browse_path": "Line1/Coater/Lane01/ArealWeight",
                    "equipment": "lane01",
                    "param": "weight",
                }
            ],
            **extra,
        }
    )


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
@pytest.mark.parametrize(
    "policy", ["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
)
async def test_every_policy_and_mode_carries_data(secured: Secured, policy: str, mode: str) -> None:
    async with OpcUaSource(config(secured, policy, mode)) as src:
        [initial] = await connected(src)
        ts = round(time.time(), 3)  # each case writes a sample of its own
        await secured.server.write("Lane01", 21.5, ts=ts)
        [r] = await take(src, 1)
    assert src.channel_security == f"{policy}/{mode}"
    assert (initial.key.equipment, r.value, r.ts) == ("lane01", 21.5, ts)


async def test_client_certificate_is_generated_once_and_kept_across_restarts(
    secured: Secured,
) -> None:
    cfg = config(secured)
    cert_path, key_path = Path(cfg.security.certificate), Path(cfg.security.private_key)
    secured.client_certs.clear()
    async with OpcUaSource(cfg) as first:
        await connected(first)
    cert, key = cert_path.read_bytes(), key_path.read_bytes()
    assert key_path.stat().st_mode & 0o777 == 0o600
    async with OpcUaSource(cfg) as restarted:  # a new agent process would do the same
        await connected(restarted)
    assert (cert_path.read_bytes(), key_path.read_bytes()) == (cert, key)
    # The server was shown the same certificate both times, so trusting it once is enough.
    assert secured.client_certs == [cert, cert]
    identity = await client_identity(cfg.security)
    assert identity.thumbprint == hashlib.sha1(cert).hexdigest().upper()
    san = (
        x509.load_der_x509_certificate(cert)
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert identity.application_uri in san.get_values_for_type(x509.UniformResourceIdentifier)


async def test_a_key_without_its_certificate_is_an_error_not_a_new_pair(
    tmp_path: Path, secured: Secured
) -> None:
    cfg = config(secured)
    sec = cfg.security.model_copy(
        update={"certificate": str(tmp_path / "cert.der"), "private_key": str(tmp_path / "key.pem")}
    )
    (tmp_path / "key.pem").write_bytes(b"the key the server knows")
    with pytest.raises(SecurityError, match=r"key.pem exists but .*cert.der does not"):
        await client_identity(sec)
    assert (tmp_path / "key.pem").read_bytes() == b"the key the server knows"
    assert not (tmp_path / "cert.der").exists()


async def test_untrusted_server_is_refused_clearly_until_its_certificate_is_trusted(
    secured: Secured,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="cellwatch.edge.opcua")
    trust = tmp_path / "trusted"
    trust.mkdir()
    cfg = config(secured)
    cfg = cfg.model_copy(
        update={"security": cfg.security.model_copy(update={"trust_dir": str(trust)})}
    )
    async with OpcUaSource(cfg) as src:
        await eventually(lambda: "not trusted" in src.last_error, 10, "the trust error")
        rejected = list((tmp_path / "rejected").glob("*.der"))
        assert [p.read_bytes() for p in rejected] == [secured.server_cert.read_bytes()]
        await eventually(lambda: src._failures >= 3, 10, "three refused attempts")
        assert src.state != "connected" and src.readings == 0
        # An operator trusts the server by moving the saved file; no restart needed.
        shutil.move(rejected[0], trust / rejected[0].name)
        await connected(src)
    msg = src.status().last_error
    assert msg == ""
    errors = [r for r in caplog.records if "not trusted" in r.getMessage()]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR  # once, not per attempt
    text = errors[0].getMessage()
    assert "CN=cellwatch test server" in text and "thumbprint" in text
    assert str(trust) in text and "rejected" in text


async def test_wrong_password_is_refused_and_reported_once(
    secured: Secured,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="cellwatch.edge.opcua")
    before = secured.users.refused
    async with OpcUaSource(config(secured, password="wrong")) as src:
        await eventually(lambda: secured.users.refused >= before + 3, 10, "three refusals")
        assert src.readings == 0 and src.state != "connected"
        assert src.status().last_error == (
            f"the server refused user '{USER}' (BadUserAccessDenied)"
        )
    refused = [r for r in caplog.records if "refused user" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.ERROR
    assert "wrong" not in caplog.text  # the password is never logged


async def test_a_policy_the_server_does_not_offer_is_named_with_what_it_offers(
    ua_server: UaTestServer,
    secured: Secured,
) -> None:
    cfg = config(secured, "Aes256_Sha256_RsaPss", "Sign")
    cfg = cfg.model_copy(update={"endpoint": ua_server.url})
    async with OpcUaSource(cfg) as src:
        await eventually(lambda: "offers no endpoint" in src.last_error, 10, "the error")
    assert src.last_error == (
        f"SecurityError: {ua_server.url} offers no endpoint with policy Aes256_Sha256_RsaPss "
        "and mode Sign; it offers None/None_"
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "security: {policy: Basic256Sha256}",
            "sources.opcua[0].security.mode: must be Sign or SignAndEncrypt with policy "
            "Basic256Sha256, got 'None'",
        ),
        (
            "security: {policy: Basic128Rsa15, mode: Sign}",
            "sources.opcua[0].security.policy: must be one of 'None', 'Basic256Sha256', "
            "'Aes128_Sha256_RsaOaep' or 'Aes256_Sha256_RsaPss', got 'Basic128Rsa15'",
        ),
        ("password: x", "sources.opcua[0].password: needs a username beside it"),
        (
            "nodes: [{node_id: a, equipment: e, param: p, deadband: -1}]",
            "sources.opcua[0].nodes[0].deadband: must be >= 0",
        ),
    ],
)
async def test_config_errors_name_the_key_what_is_allowed_and_what_was_given(
    source: str, message: str
) -> None:
    text = (
        "site: {id: p}\nlines: [{id: l, area: a, stations: [{id: s, params: [{id: p}]}]}]\n"
        "sources:\n  opcua:\n  - id: o\n    endpoint: opc.tcp://h:4840\n    line: l\n"
        "    station: s\n    nodes: [{node_id: a, equipment: e, param: p}]\n"
        f"    {source}\n"
    )
    if source.startswith("nodes:"):
        text = text.replace("    nodes: [{node_id: a, equipment: e, param: p}]\n", "")
    with pytest.raises(ConfigError) as info:
        parse_plant(text, "x.yaml")
    assert any(message in str(p) for p in info.value.problems), info.value.problems
