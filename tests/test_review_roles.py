"""The review's defects that live in the roles (1, 2, 3, 4, 8 and 12), on the event-loop servers.

Each test names its defect. Real processes for the class (Profesor over HTTP, Tareo and
Docencio on their loops), real sockets for the students; the Link test runs the link on a
loop of its own against a real listening socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
import time

import pytest
from roles_helpers import ask, connect, profesor_count, recv_all, wait_for

from protocol.framing import HEADER_SIZE, FrameDecoder, Message, encode_message
from roles.link import Link

pytestmark = pytest.mark.timeout(90)


def _json_frame(text: str) -> bytes:
    """A json message written by hand, so it can hold what a codec would refuse to write."""
    return encode_message(1, text.encode("ascii"))


def test_defect1_unencodable_question_is_its_own_error_not_the_links(procs):
    """Defect 1: a question the Docencio cannot re-encode for the Tareo (1e400 decodes to inf,
    which json cannot write; a msgpack bin value) gets its own error answer; the link to the
    Tareo stays up and every other student's question is answered."""
    clase = procs.clase("json", timeout=5.0)
    docencio = clase["docencio"]
    with connect(docencio) as honest, connect(docencio, codec="msgpack") as binary:
        for i in range(5):
            ask(honest, f"h{i}", "Pregunta Dificil", de="honesto")
        with socket.create_connection(docencio.hostport) as raw:
            raw.sendall(_json_frame('{"id":"inf","tipo":"Tarea","de":"x","n":1e400}'))
            decoder = FrameDecoder()
            raw.settimeout(10)
            while not isinstance(event := decoder.next_event(), Message):
                decoder.receive_data(raw.recv(65536))
            reply = json.loads(bytes(event.payload))
        binary.send({"id": "bin", "tipo": "Tarea", "de": "y", "blob": b"\x00\x01"})
        bin_reply = recv_all(binary, 1)[0]
        got = {a["id"]: a for a in recv_all(honest, 5)}
    assert reply["id"] == "inf" and "error" in reply and "json" in reply["error"]
    assert bin_reply["id"] == "bin" and "error" in bin_reply
    assert set(got) == {f"h{i}" for i in range(5)}
    assert all("respuesta" in a for a in got.values()), got
    assert "perdida" not in docencio.stderr()


def test_defect1_unsendable_id_still_gets_an_answer(procs):
    """Defect 1 (deliver): an id holding a lone surrogate cannot be sent back in any codec;
    the student still gets an error answer (without the id) instead of silence."""
    docencio = procs.clase("json")["docencio"]
    with socket.create_connection(docencio.hostport) as raw:
        raw.sendall(_json_frame('{"id":"\\ud800","tipo":"Contenido","de":"z"}'))
        raw.sendall(_json_frame('{"id":"ok","tipo":"Contenido","de":"z"}'))
        decoder, replies = FrameDecoder(), []
        raw.settimeout(10)
        while len(replies) < 2:
            event = decoder.next_event()
            if isinstance(event, Message):
                replies.append(json.loads(bytes(event.payload)))
            else:
                decoder.receive_data(raw.recv(65536))
    assert replies[0]["id"] is None and "surrogate" in replies[0]["error"]
    assert replies[1] == {**replies[1], "id": "ok"} and "respuesta" in replies[1]


def test_defect2_bad_names_are_refused_at_the_door_and_counting_goes_on(procs):
    """Defect 2: a 250-character name (a key the Profesor would refuse) and a name with a lone
    surrogate get error answers at the door; every answer after them is still counted."""
    clase = procs.clase("json")
    docencio, url = clase["docencio"], clase["profesor"].address
    with connect(docencio) as conn:
        ask(conn, "long", "Contenido", de="n" * 250)
        first = recv_all(conn, 1)[0]
        for i in range(6):
            ask(conn, f"q{i}", "Contenido", de="normal")
        rest = recv_all(conn, 6)
    with socket.create_connection(docencio.hostport) as raw:
        raw.sendall(_json_frame('{"id":"s","tipo":"Contenido","de":"\\udfff"}'))
        raw.settimeout(10)
        decoder = FrameDecoder()
        while not isinstance(event := decoder.next_event(), Message):
            decoder.receive_data(raw.recv(65536))
        surrogate = json.loads(bytes(event.payload))
    assert first["id"] == "long" and "128" in first["error"]
    assert surrogate["id"] == "s" and "error" in surrogate
    assert all("respuesta" in a for a in rest)
    assert wait_for(lambda: profesor_count(url) == 6, 10), profesor_count(url)


def test_defect3_count_keys_cannot_collide(procs):
    """Defect 3: ("a/b", "c") and ("a", "b/c") are two questions; so are two nameless
    students who both use id 7, and one student's int 7 and str "7"."""
    clase = procs.clase("json")
    docencio, url = clase["docencio"], clase["profesor"].address
    with connect(docencio) as c1, connect(docencio) as c2:
        c1.send({"id": "c", "tipo": "Contenido", "de": "a/b"})
        c2.send({"id": "b/c", "tipo": "Contenido", "de": "a"})
        c1.send({"id": 7, "tipo": "Contenido"})
        c2.send({"id": 7, "tipo": "Contenido"})
        c1.send({"id": "7", "tipo": "Contenido", "de": "a"})
        c1.send({"id": 7, "tipo": "Contenido", "de": "a"})
        answers = recv_all(c1, 4) + recv_all(c2, 2)
    assert all("respuesta" in a for a in answers), answers
    assert wait_for(lambda: profesor_count(url) == 6, 10), profesor_count(url)


