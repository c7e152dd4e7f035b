"""The panel for the projector: over TLS, a browser without a client certificate reads
``/panel`` and ``/estado`` (trusting the class's CA), and nothing else; ``--private`` keeps
even those closed; ``run --tls --panel`` prints the CA's fingerprint the browser must trust.

Real certificates from ``ayudantia certs``' own code, a real HTTPS Profesor (cheroot) in its
own process, real requests over TLS.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import trustme
from procs import stop_run

from ayudantia.certs import file_fingerprint, make_class
from protocol.tls import TlsSettings
from roles.panel import CACHE_FOR
from roles.profesor import ProfesorClient
from roles.profesor_auth import sign_headers
from roles.profesor_tls import is_panel_read

KEY = "clave-del-aula"


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("room") / "class"
    make_class(d, roles=("profesor", "docencio"))
    return d


def role_flags(d: Path, role: str) -> list[str]:
    return make_flags(d / f"{role}.pem", d / f"{role}-key.pem", d / "ca.pem")


def make_flags(cert: Path, key: Path, ca: Path) -> list[str]:
    return ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca)]


def client_cert(d: Path) -> tuple[str, str]:
    return str(d / "docencio.pem"), str(d / "docencio-key.pem")


def signed_post(url: str, path: str, body: dict, **kw) -> requests.Response:
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **sign_headers(KEY.encode(), "POST", path, data)}
    return requests.post(url + path, data=data, headers=headers, timeout=5, **kw)


@pytest.mark.timeout(60)
def test_a_browser_without_a_client_certificate_reads_the_panel_only(room, procs, tmp_path):
    env = {"AYUDANTIA_KEY": KEY}
    profesor = procs.profesor(tmp_path / "p.db", *role_flags(room, "profesor"), env=env)
    url, ca = profesor.address, str(room / "ca.pem")
    assert url.startswith("https://")
    page = requests.get(url + "/panel", timeout=5, verify=ca)  # no client certificate
    assert page.status_code == 200 and "<canvas" in page.text
    assert requests.get(url + "/panel/panel.js", timeout=5, verify=ca).status_code == 200
    estado = requests.get(url + "/estado", timeout=5, verify=ca)
    assert estado.status_code == 200 and estado.json()["count"] == 0
    # Every write without the certificate is refused, signed or not, and counts nothing.
    refused = [
        requests.post(url + "/estado", json={"role": "docencio"}, timeout=5, verify=ca),
        requests.post(url + "/preguntas", json={"id": "x"}, timeout=5, verify=ca),
        signed_post(url, "/preguntas", {"id": "x"}, verify=ca),
        signed_post(url, "/estado", {"role": "tareo", "report": {}}, verify=ca),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403, 403]
    assert "client certificate" in refused[2].json()["error"]
    # Reads other than the panel's stay closed too: the count is for the class's roles.
    for path in ("/preguntas", "/", "/respuesta"):
        assert requests.get(url + path, timeout=5, verify=ca).status_code == 403, path
    # With the certificate, writes need the signature as before; and count when signed.
    cert = client_cert(room)
    unsigned = requests.post(url + "/preguntas", json={"id": "x"}, timeout=5, verify=ca, cert=cert)
    assert unsigned.status_code == 401
    assert signed_post(url, "/preguntas", {"id": "x"}, verify=ca, cert=cert).status_code == 200
    client = ProfesorClient(url, key=KEY.encode(), tls=TlsSettings(*cert, ca), timeout=5)
    assert client.count() == 1
    # /estado reuses one answer for CACHE_FOR seconds (20 panels cost one snapshot): the count
    # shows once that answer is older, so read until it does, within a bound.
    deadline = time.monotonic() + 5
    while (seen := requests.get(url + "/estado", timeout=5, verify=ca).json()["count"]) != 1:
        assert time.monotonic() < deadline, f"/estado still says {seen}"
        time.sleep(CACHE_FOR)
    # Still TLS, still the class's CA: no plain HTTP, no trust in a stranger's CA.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url + "/panel", timeout=5)  # the system's CAs do not know the class's
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url.replace("https://", "http://") + "/panel", timeout=5)
    assert "Traceback" not in profesor.stderr() + profesor.stdout()


@pytest.mark.timeout(60)
def test_a_certificate_from_another_ca_is_refused_in_the_handshake(room, procs, tmp_path):
    """CERT_OPTIONAL asks for a certificate and still verifies one that is shown."""
    stranger = trustme.CA().issue_cert("intruso")
    cert, key = tmp_path / "i.pem", tmp_path / "i-key.pem"
    stranger.cert_chain_pems[0].write_to_path(cert)
    stranger.private_key_pem.write_to_path(key)
    profesor = procs.profesor(tmp_path / "p.db", *role_flags(room, "profesor"))
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(
            profesor.address + "/estado",
            timeout=5,
            verify=str(room / "ca.pem"),
            cert=(str(cert), str(key)),
        )


@pytest.mark.timeout(60)
def test_private_keeps_reads_closed(room, procs, tmp_path):
    flags = [*role_flags(room, "profesor"), "--private"]
    profesor = procs.profesor(tmp_path / "p.db", *flags)  # no key: --tls-ca is enough
    url, ca = profesor.address, str(room / "ca.pem")
    for path in ("/panel", "/estado"):
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(url + path, timeout=5, verify=ca)
    served = requests.get(url + "/panel", timeout=5, verify=ca, cert=client_cert(room))
    assert served.status_code == 200 and "<canvas" in served.text


def test_only_the_panels_reads_are_open():
    assert is_panel_read("GET", "/panel") and is_panel_read("HEAD", "/estado")
    assert is_panel_read("GET", "/panel/panel.css")
    assert not is_panel_read("POST", "/estado") and not is_panel_read("GET", "/preguntas")
    assert not is_panel_read("GET", "/panelx") and not is_panel_read("PUT", "/panel")


@pytest.mark.timeout(90)
def test_run_tls_panel_prints_the_fingerprint_of_the_ca_the_browser_must_trust(tmp_path):
    out, report = tmp_path / "out.txt", tmp_path / "r.json"
    with out.open("w") as sink:
        run = subprocess.Popen(
            [
                *(sys.executable, "-m", "ayudantia", "run", "--tls", "--key", KEY, "--panel"),
                *("--students", "2", "--questions", "0", "--interval", "0.01"),
                *("--report", str(report)),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 40
            trust = re.compile(
                r"Panel: the browser must trust the class's CA, SHA-256 (\S+) .*"
                r"; its file: (\S+)"
            )
            while not trust.search(out.read_text()) and time.monotonic() < deadline:
                assert run.poll() is None, out.read_text()
                time.sleep(0.1)
            text = out.read_text()
            url = re.search(r"Panel: (https://\S+)", text).group(1)
            printed, ca = trust.search(text).groups()
            assert printed == file_fingerprint(ca)  # the CA the Profesor's chain is signed by
            page = requests.get(url, timeout=5, verify=ca)  # a browser: the CA, no certificate
            assert page.status_code == 200 and "<canvas" in page.text
            estado = url.removesuffix("/panel") + "/estado"
            while requests.get(estado, timeout=5, verify=ca).json()["count"] < 20:
                assert time.monotonic() < deadline, "the class did not ask"
                time.sleep(0.2)
            run.send_signal(signal.SIGINT)
            assert run.wait(40) == 0, out.read_text()
        finally:
            stop_run(run)
    s = json.loads(report.read_text())
    assert s["ok"] and s["panel"] == url and s["ca_sha256"] == printed
    assert re.search(r"│ panel\s+│ " + re.escape(url), out.read_text()), out.read_text()
    assert KEY not in out.read_text()
