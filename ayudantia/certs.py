"""A classroom CA and one certificate per role, with ``cryptography``: TLS with no setup.

Every role's certificate is signed by the class's own CA, names ``localhost``, ``127.0.0.1``,
``::1``, its role and each ``--host`` given (the LAN names and addresses its clients dial),
and serves both ways (server and client authentication), so the same files give TLS and
mutual TLS on every hop. A student's laptop gets its own client certificate from the same
CA (:func:`make_student`), and :func:`describe` reads back what a directory holds (names,
expiry, SHA-256 fingerprint) so a student can check the CA they were handed against the one
the teacher projects. Keys are ECDSA P-256 (fast to make and to use), written readable by
their owner only. A CA made here is for a classroom: whoever holds ``ca-key.pem`` can mint
certificates the class trusts.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES = ("profesor", "tareo", "docencio", "estudiante", "eco")
DEFAULT_DAYS = 30
LOOPBACK = ("localhost", "127.0.0.1", "::1")
STUDENT_PREFIX = "student-"
_STUDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


class CertsError(ValueError):
    """A request ``certs`` cannot honour (a bad name, a directory that is not a class's):
    the message is the one line the user sees."""


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
    subject: x509.Name,
    issuer: x509.Name,
    public: object,
    days: int,
    until: datetime.datetime | None = None,
) -> x509.CertificateBuilder:
    """A certificate valid from five minutes ago (clocks in a room differ) for ``days``,
    but never past ``until`` (its CA's end: a chain is only as valid as its CA)."""
    now = datetime.datetime.now(datetime.UTC)
    end = now + datetime.timedelta(days=days)
    if until is not None:
        end = min(end, until)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(end)
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
    names: tuple[str, ...] = LOOPBACK,
) -> RoleFiles:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in dict.fromkeys((*names, role)):
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


def host_name(text: str) -> str:
    """``text`` as a name a certificate can hold for a server: an IP address (written the
    standard way) or a DNS name; :class:`CertsError` for anything else.

    An unspecified, multicast or broadcast address is refused: no client dials 0.0.0.0, so
    a certificate naming it only hides the address that was meant. A wildcard is refused
    too: one laptop's certificate should not vouch for every host of a domain.
    """
    raw = text.strip()
    if raw.startswith("[") and raw.endswith("]"):
        raw = raw[1:-1]
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        labels = raw.removesuffix(".").split(".")
        if not raw or len(raw) > 253 or not all(_DNS_LABEL.fullmatch(x) for x in labels):
            raise CertsError(
                f"--host {text!r}: not a DNS name or an IP address (e.g. aula-3.local, "
                "192.0.2.10, fd00::10)"
            ) from None
        return raw.removesuffix(".").lower()
    if address.is_unspecified or address.is_multicast or str(address) == "255.255.255.255":
        raise CertsError(f"--host {text!r}: not an address a client connects to")
    return str(address)


def _class_file(name: str) -> bool:
    """Whether ``name`` is a file ``certs`` writes (so anything else in DIR is foreign)."""
    if name in ("ca.pem", "ca-key.pem"):
        return True
    stem = name.removesuffix(".pem")
    if stem == name:
        return False
    stem = stem.removesuffix("-key")
    if stem in ROLES:
        return True
    student = stem.removeprefix(STUDENT_PREFIX)
    return student != stem and _STUDENT.fullmatch(student) is not None


def foreign_files(directory: Path) -> list[str]:
    """The entries of ``directory`` that ``certs`` did not make, sorted: a class's directory
    holds only its own files, so a mistyped DIR (a home, a project) is refused rather than
    filled with keys."""
    if not directory.is_dir():
        return []
    return sorted(entry.name for entry in directory.iterdir() if not _class_file(entry.name))


def _refuse_foreign(directory: Path) -> None:
    foreign = foreign_files(directory)
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        shown = ", ".join(foreign[:3]) + more
        raise CertsError(
            f"{directory} holds files certs did not make ({shown}): choose a directory of "
            "its own for the class"
        )


def make_class(
    directory: Path,
    roles: tuple[str, ...] = ROLES,
    days: int = DEFAULT_DAYS,
    hosts: tuple[str, ...] = (),
) -> dict[str, RoleFiles]:
    """A new CA in ``directory`` and a certificate for each role; each role's files.

    Each role's certificate names the loopback names and every one of ``hosts`` (checked
    with :func:`host_name`), so the same files serve a class on one machine and on a LAN.
    Raises :class:`FileExistsError` before writing anything when one of the files is
    already there: replacing a class's CA silently would orphan every certificate it made;
    :class:`CertsError` when the directory holds files that are not a class's.
    """
    names_ok = tuple(host_name(h) for h in hosts)
    _refuse_foreign(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    names = ["ca.pem", "ca-key.pem", *(f"{r}{end}" for r in roles for end in (".pem", "-key.pem"))]
    taken = [name for name in names if os.path.lexists(directory / name)]
    if taken:
        raise FileExistsError(
            f"{directory} already holds {', '.join(taken)}: not overwriting a class's "
            "certificates (choose an empty directory)"
        )
    ca = make_ca(directory, days)
    san = (*LOOPBACK, *names_ok)
    return {role: make_role(directory, role, ca, days, san) for role in roles}


def student_name(text: str) -> str:
    """``text`` as a student's name for their certificate's file names: letters, digits,
    ``_``, ``.``, ``-``, up to 64, not ending in ``-key`` (that would read as another
    student's key file); :class:`CertsError` otherwise."""
    name = text.strip()
    if not _STUDENT.fullmatch(name) or name.endswith("-key"):
        raise CertsError(
            f"--student {text!r}: a name of letters, digits, '_', '.' or '-' (up to 64, "
            "starting with a letter or digit, not ending in -key), e.g. ana or grupo-3"
        )
    return name


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
    if not cert_path.is_file() or not key_path.is_file():
        raise CertsError(
            f"{directory} holds no class CA (ca.pem and ca-key.pem): make one first with "
            f"ayudantia certs {directory}"
        )
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise CertsError(f"{directory}: the CA files do not load ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise CertsError(f"{directory}: ca-key.pem is not the key of ca.pem")
    return cert, key


def make_student(directory: Path, name: str, days: int = DEFAULT_DAYS) -> RoleFiles:
    """A client certificate for one student's laptop, signed by the class's CA in
    ``directory``: ``student-NAME.pem`` and its key.

    Client authentication only: a stolen student certificate cannot pose as the Docencio.
    It never outlives the CA, and it is never reissued over an existing one
    (:class:`FileExistsError`): a second laptop with the same name would silently lock the
    first one's key out of nothing, and the teacher out of knowing which is which.
    """
    name = student_name(name)
    _refuse_foreign(directory)
    ca_cert, ca_key = _load_ca(directory)
    files = RoleFiles(
        directory / f"{STUDENT_PREFIX}{name}.pem",
        directory / f"{STUDENT_PREFIX}{name}-key.pem",
        directory / "ca.pem",
    )
    taken = [p.name for p in (files.cert, files.key) if os.path.lexists(p)]
    if taken:
        raise FileExistsError(
            f"{directory} already holds {', '.join(taken)}: not overwriting student "
            f"{name}'s certificate (choose another name)"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    until = ca_cert.not_valid_after_utc
    cert = (
        _builder(_name(name), ca_cert.subject, key.public_key(), days, until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(files.key, key)
    _write_cert(files.cert, cert)
    return files


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER bytes, as browsers and ``openssl x509 -fingerprint
    -sha256`` show it (``AB:CD:...``): what a student compares with the projected one."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def file_fingerprint(path: Path | str) -> str:
    """:func:`fingerprint` of the PEM certificate at ``path``."""
    return fingerprint(x509.load_pem_x509_certificate(Path(path).read_bytes()))


@dataclass(frozen=True)
class CertInfo:
    """What ``certs --show`` prints about one certificate file."""

    file: str
    subject: str
    is_ca: bool
    names: tuple[str, ...]
    expires: datetime.datetime
    sha256: str


def _info(path: Path, cert: x509.Certificate) -> CertInfo:
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(general.value) for general in alt)  # in the certificate's order
    except x509.ExtensionNotFound:
        names = ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return CertInfo(
        path.name,
        str(common[0].value) if common else cert.subject.rfc4514_string(),
        is_ca,
        names,
        cert.not_valid_after_utc,
        fingerprint(cert),
    )


def describe(where: Path) -> list[CertInfo]:
    """Every certificate in ``where`` (a class's directory, or one PEM file such as the
    ``ca.pem`` a student was handed), CA first; :class:`CertsError` for a directory with
    foreign files or a file that is not a certificate."""
    if where.is_file():
        paths = [where]
    elif where.is_dir():
        _refuse_foreign(where)
        paths = sorted(
            (p for p in where.glob("*.pem") if not p.name.endswith("-key.pem")),
            key=lambda p: (p.name != "ca.pem", p.name),
        )
    else:
        raise CertsError(f"{where}: no such file or directory")
    infos = []
    for path in paths:
        try:
            infos.append(_info(path, x509.load_pem_x509_certificate(path.read_bytes())))
        except ValueError:
            raise CertsError(f"{path}: not a PEM certificate") from None
    return infos
