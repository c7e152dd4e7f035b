"""pickle: ``pickle.loads`` on a peer's bytes runs the peer's code.

Five steps on loopback with real sockets: (1) plain ``pickle.loads`` runs the sender's
code; (2) the default accept-list refuses pickle before decoding; (3) a restricted
unpickler allows exact (module, name) pairs, and allowing a whole module lets the attack
through again; (4) signed frames are verified before decoding; (5) json and msgpack decode
to plain data. The "command" every attack runs is harmless: it creates an empty marker
file in the lesson's temporary directory, removed at the end.

Step 1 is the ONLY place in this project where plain ``pickle.loads`` is called on bytes
from a socket. It is deliberately insecure, and it exists to show why nothing else does it.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import logging
import pickle
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ayudantia.lessons._runner import N_, Context, Outcome, Row, T, Text, quiet_logger
from protocol import codecs
from protocol.aio import FrameConnection
from protocol.errors import (
    AyudantiaError,
    BadSignature,
    ConnectionClosed,
    ContentDisallowed,
    SignatureMissing,
)
from protocol.framing import Chunk, FrameDecoder, Message, encode_message
from protocol.safepickle import ForbiddenGlobal, restricted_loads
from protocol.signing import Signer
from protocol.transport import Connection
from roles.base import Server, WireSettings

PICKLE_ID = codecs.get("pickle").id

NAME = "pickle"
SECTION = "«Envio utilizando Pickle»"
PATTERN = N_("pickle.loads on a peer's bytes")
DEFECT = N_(
    "a mini server calls plain pickle.loads on a pickle whose __reduce__ names "
    "Path.touch (DELIBERATELY INSECURE: the only place it exists); then a "
    "restricted unpickler that allows the whole module builtins gets a "
    "builtins.eval attack"
)
FIX = N_(
    "the project's servers: the default accept-list, a restricted unpickler of "
    "exact (module, name) pairs, signed frames (HMAC-SHA256), and json or msgpack"
)
WHY = N_(
    "a pickle is a program for a small stack machine: its REDUCE opcode calls any"
    " callable it can name, with arguments it supplies. The sender chooses the "
    "code; the receiver runs it before it ever sees an object. An allowed module "
    "is a door to every global in it (builtins holds eval, exec and __import__). "
    "A signature says who sent a pickle, not that it is harmless: between parties"
    " that do not trust each other, use json or msgpack."
)
FIX_AT = (
    "protocol/codecs.py accept_for (DEFAULT_ACCEPT); protocol/safepickle.py "
    "restricted_loads; protocol/signing.py Verifier; protocol/framing.py "
    "FrameDecoder._check_header"
)
HEADLINE = "code_ran"


# --- the attacker's payloads ------------------------------------------------------------


class TouchMarker:
    """Unpickling this calls ``pathlib.Path.touch(marker)``: code chosen by the sender."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


class EvalMarker:
    """Unpickling this calls ``builtins.eval(source)``: one global, from module "builtins"."""

    def __init__(self, marker: Path) -> None:
        self.source = f"__import__('pathlib').Path({str(marker)!r}).touch()"

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.eval, (self.source,))


class ModuleWideUnpickler(pickle.Unpickler):
    """The tempting mistake: allow whole modules ("builtins has set and frozenset...")."""

    def __init__(self, file: Any, modules: frozenset[str]) -> None:
        super().__init__(file)
        self.modules = modules

    def find_class(self, module: str, name: str) -> Any:
        if module not in self.modules:
            raise ForbiddenGlobal(module, name)
        return super().find_class(module, name)


def module_wide_loads(data: bytes | bytearray, modules: frozenset[str]) -> Any:
    return ModuleWideUnpickler(io.BytesIO(bytes(data)), modules).load()


# --- step 1: the deliberately insecure server ----------------------------------------------


