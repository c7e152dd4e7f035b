"""TLS on every hop: both front-ends, the Profesor's HTTPS, the certs command, and refusals."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import requests
import trustme
from procs import ayudantia_cmd, running

from ayudantia.certs import make_class
from protocol import aio
from protocol.aio import Speech
from protocol.errors import TlsFailed
from protocol.tls import TlsSettings
from roles.eco import Eco
from roles.profesor import ProfesorClient
from roles.profesor_tls import Deadlines
from roles.wire import WireSettings, tls_settings

KEY = b"clave"
QUIJOTE = os.environ.get("AYUDANTIA_QUIJOTE", "/work/shared/data/quijote.txt")


def files(tmp: Path, ca: trustme.CA, name: str, *hosts: str) -> TlsSettings:
    """A certificate for ``hosts`` from ``ca``, written out: the three --tls-* files."""
    cert = ca.issue_cert(*hosts)
    cert_path, key_path, ca_path = tmp / f"{name}.pem", tmp / f"{name}-key.pem", tmp / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)
    ca.cert_pem.write_to_path(ca_path)
    return TlsSettings(str(cert_path), str(key_path), str(ca_path))


def https_profesor(procs, tls: TlsSettings, tmp: Path, *flags: str, env=None):
    """A real Profesor on HTTPS with ``tls``'s certificate, its database in ``tmp``."""
    certificate = ("--tls-cert", tls.cert, "--tls-key", tls.key)
    return procs.profesor(tmp / "p.db", *certificate, *flags, env=env)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    return {
        "server": files(tmp, ca, "server", "127.0.0.1", "localhost"),
        "client": files(tmp, ca, "client", "estudiante"),
        "wrong_name": files(tmp, ca, "wrong", "other.example"),
        "ca": ca,
        "tmp": tmp,
    }


def eco(tls: TlsSettings, key: bytes | None = KEY) -> Eco:
    return Eco("127.0.0.1", 0, wire=WireSettings(key=key, tls=tls))


@pytest.mark.timeout(30)
def test_blocking_client_round_trip_over_mutual_tls_with_the_handshake(pki):
    with eco(pki["server"]) as server:
        wire = WireSettings(key=KEY, tls=pki["client"])
        with wire.connect(*server.address) as conn:
            book = Path(QUIJOTE).read_text(encoding="utf-8")[:300_000]
            conn.send({"texto": book}, chunk_size=64 * 1024)
            assert conn.recv() == {"texto": book}
            assert conn.sock.version() == "TLSv1.3"  # type: ignore[union-attr]
            conn.send_stream([b"x" * 100_000], chunk_size=7000)
            assert b"".join(conn.recv_stream()) == b"x" * 100_000


@pytest.mark.timeout(30)
def test_event_loop_client_round_trip_over_tls(pki):
    async def main() -> object:
        conn = await aio.connect(
            *server.address, speech=Speech(key=KEY), ssl=pki["client"].client_context
        )
        await conn.send({"hola": "mundo"})
        answer = await conn.recv()
        conn.close()
        return answer

    with eco(pki["server"]) as server:
        assert asyncio.run(main()) == {"hola": "mundo"}


@pytest.mark.timeout(30)
def test_name_mismatch_is_refused(pki):
    wrong = pki["wrong_name"]
    server = eco(TlsSettings(wrong.cert, wrong.key), key=None)
    with server, pytest.raises(TlsFailed, match="mismatch"):
        WireSettings(tls=TlsSettings(ca=wrong.ca)).connect(*server.address)


@pytest.mark.timeout(30)
def test_unknown_ca_is_refused_by_both_front_ends(pki, tmp_path):
    stranger = files(tmp_path, trustme.CA(), "stranger", "127.0.0.1")
    server_side = pki["server"]
    with eco(TlsSettings(server_side.cert, server_side.key), key=None) as server:
        with pytest.raises(TlsFailed, match="certificate verify failed"):
            WireSettings(tls=TlsSettings(ca=stranger.ca)).connect(*server.address)

        async def event_loop() -> None:
            ctx = TlsSettings(ca=stranger.ca).client_context
            await aio.connect(*server.address, ssl=ctx)

        with pytest.raises(TlsFailed, match="certificate verify failed"):
            asyncio.run(event_loop())