def test_defect4_a_student_who_never_reads_stalls_nobody(procs):
    """Defect 4: a student floods Tarea questions and never reads its answers; an honest
    student of the same Docencio, asking during the flood, still gets every answer, none an
    error, within the Docencio's own 1 s deadline per question (the review measured 18 s)."""
    docencio = procs.clase("json", timeout=1.0)["docencio"]
    flooder = socket.socket()
    flooder.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    flooder.connect(docencio.hostport)
    flooder.setblocking(False)
    burst = _json_frame('{"id":"f","tipo":"Tarea","de":"inundador"}') * 32
    burst += _json_frame('{"id":"g","tipo":"Pregunta Dificil","de":"inundador"}') * 32
    stop, pushed_back = threading.Event(), threading.Event()
    sent = [0]

    def flood() -> None:  # bounded: 3,000,000 questions or until the honest student is done
        stuck = 0
        while not stop.is_set() and sent[0] < 3_000_000:
            try:
                flooder.send(burst)
                sent[0] += 64
                stuck = 0
            except BlockingIOError:
                stuck += 1
                if stuck >= 50:  # half a second without progress: the Docencio stopped reading
                    pushed_back.set()
                stop.wait(0.01)
            except OSError:
                return

    flooding = threading.Thread(target=flood, daemon=True)
    flooding.start()
    try:
        assert pushed_back.wait(30), "the flooder was never pushed back"
        with connect(docencio) as honest:
            asked = time.monotonic()
            for i in range(30):
                ask(honest, f"t{i}", "Tarea", de="honesto")
            got = recv_all(honest, 30, timeout=30)
            waited = time.monotonic() - asked
    finally:
        stop.set()
        flooding.join(5)
        flooder.close()
    assert sent[0] >= 64
    # The Docencio promises an answer or an error within its 1 s deadline per question; a
    # stall behind the flooder breaks that promise. This bounds a contract, not a speed:
    # unstalled, the 30 answers take milliseconds; the margin is for a loaded machine.
    assert waited < 2.5, f"answers took {waited:.1f} s: the flooder stalled the others"
    assert {a["id"] for a in got} == {f"t{i}" for i in range(30)}
    assert all("respuesta" in a for a in got), [a for a in got if "error" in a][:3]


def test_defect8_the_eco_never_sends_more_frames_than_it_received(tmp_path):
    """Defect 8: a message whose first frame carries 1 byte and whose second carries 4 MiB
    comes back in 2 frames, not 4 million."""
    from procs import running

    big = b'"' + b"a" * (4 * 1024 * 1024) + b'"'
    wire = struct.pack(">2sBBBBI", b"AY", 1, 1, 1, 0, 1) + big[:1]
    wire += struct.pack(">2sBBBBI", b"AY", 1, 1, 0, 0, len(big) - 1) + big[1:]
    with (
        running("eco", "--port", "0", "--max-message", "8M") as eco,
        socket.create_connection((eco.host, eco.port), timeout=20) as sock,
    ):
        sock.sendall(wire)
        decoder = FrameDecoder(max_message=8 * 1024 * 1024)
        while not isinstance(event := decoder.next_event(), Message):
            decoder.receive_data(sock.recv(1 << 20))
    assert bytes(event.payload) == big
    assert event.frames == 2
    assert event.wire_bytes == len(big) + 2 * HEADER_SIZE


def test_defect12_close_wins_over_a_connect_in_flight():
    """Defect 12: Link.close() while its connect is still in flight leaves no live
    connection and no task behind. The listener's backlog is full, so the link's SYN waits."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue: later connects hang in SYN
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)

        async def scenario() -> tuple[object, bool, int]:
            link = Link("127.0.0.1", port, timeout=1.0, connect_timeout=30.0)
            link.start()
            await asyncio.sleep(0.3)  # the supervisor is inside create_connection now
            await link.close()
            answers: list[dict] = []
            link.request({"id": 1, "tipo": "Tarea"}, answers.append)
            task = link._task
            return link.conn, task is not None and task.done(), len(answers)

        conn, task_done, answered = asyncio.run(scenario())
        assert conn is None and task_done and answered == 1
        # Whatever the kernel queued for the link is closed: accepting it shows EOF at once.
        ours = {f.getsockname()[1] for f in fillers}
        listener.settimeout(0.5)
        for _ in range(len(fillers) + 1):
            try:
                peer, (_, peer_port) = listener.accept()
            except TimeoutError:
                break
            with peer:
                if peer_port in ours:
                    continue
                peer.settimeout(2)
                with contextlib.suppress(ConnectionResetError):
                    assert peer.recv(1) == b""
    finally:
        for s in fillers:
            s.close()
        listener.close()