def insecure_pickle_server(listener: socket.socket, outcome: dict[str, Any]) -> None:
    """Accept one client, read one framed message and ``pickle.loads`` it.

    !!! DELIBERATELY INSECURE: the only plain pickle.loads on network bytes in this project.
    !!! It exists so the lesson can show what it does. Never copy it.
    """
    try:
        sock, _ = listener.accept()
    except OSError as exc:
        outcome["error"] = exc
        return
    with sock:
        sock.settimeout(5.0)
        decoder = FrameDecoder()
        try:
            while True:
                event = decoder.next_event()
                if isinstance(event, Message):
                    break
                decoder.receive_data(sock.recv(65536))
            outcome["object"] = pickle.loads(event.payload)  # INSECURE ON PURPOSE (step 1)
            sock.sendall(encode_message(codecs.get("json").id, b'"unpickled"'))
        except Exception as exc:
            outcome["error"] = exc


# --- steps 2-5: project servers that record what their decoder did ------------------------


class LessonServer(Server):
    """Receives one message per connection as raw frames, then decodes it with ``decode``.

    Taking the frames undecoded (streamed) lets each step choose its decoder, while the
    accept-list and signature checks of the project's framing still run first: what they
    refuse ends the connection, and the error is recorded.
    """

    role = "lesson"

    def __init__(self, wire: WireSettings, decode: Callable[[bytearray], Any]) -> None:
        quiet = logging.getLogger("ayudantia.lesson.server")
        quiet.propagate = False
        quiet.addHandler(logging.NullHandler())
        super().__init__("127.0.0.1", 0, wire=wire, logger=quiet)
        self.decode = decode
        self.decoded_calls = 0
        self.errors: list[BaseException] = []
        self.results: list[Any] = []
        self.done = threading.Event()
        self._parts: dict[FrameConnection, bytearray] = {}

    def stream(self, codec_id: int) -> bool:
        return True

    def chunk_received(self, conn: FrameConnection, chunk: Chunk) -> None:
        payload = self._parts.setdefault(conn, bytearray())
        payload += chunk.data
        if not chunk.last:
            return
        del self._parts[conn]
        try:
            self.decoded_calls += 1
            obj = self.decode(payload)
        except BaseException as exc:
            self.errors.append(exc)
            self.done.set()
            raise
        self.results.append(obj)
        conn.send_obj({"answer": "decoded", "type": type(obj).__name__})
        self.done.set()

    def connection_lost(self, conn: FrameConnection, error: BaseException | None) -> None:
        super().connection_lost(conn, error)
        self._parts.pop(conn, None)
        if error is not None and error not in self.errors:
            self.errors.append(error)
        self.done.set()


@contextlib.contextmanager
def lesson_server(wire: WireSettings, decode: Callable[[bytearray], Any]) -> Iterator[LessonServer]:
    server = LessonServer(wire, decode)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def send_and_wait(
    server: LessonServer, payload: bytes, *, codec_id: int = PICKLE_ID, key: bytes | None = None
) -> Any:
    """Connect, send one message, read the answer or the close; wait for the server's verdict."""
    with Connection.connect(*server.address, key=key, read_timeout=5.0, idle_timeout=5.0) as conn:
        conn.send_payload(codec_id, payload)
        try:
            answer = conn.recv()
        except (ConnectionClosed, AyudantiaError) as exc:
            answer = f"connection closed by the server ({type(exc).__name__})"
    server.done.wait(5.0)
    return answer


def send_raw_and_wait(server: LessonServer, wire_bytes: bytes) -> None:
    with socket.create_connection(server.address, timeout=5.0) as sock:
        sock.sendall(wire_bytes)
        with contextlib.suppress(OSError):
            sock.recv(1024)  # the server closes on us
    server.done.wait(5.0)


def _err(server: LessonServer) -> BaseException | None:
    return server.errors[-1] if server.errors else None


def _name(exc: BaseException | None) -> str:
    if exc is None:
        return "no error"
    cause = exc.__cause__
    more = f" (from {type(cause).__name__}: {cause})" if cause is not None else ""
    return f"{type(exc).__name__}: {exc}{more}"


# --- the steps: each returns whether it behaved as taught, and what happened ----------------


