"""TLS refusals send their fatal alert (RFC 8446 §6.2) before the close, on every server.

A real :mod:`ssl` client on loopback, refused by a framed role (both event loops) and by
the HTTPS Profesor, must read the alert, named in its SSLError ("unknown ca",
"certificate required"), not a bare EOF or a reset. asyncio's own TLS dropped it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from pathlib import Path

import pytest
import trustme

from protocol import aio
from protocol.aio import Speech
from protocol.errors import TlsFailed
from protocol.tls import TlsSettings
from protocol.tls_server import TlsServerProtocol
from roles.eco import Eco
from roles.loop import new_event_loop
from roles.wire import WireSettings
from tests.test_tls import files, https_profesor

KEY = b"clave"
LOOPS = ["uvloop", "asyncio"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    stranger = tmp / "stranger"
    stranger.mkdir()
    return {
        "server": files(tmp, ca, "server", "127.0.0.1", "localhost"),
        "client": files(tmp, ca, "client", "estudiante"),
        "stranger": files(stranger, trustme.CA(), "stranger", "estudiante"),
    }


def client_context(pki, cert: str | None, version: ssl.TLSVersion) -> ssl.SSLContext:
    """Trusts the class's CA; shows no certificate, the class's, or a stranger's."""
    ctx = ssl.create_default_context(cafile=pki["server"].ca)
    ctx.maximum_version = version
    if cert is not None:
        ctx.load_cert_chain(pki[cert].cert, pki[cert].key)
    return ctx


def refusal(address: tuple[str, int], ctx: ssl.SSLContext, request: bytes = b"") -> str:
    """Handshake, send ``request``, read: the reason of the SSLError that ends it.

    TLS 1.3 refuses a client certificate after the client's side of the handshake is
    done, so the alert comes at the first read; TLS 1.2 refuses inside the handshake.
    Anything else (data, a bare EOF, a reset) fails the test with what it was.
    """
    with socket.create_connection(address, timeout=10) as sock:
        try:
            with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                if request:
                    tls.sendall(request)
                got = tls.recv(1024)
        except ssl.SSLError as exc:
            assert exc.reason is not None, exc
            return exc.reason
    raise AssertionError(f"no alert: the server answered {got!r} and closed")


def eco(pki, loop: str) -> Eco:
    return Eco("127.0.0.1", 0, wire=WireSettings(key=KEY, tls=pki["server"]), loop=loop)


