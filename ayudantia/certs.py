"""A classroom CA and one certificate per role, with ``cryptography``: TLS with no setup.

Every certificate is signed by the class's own CA, names ``localhost``, ``127.0.0.1``, ``::1``
and its role, and serves both ways (server and client authentication), so the same files
give TLS and mutual TLS on every hop. Keys are ECDSA P-256 (fast to make and to use),
written readable by their owner only. A CA made here is for a classroom: whoever holds
``ca-key.pem`` can mint certificates the class trusts.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES = ("profesor", "tareo", "docencio", "estudiante", "eco")
DEFAULT_DAYS = 30


@dataclass(frozen=True)
class RoleFiles:
    """The three files a role passes as ``--tls-cert``, ``--tls-key`` and ``--tls-ca``."""

    cert: Path
    key: Path
    ca: Path

    def flags(self) -> list[str]:
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key), "--tls-ca", str(self.ca)]


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ayudantia"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode``; never through a symlink, never over an existing file
    (``O_TRUNC`` kept an old file's mode: a new private key could land world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(path, data, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write_new(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _builder(
    subject: x509.Name, issuer: x509.Name, public: object, days: int
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def make_ca(
    directory: Path, days: int = DEFAULT_DAYS
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("ayudantia classroom CA")
    cert = (
        _builder(name, name, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(directory / "ca-key.pem", key)
    _write_cert(directory / "ca.pem", cert)
    return cert, key


def make_role(
    directory: Path,
    role: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    days: int = DEFAULT_DAYS,
    names: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
) -> RoleFiles:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in (*names, role):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        _builder(_name(role), ca_cert.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = RoleFiles(
        directory / f"{role}.pem", directory / f"{role}-key.pem", directory / "ca.pem"
    )
    _write_key(files.key, key)
    _write_cert(files.cert, cert)
    return files


def make_class(
    directory: Path, roles: tuple[str, ...] = ROLES, days: int = DEFAULT_DAYS
) -> dict[str, RoleFiles]:
    """A new CA in ``directory`` and a certificate for each role; each role's files.

    Raises :class:`FileExistsError` before writing anything when one of the files is
    already there: replacing a class's CA silently would orphan every certificate it made.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    names = ["ca.pem", "ca-key.pem", *(f"{r}{end}" for r in roles for end in (".pem", "-key.pem"))]
    taken = [name for name in names if os.path.lexists(directory / name)]
    if taken:
        raise FileExistsError(
            f"{directory} already holds {', '.join(taken)}: not overwriting a class's "
            "certificates (choose an empty directory)"
        )
    ca = make_ca(directory, days)
    return {role: make_role(directory, role, ca, days) for role in roles}
