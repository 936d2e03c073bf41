"""OPC UA message security: the gateway's certificate, the server trust list, user identity.

Certificate friction is a known reason why collectors fail in plants: a client that makes a new
self-signed certificate at every start is rejected by the server again after each restart, and
a client that cannot be told to trust a server's self-signed certificate cannot connect at all.
Here:

* the client certificate and its key are generated once, when neither file exists, and then
  only read. One that exists without the other is an error, never overwritten. The pair is
  created with an atomic link, so two sources (or two agents) sharing the paths cannot tear it;
* the server certificate must be in the trust directory, or be issued by a CA certificate in
  it. The directory is read at every connect, so trusting a server takes effect at the next
  attempt without a restart. An untrusted certificate is refused with `SecurityError`, which
  names its subject and thumbprint, and is saved to ``rejected/`` beside the trust directory,
  so an operator trusts it by moving that file;
* username and password are set on the client. The password is never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import cert_gen, security_policies
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from models import plant

__all__ = ["ClientIdentity", "SecurityError", "client_identity", "secure", "trusted"]

log = logging.getLogger("cellwatch.edge.opcua")

POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
MODES = {
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}
#: Validity of a generated client certificate. Long on purpose: renewing it means every server
#: has to trust the new one, and gateways run unattended for years.
CERT_DAYS = 20 * 365
_CERT_SUFFIXES = (".der", ".pem", ".crt", ".cer")
_generate_lock = threading.Lock()


class SecurityError(Exception):
    """A secured connection cannot be made as configured; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """The gateway's certificate and key files and the application URI in the certificate."""

    certificate: Path
    private_key: Path
    application_uri: str
    thumbprint: str


def _thumbprint(der: bytes) -> str:
    return hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()


def _subject(cert: x509.Certificate) -> str:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cn:
        return cert.subject.rfc4514_string() or "(no subject)"
    value = cn[0].value
    return f"CN={value.decode() if isinstance(value, bytes) else value}"


def _write_new(path: Path, data: bytes, mode: int) -> bool:
    """Create ``path`` with ``data`` atomically; False when it exists already."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _load_or_generate(sec: plant.OpcUaSecurity) -> ClientIdentity:
    cert_path, key_path = Path(sec.certificate), Path(sec.private_key)
    with _generate_lock:
        have_cert, have_key = cert_path.is_file(), key_path.is_file()
        if have_cert != have_key:
            there, missing = (cert_path, key_path) if have_cert else (key_path, cert_path)
            raise SecurityError(
                f"{there} exists but {missing} does not; refusing to generate a new pair over "
                "it (a server that trusts the old certificate would reject a new one). "
                "Restore the missing file, or delete both to generate a new pair"
            )
        if not have_cert:
            host = socket.gethostname()
            uri = sec.application_uri or f"urn:{host}:cellwatch:edge"
            key = cert_gen.generate_private_key()
            cert = cert_gen.generate_self_signed_app_certificate(
                key,
                f"cellwatch edge {host}",
                {},
                [x509.UniformResourceIdentifier(uri), x509.DNSName(host)],
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
                days=CERT_DAYS,
            )
            der = cert.public_bytes(Encoding.DER)
            if _write_new(key_path, cert_gen.dump_private_key_as_pem(key), 0o600):
                if not _write_new(cert_path, der, 0o644):
                    raise SecurityError(f"{cert_path} appeared while generating its key")
                log.warning(
                    "generated the OPC UA client certificate %s (application URI %s, SHA-1 "
                    "thumbprint %s) and its key %s; servers must trust this certificate once",
                    cert_path,
                    uri,
                    _thumbprint(der),
                    key_path,
                )
        der = cert_path.read_bytes()
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        try:
            cert = x509.load_pem_x509_certificate(der)
        except ValueError:
            raise SecurityError(f"{cert_path} is not a DER or PEM certificate") from None
        der = cert.public_bytes(Encoding.DER)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if not uris:
        raise SecurityError(
            f"{cert_path} has no application URI (a URI subject alternative name); "
            "OPC UA servers reject such a certificate"
        )
    if sec.application_uri is not None and sec.application_uri not in uris:
        log.warning(
            "client certificate %s holds application URI %s, not the configured %s; using the "
            "certificate's",
            cert_path,
            uris[0],
            sec.application_uri,
        )
    if cert.not_valid_after_utc < datetime.now(UTC):
        log.error(
            "client certificate %s expired on %s; servers will reject it. Delete it and %s to "
            "generate a new pair",
            cert_path,
            cert.not_valid_after_utc,
            key_path,
        )
    return ClientIdentity(cert_path, key_path, uris[0], _thumbprint(der))


async def client_identity(sec: plant.OpcUaSecurity) -> ClientIdentity:
    """The gateway's certificate for ``sec``: loaded, or generated once when neither file exists."""
    return await asyncio.to_thread(_load_or_generate, sec)


