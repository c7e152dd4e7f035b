"""``--loop asyncio`` and ``--loop uvloop``: the class behaves the same on both event loops.

The role tests elsewhere run on the default (``auto``: uvloop here); these run the class's
core promises on each loop explicitly, chosen through ``AYUDANTIA_LOOP`` as a user would.
"""

from __future__ import annotations

import threading

import pytest
from roles_helpers import ask, connect, profesor_count, recv_all, wait_for

pytestmark = pytest.mark.timeout(120)
KINDS = ("Contenido", "Tarea", "Pregunta Dificil")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_class_on_each_loop(procs, loop):
    """Eight students at once, mixed kinds: every answer at its asker, the count exact;
    then the Tareo restarts and the Docencio's link comes back on the same loop."""
    clase = procs.clase("msgpack", timeout=5.0, env={"AYUDANTIA_LOOP": loop})
    docencio, tareo, url = clase["docencio"], clase["tareo"], clase["profesor"].address
    assert f"loop {loop}" in docencio.stdout() and f"loop {loop}" in tareo.stdout()
    results: dict[int, list[dict]] = {}

    def student(n: int) -> None:
        with connect(docencio, "msgpack") as conn:
            for i in range(30):
                ask(conn, f"{n}-{i}", KINDS[i % 3], de=f"alumno-{n}")
            results[n] = recv_all(conn, 30)

    threads = [threading.Thread(target=student, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == list(range(8))
    for n, answers in results.items():
        assert sorted(a["id"] for a in answers) == sorted(f"{n}-{i}" for i in range(30))
        assert all("respuesta" in a for a in answers), [a for a in answers if "error" in a][:2]
    assert wait_for(lambda: profesor_count(url) == 240, 15), profesor_count(url)

    _, port = tareo.hostport
    assert tareo.stop() == 0
    procs.start(
        "tareo2",
        "tareo",
        "--codec",
        "msgpack",
        "--port",
        str(port),
        "--profesor",
        url,
        env={"AYUDANTIA_LOOP": loop},
    )
    with connect(docencio, "msgpack") as conn:

        def answered() -> bool:
            ask(conn, "again", "Tarea", de="tarde")
            return "respuesta" in recv_all(conn, 1)[0]

        assert wait_for(answered, 20, interval=0.3)