@pytest.mark.timeout(30)
def test_missing_client_certificate_is_refused_when_required(pki):
    with eco(pki["server"]) as server:  # the server has --tls-ca: mutual TLS
        no_cert = WireSettings(key=KEY, tls=TlsSettings(ca=pki["server"].ca))
        with (
            no_cert.connect(*server.address) as conn,
            pytest.raises(TlsFailed, match=r"CERTIFICATE_REQUIRED.*requires a client cert"),
        ):
            conn.send({"sin": "certificado"})
            conn.recv()
        assert server.served <= 1 and not server.clients


@pytest.mark.timeout(60)
def test_profesor_serves_https_with_signed_writes(pki, procs, tmp_path):
    server_side = pki["server"]
    env = {"AYUDANTIA_KEY": KEY.decode()}
    profesor = https_profesor(procs, server_side, tmp_path, "--tls-ca", server_side.ca, env=env)
    url = profesor.address
    assert url.startswith("https://")
    client = ProfesorClient(url, key=KEY, tls=pki["client"])
    assert client.post_ids(["a", "b"]) == 2
    assert client.count() == 2
    with pytest.raises(requests.exceptions.SSLError):  # the system's CAs do not know ours
        requests.get(url + "/preguntas", timeout=5)
    no_cert = requests.get(url + "/preguntas", timeout=5, verify=server_side.ca)
    assert no_cert.status_code == 403  # only the panel's reads are open without a certificate
    unsigned = requests.post(
        url + "/preguntas",
        json={"id": "x"},
        timeout=5,
        verify=server_side.ca,
        cert=(pki["client"].cert, pki["client"].key),
    )
    assert unsigned.status_code == 401 and client.count() == 2


@pytest.mark.timeout(90)
def test_certs_command_then_eco_and_quijote_over_tls(tmp_path):
    made = subprocess.run(
        ayudantia_cmd("certs", str(tmp_path / "class")), capture_output=True, text=True, timeout=30
    )
    assert made.returncode == 0, made.stderr
    d = tmp_path / "class"
    assert (d / "ca-key.pem").stat().st_mode & 0o077 == 0  # keys readable by their owner only
    flags = lambda role: [  # noqa: E731
        "--tls-cert",
        str(d / f"{role}.pem"),
        "--tls-key",
        str(d / f"{role}-key.pem"),
        "--tls-ca",
        str(d / "ca.pem"),
    ]
    env = {"AYUDANTIA_KEY": "secreto", "AYUDANTIA_QUIJOTE": QUIJOTE}
    ca_file = str(d / "ca.pem")
    with running("eco", "--port", "0", *flags("eco"), env=env) as server:
        done = subprocess.run(
            ayudantia_cmd("quijote", "--to", f"127.0.0.1:{server.port}", *flags("estudiante")),
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **env},
        )
        assert done.returncode == 0, done.stderr
        assert "verified     yes" in done.stdout
        ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
        assert ctx.cert_store_stats()["x509_ca"] == 1
        refused = subprocess.run(  # no client certificate: one clear line
            ayudantia_cmd("quijote", "--to", f"127.0.0.1:{server.port}", "--tls-ca", ca_file),
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **env},
        )
        assert refused.returncode == 1
        assert refused.stderr.count("\n") == 1 and "TlsFailed" in refused.stderr
        plain = subprocess.run(  # no TLS at all: one line that names what is missing
            ayudantia_cmd("quijote", "--to", f"127.0.0.1:{server.port}"),
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **env},
        )
        assert plain.returncode == 1 and plain.stderr.count("\n") == 1
        assert "no TLS: a TLS server needs --tls-ca" in plain.stderr


@pytest.mark.timeout(30)
def test_a_tls_client_to_a_plain_server_is_a_typed_error(pki):
    with Eco("127.0.0.1", 0, wire=WireSettings()) as server:
        with pytest.raises(TlsFailed):
            WireSettings(tls=TlsSettings(ca=pki["server"].ca)).connect(*server.address)
        deadline = time.monotonic() + 5
        while not server.dropped and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.dropped == 1  # the eco saw a TLS hello: not an ayudantia frame


@pytest.mark.timeout(60)
def test_silent_tls_clients_do_not_block_the_https_profesor(pki, procs, tmp_path):
    """cheroot ran the TLS handshake on its accepting thread: one silent peer held it."""
    server_side = pki["server"]
    profesor = https_profesor(procs, server_side, tmp_path)
    host, _, port = profesor.address.removeprefix("https://").rpartition(":")
    silent = [socket.create_connection((host, int(port)), timeout=5) for _ in range(2)]
    try:
        plain = socket.create_connection((host, int(port)), timeout=5)  # plain HTTP: dropped
        plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert plain.recv(100) == b""
        plain.close()
        client = ProfesorClient(profesor.address, tls=TlsSettings(ca=server_side.ca), timeout=5)
        assert client.count() == 0  # answered while the silent peers still hold their sockets
    finally:
        for sock in silent:
            sock.close()
    assert "Traceback" not in profesor.stderr() + profesor.stdout()


