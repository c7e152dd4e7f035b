"""replay: a recorded keyed session is valid for ever, and the questions cross the wire in clear.

Signed frames alone (``--key`` before the handshake) prove who wrote a frame, not when nor
on which connection: each direction's counter restarts at 0 on every connection, so a
session someone recorded replays as a new, valid session. The keyed handshake binds every
frame to fresh nonces from both sides, so a replay is refused before anything is decoded.
Signing hides nothing, either: an observer on the path (here a relay that records what the
student sends) reads every question. TLS makes those bytes unreadable.
"""

from __future__ import annotations

import os

from ayudantia.certs import make_class
from ayudantia.lessons._runner import N_, Context, Outcome, Q, Row, T, quiet_logger
from protocol.tls import TlsSettings
from roles.eco import Eco
from roles.replay import QUESTIONS, Tap, handshake_replay, old_signing_replay
from roles.wire import WireSettings

NAME = "replay"
SECTION = "«P2P» (the class's connections), and the security lesson's signed frames"
PATTERN = N_("a keyed session recorded and replayed; questions readable on the wire")
DEFECT = N_(
    "a student's keyed session signed the old way (frames signed, counters from 0, no "
    "handshake) replayed into a new connection; an observer relays the class's bytes "
    "without TLS"
)
FIX = N_(
    "the same replay against a keyed eco that runs the handshake (fresh nonces, keys per "
    "connection); the same observer with TLS on the hop"
)
WHY = N_(
    "a signature says who wrote a frame, not on which connection nor when: with counters "
    "that restart at 0, yesterday's session is a valid session today. The handshake mixes "
    "fresh nonces from both sides into the keys, so a recorded PROOF answers a nonce nobody "
    "uses any more. And a signature hides nothing: only encryption (TLS) does."
)
FIX_AT = (
    "protocol/handshake.py Handshake (nonces, proofs, HKDF keys); protocol/tls.py "
    "TlsSettings; roles/replay.py (the recording and the replay)"
)
HEADLINE = "replayed"
SECRET = QUESTIONS[0]["tipo"]  # what the observer looks for in the bytes it saw


def _observed(wire: WireSettings, client: WireSettings) -> tuple[bytes, bool]:
    """Ask the questions through a recording relay; the bytes seen and whether answered."""
    with Eco("127.0.0.1", 0, wire=wire) as eco:
        tap = Tap(eco.address)
        host, port = tap.address
        answered = True
        with client.connect(host, port) as conn:
            for question in QUESTIONS:
                conn.send(question)
                answered = answered and conn.recv() == question
        tap.join()
    return bytes(tap.recorded), answered


def run(ctx: Context) -> Outcome:
    ctx.stack.enter_context(quiet_logger("ayudantia.eco"))  # its refusal is the lesson's row
    key = os.urandom(32)
    old = old_signing_replay(key)
    with Eco("127.0.0.1", 0, wire=WireSettings(key=key)) as eco:
        new, _recorded = handshake_replay(eco.address, key)
    files = make_class(ctx.tmp / "certs", roles=("eco", "estudiante"))
    server_tls = TlsSettings(str(files["eco"].cert), str(files["eco"].key), str(files["eco"].ca))
    client_tls = TlsSettings(
        str(files["estudiante"].cert), str(files["estudiante"].key), str(files["estudiante"].ca)
    )
    clear, clear_ok = _observed(WireSettings(key=key), WireSettings(key=key))
    hidden, hidden_ok = _observed(
        WireSettings(key=key, tls=server_tls), WireSettings(key=key, tls=client_tls)
    )
    seen_clear, seen_hidden = SECRET.encode() in clear, SECRET.encode() in hidden
    rows = [
        Row(
            "replayed",
            N_("a recorded session replayed: questions decoded again"),
            Q(len(old.decoded)),
            Q(len(new.decoded)),
        ),
        Row("observed", N_("bytes the observer relayed"), Q(len(clear), "B"), Q(len(hidden), "B")),
        Row("readable", N_("the question's text readable on the wire"), seen_clear, seen_hidden),
    ]
    notes = [
        T("the handshake refused the replay: {error}", error=str(new.error)),
        T("the observer looked for «{text}» in what the student sent", text=SECRET),
    ]
    return Outcome(
        rows,
        defect_showed=old.accepted and len(old.decoded) == len(QUESTIONS) and seen_clear,
        fix_held=(
            not new.accepted and not new.decoded and not seen_hidden and clear_ok and hidden_ok
        ),
        notes=notes,
    )
