"""A throwaway PKI for TLS tests: a CA, a server certificate for 127.0.0.1, client certificates.

Made with ``cryptography`` (asyncua depends on it) into a test's temporary directory, so no
test relies on certificates checked into the repository or on their expiry date.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True, slots=True)
class Pki:
    """PEM files: the CA, the broker's certificate and key, and a client's."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o644)  # the broker may read it after dropping root privileges
    return path


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
    names: tuple[str, ...] = ("127.0.0.1", "localhost"),
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(
    directory: Path,
    client: str = "edge-gw",
    server_names: tuple[str, ...] = ("127.0.0.1", "localhost"),
) -> Pki:
    """A CA, a broker certificate valid for ``server_names`` and a client certificate named
    ``client``, all signed by that CA, written as PEM files into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue("cellwatch test CA", ca_key, _name("cellwatch test CA"), ca_key, ca=True)
    files: dict[str, Path] = {}
    for role, cn in (("server", "127.0.0.1"), ("client", client)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(cn, key, ca_cert.subject, ca_key, server=role == "server", names=server_names)
        files[f"{role}_cert"] = directory / f"{role}.pem"
        files[f"{role}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{role}_key"] = _write_key(key, directory / f"{role}.key")
    ca = directory / "ca.pem"
    ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return Pki(
        ca, files["server_cert"], files["server_key"], files["client_cert"], files["client_key"]
    )


def other_ca(directory: Path) -> Path:
    """A CA that signed nothing the broker presents: trusting only it must fail the handshake."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue("some other CA", key, _name("some other CA"), key, ca=True)
    path = directory / "other-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path
