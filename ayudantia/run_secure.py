"""``ayudantia run --tls --key``: the class closed to outsiders, every hop TLS and keyed.

What ``run`` needs for it, kept out of run.py: a classroom CA and a certificate per role in
a temporary directory this object owns (and removes), each role's ``--tls-*`` flags, a
Profesor client that trusts that CA, and the summary's line that says what protected the
class (with the TLS version a real connection negotiated).
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
from pathlib import Path

from ayudantia.certs import RoleFiles, file_fingerprint, make_class
from protocol.tls import TlsSettings
from roles.profesor import ProfesorClient


class SecureClass:
    """The certificates of one run (none without ``tls``) and how the roles use them."""

    def __init__(self, tls: bool, key: str | None) -> None:
        self.key = key
        self._dir = tempfile.TemporaryDirectory(prefix="ayudantia-certs-") if tls else None
        self.files: dict[str, RoleFiles] = make_class(Path(self._dir.name)) if self._dir else {}
        self.version: str | None = None

    @property
    def tls(self) -> bool:
        return bool(self.files)

    def flags(self, role: str) -> list[str]:
        """``--tls-cert``, ``--tls-key``, ``--tls-ca`` for ``role`` (nothing without TLS)."""
        return self.files[role].flags() if role in self.files else []

    def settings(self, role: str) -> TlsSettings | None:
        files = self.files.get(role)
        return (
            None if files is None else TlsSettings(str(files.cert), str(files.key), str(files.ca))
        )

    @property
    def ca_file(self) -> Path | None:
        """The run's CA certificate (there while the run lasts), None without TLS."""
        return next(iter(self.files.values())).ca if self.files else None

    @property
    def ca_sha256(self) -> str | None:
        """The SHA-256 fingerprint of the run's CA: what a browser opening the HTTPS panel
        must trust (and a person can compare with what the browser shows)."""
        return None if self.ca_file is None else file_fingerprint(self.ca_file)

    def profesor(self, url: str) -> ProfesorClient:
        """A client of the run's Profesor, as the Docencio is (its certificate, the key)."""
        key = self.key.encode("utf-8") if self.key else None
        return ProfesorClient(url, key=key, tls=self.settings("docencio"), timeout=2.0)

    def probe(self, hostport: str) -> str | None:
        """The TLS version a student's connection to ``hostport`` negotiates (None: no TLS)."""
        tls = self.settings("estudiante")
        if tls is None:
            return None
        host, _, port = hostport.rpartition(":")
        with (
            contextlib.suppress(OSError),
            socket.create_connection((host, int(port)), 5) as sock,
            tls.client_context.wrap_socket(sock, server_hostname=host) as conn,
        ):
            self.version = conn.version()
        return self.version

    def describe(self) -> str:
        """The summary's ``security`` line."""
        parts = []
        if self.tls:
            parts.append(
                f"{self.version or 'TLS'} on every hop, mutual (classroom CA, a certificate "
                "per role), names verified"
            )
        if self.key:
            parts.append("keyed handshake + per-connection signed frames, signed Profesor writes")
        return "; ".join(parts) or "none: no TLS, no key (anyone on the network can read and write)"

    def close(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


__all__ = ["SecureClass"]