CASES = [  # (certificate shown, TLS version, the alert the client must read)
    (None, ssl.TLSVersion.TLSv1_3, "TLSV13_ALERT_CERTIFICATE_REQUIRED"),
    ("stranger", ssl.TLSVersion.TLSv1_3, "TLSV1_ALERT_UNKNOWN_CA"),
    (None, ssl.TLSVersion.TLSv1_2, "SSLV3_ALERT_HANDSHAKE_FAILURE"),
    ("stranger", ssl.TLSVersion.TLSv1_2, "TLSV1_ALERT_UNKNOWN_CA"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop", LOOPS)
def test_a_framed_role_refuses_with_the_alert_and_keeps_serving(pki, loop, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    with eco(pki, loop) as server:
        assert server.loop_name == loop
        for cert, version, alert in CASES:
            ctx = client_context(pki, cert, version)
            assert refusal(server.address, ctx) == alert, (cert, version)
            # with the client's first bytes already on their way, too
            assert refusal(server.address, ctx, b"\x00" * 300) == alert, (cert, version)
        assert server.served == 0 and not server.clients  # no refused peer reached the role

        async def good() -> object:
            conn = await aio.connect(
                *server.address, speech=Speech(key=KEY), ssl=pki["client"].client_context
            )
            await conn.send({"hola": "mundo"})
            answer = await conn.recv()
            conn.close()
            await asyncio.sleep(0.1)
            return answer

        assert asyncio.run(good()) == {"hola": "mundo"}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and server.clients:
            time.sleep(0.05)
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "eof_received" in m], messages
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], messages


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop", LOOPS)
def test_tls_answers_many_pipelined_messages_read_late_in_order(pki, loop) -> None:
    """The client writes 300 messages before it reads one: the server stops reading while
    its answers back up, then resumes with plaintext already waiting in TLS's buffers."""
    wire = WireSettings(key=KEY, tls=pki["client"])
    with eco(pki, loop) as server, wire.connect(*server.address) as conn:
        payload = "x" * 20_000
        for i in range(300):
            conn.send({"i": i, "texto": payload})
        assert [conn.recv()["i"] for _ in range(300)] == list(range(300))
        conn.send_stream([b"y" * 3_000_000], chunk_size=60_000)
        assert b"".join(conn.recv_stream()) == b"y" * 3_000_000


@pytest.mark.timeout(90)
def test_the_https_profesor_refuses_with_the_alert(pki, procs, tmp_path: Path) -> None:
    """The Profesor's TLS is cheroot's blocking handshake: the alert goes out with it.

    With a CA and --private no certificate is refused; without --private a browser with
    none reads the panel, but a stranger's certificate is still refused in the handshake.
    """
    server = pki["server"]
    private = https_profesor(procs, server, tmp_path, "--tls-ca", server.ca, "--private")
    address = tuple(private.address.removeprefix("https://").rsplit(":", 1))
    address = (address[0], int(address[1]))
    get = b"GET /estado HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for cert, version, alert in CASES:
        assert refusal(address, client_context(pki, cert, version), get) == alert

    (tmp_path / "open").mkdir()
    panel = https_profesor(procs, server, tmp_path / "open", "--tls-ca", server.ca)
    host, port = panel.address.removeprefix("https://").rsplit(":", 1)
    for cert, version, alert in CASES:
        if cert is not None:
            assert refusal((host, int(port)), client_context(pki, cert, version), get) == alert


@pytest.mark.timeout(30)
@pytest.mark.parametrize("loop", LOOPS)
def test_the_tls_front_drops_a_silent_client_and_shows_the_session(pki, loop) -> None:
    """Straight on :class:`TlsServerProtocol`: a client that says nothing is dropped at the
    handshake deadline without reaching the application; one that completes it reaches
    an application that sees TLS's extras (the verified peer certificate)."""
    seen: list[dict] = []

    class Note(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            seen.append(
                {
                    "peercert": transport.get_extra_info("peercert"),
                    "version": transport.get_extra_info("ssl_object").version(),
                    "peername": transport.get_extra_info("peername"),
                }
            )
            transport.write(b"hola")
            transport.close()

    new_loop, name = new_event_loop(loop)
    assert name == loop

    async def main() -> tuple[bytes, bytes]:
        ctx = pki["server"].server_context
        server = await asyncio.get_running_loop().create_server(
            lambda: TlsServerProtocol(ctx, Note, 0.3), "127.0.0.1", 0
        )
        address = server.sockets[0].getsockname()[:2]

        def silent() -> bytes:
            with socket.create_connection(address, timeout=10) as sock:
                try:
                    return sock.recv(100)  # b"" or a reset, after the 0.3 s deadline
                except ConnectionResetError:
                    return b"reset"

        def good() -> bytes:
            ctx = pki["client"].client_context
            with (
                socket.create_connection(address, timeout=10) as sock,
                ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
            ):
                return tls.recv(100)

        try:
            dropped = await asyncio.to_thread(silent)
            answer = await asyncio.to_thread(good)
        finally:
            server.close()
        return dropped, answer

    try:
        dropped, answer = new_loop.run_until_complete(main())
    finally:
        new_loop.close()
    assert dropped in (b"", b"reset") and answer == b"hola"
    assert len(seen) == 1, seen  # the silent client never reached the application
    assert seen[0]["version"] == "TLSv1.3" and seen[0]["peername"][0] == "127.0.0.1"
    assert ("DNS", "estudiante") in seen[0]["peercert"]["subjectAltName"], seen


@pytest.mark.timeout(30)
def test_the_blocking_client_names_the_alert_and_what_it_means(pki) -> None:
    """The project's own client reads the stranger's alert and says what to fix."""
    stranger = pki["stranger"]
    wire = WireSettings(key=KEY, tls=TlsSettings(stranger.cert, stranger.key, pki["server"].ca))
    with (
        eco(pki, "auto") as server,
        wire.connect(*server.address) as conn,
        pytest.raises(TlsFailed, match=r"UNKNOWN_CA.*does not trust the CA"),
    ):
        conn.send({"de": "otra clase"})
        conn.recv()