def step1(tmp: Path) -> tuple[bool, list[Text]]:
    marker = tmp / "step1-pwned"
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5.0)
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=insecure_pickle_server, args=(listener, outcome), daemon=True)
    thread.start()
    payload = pickle.dumps(TouchMarker(marker), protocol=pickle.HIGHEST_PROTOCOL)
    try:
        with socket.create_connection(listener.getsockname()[:2], timeout=5.0) as sock:
            sock.sendall(encode_message(PICKLE_ID, payload))
            with contextlib.suppress(OSError):
                sock.recv(1024)
        thread.join(5.0)
    finally:
        listener.close()
    appeared = marker.exists()
    return appeared, [
        T(
            "step 1: plain pickle.loads ran pathlib.Path.touch({marker}) while unpickling; "
            "marker file exists: {exists}",
            marker=repr(marker.name),
            exists=appeared,
        )
    ]


def step2(tmp: Path) -> tuple[bool, list[Text]]:
    marker = tmp / "step2-pwned"
    wire = WireSettings()  # the defaults every role starts from
    with lesson_server(wire, lambda p: codecs.get("pickle").decode(p)) as server:
        payload = pickle.dumps(TouchMarker(marker), protocol=pickle.HIGHEST_PROTOCOL)
        answer = send_and_wait(server, payload)
        exc = _err(server)
    ok = isinstance(exc, ContentDisallowed) and not server.decoded_calls and not marker.exists()
    return ok, [
        T(
            "step 2: a server with the default accept-list {accept}: {error}; the client saw: "
            "{answer}; payload decoded: {decoded}; marker file exists: {exists}",
            accept=str(sorted(wire.accept)),
            error=_name(exc),
            answer=str(answer),
            decoded=server.decoded_calls > 0,
            exists=marker.exists(),
        )
    ]


def step3(tmp: Path) -> tuple[bool, bool, list[Text]]:
    """(exact pairs held, module-wide let the attack through, notes)."""
    held = True
    notes: list[Text] = []
    wire = WireSettings(accept=codecs.DEFAULT_ACCEPT | {"pickle"})
    for label, attack in (("Path.touch", TouchMarker), ("builtins.eval", EvalMarker)):
        marker = tmp / f"step3-exact-{label}"
        with lesson_server(wire, restricted_loads) as server:
            send_and_wait(server, pickle.dumps(attack(marker), protocol=4))
            exc = _err(server)
        cause = exc.__cause__ if exc is not None and exc.__cause__ else exc
        held = held and isinstance(cause, ForbiddenGlobal) and not marker.exists()
        notes.append(
            T(
                "step 3: the restricted unpickler against {attack}: {error}; marker file exists: "
                "{exists}",
                attack=label,
                error=_name(exc),
                exists=marker.exists(),
            )
        )
    marker = tmp / "step3-module-wide"
    modules = frozenset({"builtins"})
    with lesson_server(wire, lambda p: module_wide_loads(p, modules)) as server:
        send_and_wait(server, pickle.dumps(EvalMarker(marker), protocol=4))
    ran = marker.exists()
    notes.append(
        T(
            "step 3: allowing the whole module builtins instead: builtins.eval ran; marker "
            "file exists: {exists}",
            exists=ran,
        )
    )
    return held, ran, notes


def step4(tmp: Path, key: bytes) -> tuple[bool, int, list[Text]]:
    """(held, frames refused before decoding, notes)."""
    marker = tmp / "step4-pwned"
    wire = WireSettings(accept=codecs.DEFAULT_ACCEPT | {"pickle"}, key=key)
    attack = pickle.dumps(EvalMarker(marker), protocol=4)
    signed_ok = encode_message(codecs.get("json").id, b'{"hola":"mundo"}', signer=Signer(key))
    tampered = bytearray(signed_ok)
    tampered[12] ^= 0x20  # one bit of the JSON text
    cases: list[tuple[str, Callable[[LessonServer], Any], type[BaseException] | None]] = [
        (N_("unsigned pickle"), lambda s: send_and_wait(s, attack), SignatureMissing),
        (
            N_("pickle signed with a wrong key"),
            lambda s: send_and_wait(s, attack, key=secrets.token_bytes(32)),
            BadSignature,
        ),
        (
            N_("signed json, one bit flipped"),
            lambda s: send_raw_and_wait(s, bytes(tampered)),
            BadSignature,
        ),
        (
            N_("signed json with the right key"),
            lambda s: send_and_wait(s, b'{"hola":"mundo"}', codec_id=1, key=key),
            None,
        ),
    ]
    ok, refused, notes = True, 0, []
    for label, run_case, expected in cases:
        with lesson_server(wire, lambda p: codecs.get("json").decode(p)) as server:
            run_case(server)
            exc = _err(server)
        if expected is None:
            good = exc is None and server.results == [{"hola": "mundo"}]
        else:
            good = isinstance(exc, expected) and server.decoded_calls == 0
            refused += good
        ok = ok and good
        notes.append(
            T(
                "step 4: {case}: {error}; payload decoded: {decoded}",
                case=T(label),
                error=_name(exc),
                decoded=server.decoded_calls > 0,
            )
        )
    return ok and not marker.exists(), refused, notes


