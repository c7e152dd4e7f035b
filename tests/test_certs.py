"""``ayudantia certs`` for a room: --host names, --student client certificates, --show.

Real certificate files (read back with ``cryptography``), real processes and a real TLS
handshake: the eco binds 127.0.0.2 (loopback is all of 127/8 on Linux), an address only a
``--host`` puts in its certificate, as a LAN address would be.
"""

from __future__ import annotations

import os
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from procs import ayudantia_cmd, running

from protocol.errors import TlsFailed
from protocol.tls import TlsSettings
from roles.wire import WireSettings

KEY = "clave"
ROOM = "127.0.0.2"


def certs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ayudantia_cmd("certs", *args), capture_output=True, text=True, timeout=60)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(path: Path) -> list[str]:
    ext = load(path).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return [str(name.value) for name in ext.value]


def tls(d: Path, who: str) -> TlsSettings:
    return TlsSettings(str(d / f"{who}.pem"), str(d / f"{who}-key.pem"), str(d / "ca.pem"))


def flags(d: Path, who: str) -> list[str]:
    files = tls(d, who)
    return ["--tls-cert", files.cert, "--tls-key", files.key, "--tls-ca", files.ca]


def ask_eco(port: int, client: TlsSettings, host: str = ROOM) -> object:
    """One message to the eco over mutual TLS with the keyed handshake; its echo."""
    with WireSettings(key=KEY.encode(), tls=client).connect(host, port) as conn:
        conn.send({"hola": "aula"})
        return conn.recv()


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> Path:
    """``certs DIR --host 127.0.0.2 --host aula-3.local`` once for the module."""
    d = tmp_path_factory.mktemp("room") / "class"
    made = certs(str(d), "--host", ROOM, "--host", "Aula-3.local", "--host", "[fd00::10]")
    assert made.returncode == 0, made.stderr
    return d


@pytest.mark.timeout(60)
def test_host_adds_names_and_loopback_stays(room):
    for role in ("profesor", "tareo", "docencio", "estudiante", "eco"):
        names = sans(room / f"{role}.pem")
        assert names == ["localhost", "127.0.0.1", "::1", ROOM, "aula-3.local", "fd00::10", role]
    assert (room / "eco-key.pem").stat().st_mode & 0o077 == 0


@pytest.mark.timeout(60)
def test_a_role_bound_on_a_host_address_passes_the_handshake_only_with_host(room, tmp_path):
    env = {"AYUDANTIA_KEY": KEY}
    with running("eco", "--host", ROOM, "--port", "0", *flags(room, "eco"), env=env) as eco:
        assert eco.host == ROOM
        assert ask_eco(eco.port, tls(room, "estudiante")) == {"hola": "aula"}
    plain = tmp_path / "plain"  # the same without --host: the client refuses the address
    assert certs(str(plain)).returncode == 0
    with (
        running("eco", "--host", ROOM, "--port", "0", *flags(plain, "eco"), env=env) as eco,
        pytest.raises(TlsFailed, match="IP address mismatch"),
    ):
        ask_eco(eco.port, tls(plain, "estudiante"))


@pytest.mark.timeout(60)
def test_a_students_certificate_joins_and_is_never_overwritten(room):
    made = certs(str(room), "--student", "ana")
    assert made.returncode == 0, made.stderr
    cert = room / "student-ana.pem"
    assert f"--tls-cert {cert}" in made.stdout
    issued = load(cert)
    eku = issued.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]  # a client: it cannot pose as a role
    assert issued.not_valid_after_utc <= load(room / "ca.pem").not_valid_after_utc
    assert (room / "student-ana-key.pem").stat().st_mode & 0o077 == 0
    env = {"AYUDANTIA_KEY": KEY}
    with running("eco", "--host", ROOM, "--port", "0", *flags(room, "eco"), env=env) as eco:
        assert ask_eco(eco.port, tls(room, "student-ana")) == {"hola": "aula"}
    before = cert.read_bytes(), (room / "student-ana-key.pem").read_bytes()
    again = certs(str(room), "--student", "ana")
    assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
    assert "not overwriting" in again.stderr
    assert (cert.read_bytes(), (room / "student-ana-key.pem").read_bytes()) == before


@pytest.mark.timeout(60)
def test_a_students_certificate_cannot_serve(room):
    """Client authentication only: a laptop's certificate does not pass for the Docencio's."""
    assert certs(str(room), "--student", "beto").returncode == 0
    env = {"AYUDANTIA_KEY": KEY}
    posing = flags(room, "student-beto")
    with (
        running("eco", "--host", ROOM, "--port", "0", *posing, env=env) as eco,
        pytest.raises(TlsFailed, match="certificate verify failed"),
    ):
        ask_eco(eco.port, tls(room, "estudiante"))


@pytest.mark.timeout(60)
def test_show_prints_names_expiry_and_the_sha256_fingerprint(room):
    shown = certs(str(room), "--show")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert text.startswith("ca.pem  (CA: ayudantia classroom CA)")
    for name in ("ca", "profesor", "docencio", "eco"):
        cert = load(room / f"{name}.pem")
        print_ = cert.fingerprint(hashes.SHA256()).hex(":").upper()
        assert f"SHA-256  {print_}" in text
        assert f"expires  {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC" in text
    assert "names    localhost, 127.0.0.1, ::1, 127.0.0.2, aula-3.local, fd00::10, docencio" in text
    assert "-key.pem" not in text  # keys are never printed, nor listed
    one = certs(str(room / "ca.pem"), "--show")  # the CA a student was handed, alone
    assert one.returncode == 0 and one.stdout.count("SHA-256") == 1
    expected = load(room / "ca.pem").fingerprint(hashes.SHA256()).hex(":").upper()
    assert expected in one.stdout
    opened = ssl.create_default_context(cafile=str(room / "ca.pem"))
    assert opened.cert_store_stats()["x509_ca"] == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "args, says",
    [
        (["--host", "aula 3"], "not a DNS name or an IP address"),
        (["--host", "*.aula.local"], "not a DNS name or an IP address"),
        (["--host=-aula"], "not a DNS name or an IP address"),
        (["--host", "0.0.0.0"], "not an address a client connects to"),
        (["--host", "224.0.0.251"], "not an address a client connects to"),
        (["--student", "../ana"], "--student '../ana': a name of letters"),
        (["--student", "ana-key"], "not ending in -key"),
        (["--student", "ana", "--host", "192.0.2.1"], "--student certificate is a client's"),
    ],
)
def test_bad_names_are_one_line_and_exit_2(tmp_path, args, says):
    done = certs(str(tmp_path / "class"), *args)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert says in done.stderr
    assert not (tmp_path / "class").exists()  # refused before anything was written


@pytest.mark.timeout(60)
def test_a_dir_with_foreign_files_is_refused(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    for args in ([], ["--host", "192.0.2.1"], ["--show"]):
        done = certs(str(home), *args)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, (args, done.stderr)
        assert "holds files certs did not make (notes.txt)" in done.stderr
    assert sorted(os.listdir(home)) == ["notes.txt"]
    made = tmp_path / "class"
    assert certs(str(made)).returncode == 0
    (made / "id_rsa").write_text("not ours")
    done = certs(str(made), "--student", "ana")
    assert done.returncode == 2 and "holds files certs did not make (id_rsa)" in done.stderr
    assert not (made / "student-ana.pem").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    done = certs(str(empty), "--student", "ana")
    assert done.returncode == 2 and "holds no class CA" in done.stderr
    missing = certs(str(tmp_path / "nowhere"), "--show")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