def _first_cert(der_chain: bytes) -> bytes:
    """The leaf of a DER chain (a server may send its chain concatenated)."""
    if len(der_chain) < 4 or der_chain[0] != 0x30 or der_chain[1] != 0x82:
        return der_chain
    return der_chain[: int.from_bytes(der_chain[2:4], "big") + 4]


def _trust_list(trust_dir: Path) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    if not trust_dir.is_dir():
        return out
    for p in sorted(trust_dir.iterdir()):
        if p.suffix.lower() not in _CERT_SUFFIXES or not p.is_file():
            continue
        data = p.read_bytes()
        try:
            out.append(
                x509.load_pem_x509_certificate(data)
                if b"-----BEGIN" in data
                else x509.load_der_x509_certificate(data)
            )
        except ValueError:
            log.warning("trust list: %s is not a certificate; ignored", p)
    return out


def trusted(cert: x509.Certificate, trust_dir: Path) -> bool:
    """True when ``cert`` itself, or a CA certificate that issued it, is in ``trust_dir``."""
    der = cert.public_bytes(Encoding.DER)
    for t in _trust_list(trust_dir):
        if t.public_bytes(Encoding.DER) == der:
            return True
        if t.subject == cert.issuer:
            try:
                cert.verify_directly_issued_by(t)
                return True
            except (ValueError, TypeError, InvalidSignature):
                continue
    return False


def _reject(cert: x509.Certificate, trust_dir: Path) -> Path:
    der = cert.public_bytes(Encoding.DER)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", _subject(cert).removeprefix("CN="))[:60]
    path = trust_dir.parent / "rejected" / f"{name} [{_thumbprint(der)}].der"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(der)
    return path


def _check_server(der_chain: bytes, cfg: plant.OpcUaSource) -> bytes:
    der = _first_cert(der_chain)
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise SecurityError(f"{cfg.endpoint} sent a server certificate that is not DER") from None
    trust_dir = Path(cfg.security.trust_dir)
    what = f"server certificate {_subject(cert)} (SHA-1 thumbprint {_thumbprint(der)})"
    if not trusted(cert, trust_dir):
        saved = _reject(cert, trust_dir)
        raise SecurityError(
            f"{what} of {cfg.endpoint} is not trusted: neither it nor its issuer is in "
            f"{trust_dir}. It was saved as {saved}; move that file into {trust_dir} to trust "
            "this server"
        )
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise SecurityError(
            f"{what} of {cfg.endpoint} is valid only from {cert.not_valid_before_utc} to "
            f"{cert.not_valid_after_utc}"
        )
    return der


def _endpoint(
    endpoints: list[ua.EndpointDescription], cfg: plant.OpcUaSource
) -> ua.EndpointDescription:
    policy, mode = POLICIES[cfg.security.policy], MODES[cfg.security.mode]
    for ep in endpoints:
        if ep.SecurityPolicyUri == policy.URI and ep.SecurityMode == mode:
            return ep
    offered = sorted(
        {f"{ep.SecurityPolicyUri.rsplit('#', 1)[-1]}/{ep.SecurityMode.name}" for ep in endpoints}
    )
    raise SecurityError(
        f"{cfg.endpoint} offers no endpoint with policy {cfg.security.policy} and mode "
        f"{cfg.security.mode}; it offers {', '.join(offered) or 'none'}"
    )


async def secure(client: Client, cfg: plant.OpcUaSource) -> None:
    """Configure ``client`` (not yet connected) with the security and user of ``cfg``.

    For a secured policy this asks the server for its endpoints (a short unsecured exchange
    that OPC UA provides for exactly this), checks the server certificate against the trust
    list and raises `SecurityError` when the policy is not offered or the server not trusted.
    """
    if cfg.username is not None:
        client.set_user(cfg.username)
    if cfg.password is not None:
        client.set_password(cfg.password.get_secret_value())
    sec = cfg.security
    if sec.policy == "None":
        return
    identity = await client_identity(sec)
    client.application_uri = identity.application_uri
    endpoints = await asyncio.wait_for(client.connect_and_get_server_endpoints(), cfg.timeout_s)
    ep = _endpoint(endpoints, cfg)
    server_der = _check_server(ep.ServerCertificate or b"", cfg)
    await client.set_security(
        POLICIES[sec.policy],
        str(identity.certificate),
        str(identity.private_key),
        server_certificate=server_der,
        mode=MODES[sec.mode],
    )