def step5(tmp: Path) -> tuple[bool, list[Text]]:
    marker = tmp / "step5-pwned"
    attack_as_data = {"__reduce__": ["pathlib.Path.touch", str(marker)], "py/object": "os.system"}
    ok, notes = True, []
    for name in ("json", "msgpack"):
        codec = codecs.get(name)
        with lesson_server(WireSettings.for_codec(name), lambda p, c=codec: c.decode(p)) as server:
            send_and_wait(server, codec.encode(attack_as_data), codec_id=codec.id)
            exc = _err(server)
        ok = ok and exc is None and server.results == [attack_as_data] and not marker.exists()
        kind = type(server.results[0]).__name__ if server.results else "?"
        notes.append(
            T(
                "step 5: the same intent as {codec}: decoded to a plain {kind}; marker file "
                "exists: {exists}",
                codec=name,
                kind=kind,
                exists=marker.exists(),
            )
        )
    return ok, notes


def run(ctx: Context) -> Outcome:
    """The five steps; the defect is what ran, the fix is what refused or stayed data."""
    key = ctx.options.get("key")
    if key is None:
        key = secrets.token_bytes(32)
        notes = [
            T(
                "signing key for step 4: a random 32-byte key made for this run "
                "(--key or AYUDANTIA_KEY to choose)"
            )
        ]
    else:
        notes = [T("signing key for step 4: the one from --key or AYUDANTIA_KEY (not shown)")]
    tmp = ctx.tmp
    ctx.stack.enter_context(quiet_logger("ayudantia.aio"))  # the refusals are the lesson's output
    ran1, n1 = step1(tmp)
    refused2, n2 = step2(tmp)
    exact3, wide3, n3 = step3(tmp)
    signed4, refused4, n4 = step4(tmp, key)
    data5, n5 = step5(tmp)
    notes += n1 + n2 + n3 + n4 + n5
    markers = sorted(p.name for p in tmp.iterdir())
    rows = [
        Row(
            "touch",
            N_("a pickle that calls Path.touch"),
            T("ran: marker created") if ran1 else T("nothing ran"),
            T("refused before decoding") if refused2 else T("not refused"),
        ),
        Row(
            "eval",
            N_("a pickle that calls builtins.eval"),
            T("ran: marker created") if wide3 else T("nothing ran"),
            T("ForbiddenGlobal: nothing ran") if exact3 else T("not refused"),
        ),
        Row(
            "signed",
            N_("frames without the key, refused before decoding"),
            None,
            T("{n} of {total}", n=refused4, total=3),
        ),
        Row(
            "data",
            N_("the same intent as json and msgpack"),
            None,
            T("plain data: nothing ran") if data5 else T("not plain data"),
        ),
        Row(
            "code_ran",
            N_("attacks that ran the sender's code"),
            int(ran1) + int(wide3),
            sum(m not in ("step1-pwned", "step3-module-wide") for m in markers),
        ),
    ]
    return Outcome(
        rows,
        defect_showed=ran1 and wide3,
        fix_held=refused2
        and exact3
        and signed4
        and data5
        and set(markers) <= {"step1-pwned", "step3-module-wide"},
        notes=notes,
    )
