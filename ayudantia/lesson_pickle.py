"""The pickle security lesson: unpickling a peer's bytes runs the peer's code.

Five steps, each on loopback with real sockets, each printing what it does, what happened
and why. The "command" every attack runs is harmless: it creates an empty marker file in a
temporary directory that is deleted at the end. :func:`run_lesson` returns True when every
step behaved as taught.

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
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
Say = Callable[[str], None]


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
        try:  # with a key, the handshake comes first, and a wrong key fails it here
            conn.send_payload(codec_id, payload)
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


# --- the lesson -------------------------------------------------------------------------------


@dataclass
class Step:
    number: int
    title: str
    ok: bool = False


def _verdict(say: Say, step: Step, ok: bool) -> None:
    step.ok = ok
    say(f"  result:   {'as taught' if ok else 'NOT AS TAUGHT'}")
    say("")


def step1(say: Say, tmp: Path) -> bool:
    marker = tmp / "step1-pwned"
    say("  doing:    start a mini server on loopback that reads one framed message and calls")
    say("            plain pickle.loads on it (DELIBERATELY INSECURE: the only place it exists);")
    say("            send it a pickle whose __reduce__ returns (pathlib.Path.touch, (marker,))")
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
    say(f"  happened: the server ran pathlib.Path.touch({marker.name!r}) while unpickling; ")
    say(f"            marker file exists: {appeared}; server error: {outcome.get('error')}")
    say("  why:      a pickle is a program for a small stack machine; its REDUCE opcode calls")
    say("            any callable it can name with arguments it supplies. The sender chose the")
    say("            code; the receiver ran it before it ever saw an 'object'.")
    return appeared


def step2(say: Say, tmp: Path) -> bool:
    marker = tmp / "step2-pwned"
    wire = WireSettings()  # the defaults every role starts from
    say(f"  doing:    a project server with the default accept-list {sorted(wire.accept)}")
    say("            receives the same crafted pickle frame (codec id 2)")
    with lesson_server(wire, lambda p: codecs.get("pickle").decode(p)) as server:
        payload = pickle.dumps(TouchMarker(marker), protocol=pickle.HIGHEST_PROTOCOL)
        answer = send_and_wait(server, payload)
        exc = _err(server)
    say(
        f"  happened: {_name(exc)}; client saw: {answer}; payload decoded: "
        f"{server.decoded_calls > 0}; marker exists: {marker.exists()}"
    )
    say("  why:      the framing checks the codec id in the 10-byte header against the")
    say("            accept-list before buffering a payload byte; pickle is never accepted")
    say("            unless a role opts in with --codec pickle")
    return isinstance(exc, ContentDisallowed) and not server.decoded_calls and not marker.exists()


def step3(say: Say, tmp: Path) -> bool:
    ok = True
    wire = WireSettings(accept=codecs.DEFAULT_ACCEPT | {"pickle"})
    say("  doing:    a server that opted in to pickle decodes with the project's restricted")
    say("            unpickler (find_class allows exact (module, name) pairs of plain data")
    say("            types only); it receives Path.touch, then builtins.eval, attacks")
    for label, attack in (("Path.touch", TouchMarker), ("builtins.eval", EvalMarker)):
        marker = tmp / f"step3-exact-{label}"
        with lesson_server(wire, restricted_loads) as server:
            send_and_wait(server, pickle.dumps(attack(marker), protocol=4))
            exc = _err(server)
        cause = exc.__cause__ if exc is not None and exc.__cause__ else exc
        blocked = isinstance(cause, ForbiddenGlobal) and not marker.exists()
        say(f"  happened: {label} attack -> {_name(exc)}; marker exists: {marker.exists()}")
        ok = ok and blocked
    marker = tmp / "step3-module-wide"
    modules = frozenset({"builtins"})
    say("  doing:    now the tempting shortcut: allow the whole module 'builtins' (it holds")
    say("            set, frozenset, bytearray...) and send the builtins.eval attack")
    with lesson_server(wire, lambda p: module_wide_loads(p, modules)) as server:
        send_and_wait(server, pickle.dumps(EvalMarker(marker), protocol=4))
    appeared = marker.exists()
    say(
        f"  happened: marker exists: {appeared}: builtins.eval ran "
        "__import__('pathlib').Path(marker).touch()"
    )
    say("  why:      an allowed module is a door to every global in it: builtins alone hands")
    say("            out eval, exec, getattr and __import__, and through them any module. Only")
    say("            exact (module, name) pairs of types that carry data and nothing else hold.")
    return ok and appeared


def step4(say: Say, tmp: Path, key: bytes) -> bool:
    marker = tmp / "step4-pwned"
    wire = WireSettings(accept=codecs.DEFAULT_ACCEPT | {"pickle"}, key=key)
    say("  doing:    a server with a shared key (HMAC-SHA256, flag bit 1 on every frame) that")
    say("            also opted in to pickle; four clients: unsigned, signed with a wrong key,")
    say("            correctly signed but altered in transit, and correctly signed")
    attack = pickle.dumps(EvalMarker(marker), protocol=4)
    ok = True
    signed_ok = encode_message(codecs.get("json").id, b'{"hola":"mundo"}', signer=Signer(key))
    tampered = bytearray(signed_ok)
    tampered[12] ^= 0x20  # one bit of the JSON text
    cases: list[tuple[str, Callable[[LessonServer], Any], type[BaseException] | None]] = [
        ("unsigned pickle", lambda s: send_and_wait(s, attack), SignatureMissing),
        (
            "pickle signed with a wrong key",
            lambda s: send_and_wait(s, attack, key=secrets.token_bytes(32)),
            BadSignature,
        ),
        (
            "signed json, one bit flipped",
            lambda s: send_raw_and_wait(s, bytes(tampered)),
            BadSignature,
        ),
        (
            "signed json with the right key",
            lambda s: send_and_wait(s, b'{"hola":"mundo"}', codec_id=1, key=key),
            None,
        ),
    ]
    for label, run, expected in cases:
        with lesson_server(wire, lambda p: codecs.get("json").decode(p)) as server:
            run(server)
            exc = _err(server)
        if expected is None:
            good = exc is None and server.results == [{"hola": "mundo"}]
        else:
            good = isinstance(exc, expected) and server.decoded_calls == 0
        ok = ok and good
        say(f"  happened: {label}: {_name(exc)}; payload decoded: {server.decoded_calls > 0}")
    say(f"            marker exists: {marker.exists()}")
    say("  why:      the receiver recomputes each frame's tag over header, sequence number and")
    say("            data and compares with hmac.compare_digest before the data joins a")
    say("            message; without the key nobody can make a frame it will decode. But a")
    say("            signature says who sent a pickle, not that the pickle is harmless.")
    return ok and not marker.exists()


def step5(say: Say, tmp: Path) -> bool:
    marker = tmp / "step5-pwned"
    attack_as_data = {"__reduce__": ["pathlib.Path.touch", str(marker)], "py/object": "os.system"}
    say("  doing:    the same intent sent as json and as msgpack to default servers")
    ok = True
    for name in ("json", "msgpack"):
        codec = codecs.get(name)
        with lesson_server(WireSettings.for_codec(name), lambda p, c=codec: c.decode(p)) as server:
            send_and_wait(server, codec.encode(attack_as_data), codec_id=codec.id)
            exc = _err(server)
        good = exc is None and server.results == [attack_as_data] and not marker.exists()
        ok = ok and good
        kind = type(server.results[0]).__name__ if server.results else "?"
        say(f"  happened: {name}: decoded to a plain {kind}; marker exists: {marker.exists()}")
    say("  why:      json and msgpack decode to dicts, lists, strings and numbers and never call")
    say("            anything a peer names. Between parties that do not trust each other use json")
    say("            or msgpack (and sign frames if you must know who sent them); keep pickle for")
    say("            bytes you produced yourself.")
    return ok


def run_lesson(say: Say = print, key: bytes | None = None) -> bool:
    """Run the five steps; True when each behaved as taught."""
    if key is None:
        key = secrets.token_bytes(32)
        key_note = "a random 32-byte key generated for this run (--key / AYUDANTIA_KEY to choose)"
    else:
        key_note = "the key from --key / AYUDANTIA_KEY (not shown)"
    steps = [
        Step(1, "plain pickle.loads runs the sender's code"),
        Step(2, "the default accept-list refuses pickle before decoding"),
        Step(3, "a restricted unpickler: exact (module, name) pairs, not modules"),
        Step(4, "signed frames: HMAC-SHA256, verified before decoding"),
        Step(5, "the conclusion: json or msgpack between parties that do not trust each other"),
    ]
    say("The pickle security lesson. Every 'attack' below only creates an empty marker file")
    say("in a temporary directory, which is removed at the end.")
    say(f"Signing key for step 4: {key_note}.")
    say("")
    with tempfile.TemporaryDirectory(prefix="ayudantia-lesson-") as tmpdir:
        tmp = Path(tmpdir)
        runners: list[Callable[[], bool]] = [
            lambda: step1(say, tmp),
            lambda: step2(say, tmp),
            lambda: step3(say, tmp),
            lambda: step4(say, tmp, key),
            lambda: step5(say, tmp),
        ]
        for step, runner in zip(steps, runners, strict=True):
            say(f"Step {step.number}: {step.title}")
            try:
                ok = runner()
            except Exception as exc:  # a step that crashes did not behave as taught
                say(f"  happened: the step itself failed: {type(exc).__name__}: {exc}")
                ok = False
            _verdict(say, step, ok)
    passed = sum(s.ok for s in steps)
    say(f"{passed}/{len(steps)} steps behaved as taught.")
    return passed == len(steps)