@pytest.mark.timeout(30)
def test_half_given_tls_files_are_refused_not_ignored(pki):
    """--tls-ca alone made a listener serve plain TCP; --tls-key alone turned TLS off."""
    listener = Eco("127.0.0.1", 0, wire=WireSettings(tls=TlsSettings(ca=pki["server"].ca)))
    with pytest.raises(TlsFailed, match="plain TCP"), listener:
        pass
    with pytest.raises(TlsFailed, match="--tls-key needs --tls-cert"):
        tls_settings({"tls_key": pki["server"].key})
    mismatched = TlsSettings(pki["server"].cert, pki["client"].key)
    with pytest.raises(TlsFailed, match="cannot load"):
        mismatched.server_context  # noqa: B018
    assert tls_settings({"tls_ca": pki["server"].ca}) == TlsSettings(ca=pki["server"].ca)


@pytest.mark.timeout(60)
def test_certs_never_overwrites_nor_follows_a_symlink(tmp_path):
    """A second `certs DIR` replaced the CA; an old 0644 key file kept its mode; a symlinked
    key name was written through."""
    d = tmp_path / "class"
    make_class(d, roles=("eco",))
    ca = (d / "ca.pem").read_bytes()
    again = subprocess.run(
        ayudantia_cmd("certs", str(d)), capture_output=True, text=True, timeout=30
    )
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "not overwriting" in again.stderr and (d / "ca.pem").read_bytes() == ca
    other = tmp_path / "other"
    other.mkdir()
    (other / "eco-key.pem").symlink_to(tmp_path / "victim")
    with pytest.raises(FileExistsError):
        make_class(other, roles=("eco",))
    assert not (tmp_path / "victim").exists() and not (other / "ca.pem").exists()


@pytest.mark.timeout(30)
def test_a_request_not_over_by_its_deadline_is_cut():
    """cheroot's timeout restarts with every byte: as many drippers as workers held the
    HTTPS Profesor. Deadlines shuts a request's socket once its time is up."""
    a, b = socket.socketpair()
    deadlines = Deadlines(limit=0.2, tick=0.05)
    try:
        with a, b, deadlines.watch(a):
            a.settimeout(20)  # what a dripping client would keep restarting
            b.sendall(b"G")
            assert a.recv(1) == b"G"
            assert a.recv(1) == b""  # cut: not a 20 s wait
        with deadlines.watch(b"not a socket"):  # done in time: never touched
            pass
    finally:
        deadlines.close()


@pytest.mark.timeout(60)
def test_the_runs_live_view_reads_the_https_profesors_estado(pki, procs, tmp_path):
    """run --tls showed a blank live view ("roles -"): it polled GET /estado without the
    run's CA and client certificate, and every poll failed."""
    from ayudantia.live import Estado, facts

    server_side = pki["server"]
    profesor = https_profesor(procs, server_side, tmp_path, "--tls-ca", server_side.ca)
    estado = Estado(profesor.address, pki["client"])
    try:
        state = estado.poll()
    finally:
        estado.close()
    assert state is not None and "roles" in state, state
    assert facts(state)["roles"].startswith("up: profesor"), facts(state)


@pytest.mark.timeout(30)
def test_a_tls_echo_logs_no_eof_received_warning(pki, caplog):
    """asyncio warns when eof_received() returns True over TLS: the server must not ask."""
    caplog.set_level("WARNING", logger="asyncio")
    with eco(pki["server"]) as server:

        async def main() -> object:  # its close() sends close_notify: the server's EOF
            conn = await aio.connect(
                *server.address, speech=Speech(key=KEY), ssl=pki["client"].client_context
            )
            await conn.send({"hola": "mundo"})
            answer = await conn.recv()
            conn.close()
            await asyncio.sleep(0.2)
            return answer

        assert asyncio.run(main()) == {"hola": "mundo"}
        deadline = time.monotonic() + 5  # the server reads the clients' EOFs
        while time.monotonic() < deadline and not any(
            "eof_received" in r.getMessage() for r in caplog.records
        ):
            time.sleep(0.05)
    assert not [r.getMessage() for r in caplog.records if "eof_received" in r.getMessage()]
