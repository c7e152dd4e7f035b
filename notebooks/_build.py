"""Writes the course notebook redone on ayudantia, in Spanish and in English, from one source.

Why one script: the two notebooks must never drift. Every cell is written once here; the
prose comes from the es/en table beside it and the code cells are the same code with their
printed labels filled in per language (``$name`` placeholders, :class:`string.Template`).
The lessons the notebook runs speak through the gettext catalogs themselves.

    uv run python notebooks/_build.py          # rewrites notebooks/ayudantia-09*.ipynb
    uv run python notebooks/_build.py --check  # exit 1 if the committed files differ

The files are committed without outputs; ``tests/test_notebooks.py`` checks that this
script reproduces them byte for byte and executes both on a real kernel.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from string import Template

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
FILES = {"es": "ayudantia-09.ipynb", "en": "ayudantia-09.en.ipynb"}

# Printed labels of the code cells, per language.
LABELS = {
    "es": {
        "lang": "es",
        "chars": "caracteres",
        "book": "el Quijote",
        "defect": "defecto",
        "fix": "arreglo",
        "as_taught": "como se enseña",
        "wire": "bytes en el cable",
        "frames": "frames",
        "echo_equal": "el eco es igual a lo enviado",
        "refused": "rechazado",
        "accepted": "ACEPTADO (no debería)",
        "listening": "escuchando en",
        "counted": "preguntas contadas por el Profesor",
        "asked": "preguntas hechas",
        "same_id": "después del mismo id enviado dos veces",
        "before": "antes",
        "stopped": "roles detenidos",
        "alive": "siguen corriendo",
        "no_listen": "no empezó a escuchar",
        "count_late": "el Profesor no llegó a la cuenta a tiempo",
    },
    "en": {
        "lang": "en",
        "chars": "characters",
        "book": "the Quijote",
        "defect": "defect",
        "fix": "fix",
        "as_taught": "as taught",
        "wire": "bytes on the wire",
        "frames": "frames",
        "echo_equal": "the echo equals what was sent",
        "refused": "refused",
        "accepted": "ACCEPTED (it should not be)",
        "listening": "listening on",
        "counted": "questions counted by the Profesor",
        "asked": "questions asked",
        "same_id": "after the same id sent twice",
        "before": "before",
        "stopped": "roles stopped",
        "alive": "still running",
        "no_listen": "did not start listening",
        "count_late": "the Profesor did not reach the count in time",
    },
}

SETUP = '''\
import atexit
import contextlib
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from ayudantia import i18n
from ayudantia.lessons import load
from ayudantia.lessons._runner import Context, render, run_lesson
from ayudantia.quijote import NOTEBOOK_MESSAGE, book_message, load_text
from protocol.errors import AyudantiaError
from roles.eco import Eco
from roles.wire import WireSettings

LANG = "$lang"
_ = i18n.translator(LANG)
CARPETA = Path(tempfile.mkdtemp(prefix="ayudantia-09-"))
procesos = []  # the roles this notebook starts: the last cell (or the kernel's exit) stops them


def leccion(nombre):
    """Run a lesson in quick mode, print it in this notebook's language, return what it measured."""
    modulo = load(nombre)
    resultado = run_lesson(modulo, Context(quick=True, _=_))
    print("\\n".join(render(modulo, resultado, LANG)))
    defecto = resultado.value(modulo.HEADLINE, "defect")
    arreglo = resultado.value(modulo.HEADLINE, "fix")
    print(f">> {nombre}: $defect {defecto} -> $fix {arreglo}; $as_taught: {resultado.ok}")
    return resultado


def ayudantia(*args, ultimas=None):
    """`ayudantia ARGS` on the command line, as a student types it; prints what it printed."""
    hecho = subprocess.run(
        [sys.executable, "-m", "ayudantia", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # what the command reports is on stdout; its log (stderr) only when it failed
    salida = (hecho.stdout + (hecho.stderr if hecho.returncode else "")).rstrip().splitlines()
    print("$$ ayudantia " + " ".join(args))
    print("\\n".join(salida[-ultimas:] if ultimas else salida))
    return hecho


def iniciar(*args):
    """Start a role as its own process; wait for its "listening on HOST:PORT" line."""
    log = CARPETA / f"{args[0]}.log"
    with log.open("w") as salida:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ayudantia", *args], stdout=salida, stderr=subprocess.STDOUT
        )
    procesos.append(proc)
    hasta = time.monotonic() + 30
    while time.monotonic() < hasta and proc.poll() is None:
        m = re.search(r"listening on (?:http://)?([\\d.]+):(\\d+)", log.read_text())
        if m:
            print(f"{args[0]} $listening {m.group(1)}:{m.group(2)} (pid {proc.pid})")
            return m.group(1), int(m.group(2))
        time.sleep(0.1)
    raise RuntimeError(f"{args[0]} $no_listen:\\n{log.read_text()}")


def detener():
    """Stop every role this notebook started: SIGINT, then SIGKILL after 10 s. How many live."""
    for proc in procesos:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procesos:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return sum(proc.poll() is None for proc in procesos)


atexit.register(detener)
texto = load_text()  # --file, else AYUDANTIA_QUIJOTE, else a one-time download
print(f"$book: {len(texto):,} $chars, {len(texto.encode()):,} B UTF-8")
'''

JSON_FIX = """\
mensaje = book_message(texto)  # the notebook's message, with the whole book as "Texto"
wire = WireSettings(codec="json")
with Eco("127.0.0.1", 0, wire=wire) as eco, contextlib.closing(wire.connect(*eco.address)) as conn:
    enviado = conn.send(mensaje)
    eco_json = conn.recv()
print(f"json: $wire {enviado.wire_bytes:,}, $frames {enviado.frames}; "
      f"$echo_equal: {eco_json == mensaje}")
"""

PICKLE_FIX = """\
# The project's eco accepts json, msgpack and raw by default: a pickle is refused unread.
pickler = WireSettings(codec="pickle")
with Eco("127.0.0.1", 0, wire=WireSettings()) as eco:
    with contextlib.closing(pickler.connect(*eco.address)) as conn:
        try:
            conn.send(NOTEBOOK_MESSAGE)
            conn.recv()
            print("pickle: $accepted")
        except (AyudantiaError, OSError) as exc:
            print(f"pickle: $refused ({type(exc).__name__})")
    msgpack = WireSettings(codec="msgpack")
    with contextlib.closing(msgpack.connect(*eco.address)) as conn:
        enviado = conn.send(mensaje)
        eco_msgpack = conn.recv()
print(f"msgpack: $wire {enviado.wire_bytes:,}, $frames {enviado.frames}; "
      f"$echo_equal: {eco_msgpack == mensaje}")
"""

CHUNKS_FIX = """\
trozos = WireSettings(codec="json", chunk_size=4096)
with Eco("127.0.0.1", 0, wire=trozos) as eco:
    conn = trozos.connect(*eco.address)
    with contextlib.closing(conn):
        enviado = conn.send(mensaje)
        eco_trozos = conn.recv()
print(f"json, chunk 4096: $wire {enviado.wire_bytes:,}, $frames {enviado.frames}; "
      f"$echo_equal: {eco_trozos == mensaje}")
"""

ROLES_START = """\
try:
    profesor = iniciar("profesor", "--port", "0", "--db", str(CARPETA / "conteo.db"))
    URL = f"http://{profesor[0]}:{profesor[1]}"
    tareo = iniciar("tareo", "--port", "0", "--profesor", URL)
    docencio = iniciar(
        "docencio", "--port", "0", "--tareo", f"{tareo[0]}:{tareo[1]}", "--profesor", URL
    )
except BaseException:
    detener()  # nothing stays running when a role fails to start
    raise
"""

ROLES_CLASS = """\
PREGUNTAS = 6
estudiante = ayudantia(
    "estudiante", "--docencio", f"{docencio[0]}:{docencio[1]}",
    "--questions", str(PREGUNTAS), "--interval", "0", "--seed", "9", ultimas=6,
)
hasta = time.monotonic() + 20  # the Docencio reports each answer to the Profesor
while time.monotonic() < hasta:
    contadas = requests.get(f"{URL}/preguntas", timeout=5).json()["texto"]
    if contadas.endswith(f" {PREGUNTAS} preguntas respondidas"):
        break
    time.sleep(0.2)
else:
    raise RuntimeError(f"$count_late: {contadas}")
print(f"$asked: {PREGUNTAS}; $counted: {contadas}")
"""

WEB_FIX = """\
for ruta in ("/", "/respuesta", "/preguntas"):
    print("GET", ruta, requests.get(URL + ruta, timeout=5).json())
antes = requests.get(f"{URL}/preguntas", timeout=5).json()["texto"]
for _vez in range(2):  # a retry of the same report: the id makes it harmless
    r = requests.post(f"{URL}/preguntas", json={"id": "cuaderno-1"}, timeout=5)
print(f"$before: {antes}; $same_id: {r.json()['texto']}")
"""

CLI_RUN = """\
clase = ayudantia("run", "--students", "2", "--questions", "5")
"""

LAST = """\
vivos = detener()
pids = [proc.pid for proc in procesos]
print(f"$stopped: {len(procesos)} (pids {pids}); $alive: {vivos}")
"""

# (kind, es, en): markdown cells carry both languages; code cells one template (en = None).
CELLS: list[tuple[str, str, str | None]] = [
    (
        "md",
        "# Ayudantía 09: Networking y webservices, rehecha sobre ayudantia\n\n"
        "Este cuaderno sigue la Ayudantía 09 sección por sección (JSON, pickle, chunks, los "
        "cuatro roles, webservices). En cada una, primero **el defecto** del cuaderno original, "
        "medido por una lección (`ayudantia lesson NOMBRE`), y después **el mismo paso bien "
        "hecho** con la API y la línea de comandos de ayudantia, con los números que midió.\n\n"
        "Todo corre en tu máquina, en loopback (127.0.0.1). El Quijote se toma de "
        "`AYUDANTIA_QUIJOTE`, o se descarga una vez. Los roles que inicia este cuaderno se "
        "detienen en la última celda (y al cerrar el kernel).",
        "# Ayudantía 09: Networking and webservices, redone on ayudantia\n\n"
        "This notebook follows the course's Ayudantía 09 section by section (JSON, pickle, "
        "chunks, the four roles, webservices). In each one, first **the defect** of the "
        "original notebook, measured by a lesson (`ayudantia lesson NAME`), then **the same "
        "step done right** with ayudantia's API and command line, with the numbers it "
        "measured.\n\n"
        "Everything runs on your machine, on loopback (127.0.0.1). The Quijote comes from "
        "`AYUDANTIA_QUIJOTE`, or is downloaded once. The roles this notebook starts are "
        "stopped in the last cell (and when the kernel exits).",
    ),
    ("code", SETUP, None),
    (
        "md",
        "## Envío utilizando JSON\n\n"
        "**El defecto.** El cuaderno envía el mensaje y lee la respuesta con un solo "
        '`recv(4096)`. Con el Quijote completo como `"Texto"`, ese recv toma 4.096 bytes de '
        "más de dos millones, y `json.loads` falla.",
        "## Sending with JSON\n\n"
        "**The defect.** The notebook sends the message and reads the reply with one "
        '`recv(4096)`. With the whole Quijote as `"Texto"`, that recv takes 4,096 bytes of '
        "more than two million, and `json.loads` fails.",
    ),
    ("code", 'recv = leccion("recv")\n', None),
    (
        "md",
        "**Bien hecho.** `Connection.send` pone un largo en cada frame y `recv` lee hasta "
        "completarlo. El mismo mensaje, ida y vuelta por el eco del proyecto (API), y con "
        "`ayudantia quijote` (línea de comandos):",
        "**Done right.** `Connection.send` puts a length in every frame and `recv` reads until "
        "it is complete. The same message, there and back through the project's eco (API), "
        "and with `ayudantia quijote` (command line):",
    ),
    ("code", JSON_FIX, None),
    ("code", 'cli_json = ayudantia("quijote", "--codec", "json")\n', None),
    (
        "md",
        "## Envío utilizando Pickle\n\n"
        "**El defecto.** `pickle.loads` sobre los bytes de otro programa ejecuta el código que "
        "ese programa eligió. La lección lo muestra paso a paso (y solo ahí, a propósito).",
        "## Sending with Pickle\n\n"
        "**The defect.** `pickle.loads` on another program's bytes runs the code that program "
        "chose. The lesson shows it step by step (and only there, on purpose).",
    ),
    ("code", 'rce = leccion("pickle")\n', None),
    (
        "md",
        "**Bien hecho.** Los servidores del proyecto rechazan pickle por defecto, antes de "
        "decodificar nada; msgpack lleva el mismo diccionario sin ejecutar código:",
        "**Done right.** The project's servers refuse pickle by default, before decoding "
        "anything; msgpack carries the same dict without running code:",
    ),
    ("code", PICKLE_FIX, None),
    ("code", 'cli_msgpack = ayudantia("quijote", "--codec", "msgpack")\n', None),
    (
        "md",
        "## Uso de chunks\n\n"
        "**El defecto.** El ciclo de chunks del cuaderno nunca avanza `inicio`, y quien lee "
        'espera un `b""` que nadie envía.',
        "## Using chunks\n\n"
        "**The defect.** The notebook's chunk loop never advances `inicio`, and the reader "
        'waits for a `b""` nobody sends.',
    ),
    ("code", 'chunks = leccion("chunks")\n', None),
    (
        "md",
        "**Bien hecho.** Frames de 4.096 bytes con el flag MORE: el último no lo lleva, así "
        "quien lee sabe dónde termina el mensaje. `--stream` envía el libro crudo, trozo a "
        "trozo, y compara su sha256:",
        "**Done right.** 4,096-byte frames with the MORE flag: the last one lacks it, so the "
        "reader knows where the message ends. `--stream` sends the raw book chunk by chunk "
        "and compares its sha256:",
    ),
    ("code", CHUNKS_FIX, None),
    ("code", 'cli_chunks = ayudantia("quijote", "--chunk-size", "4096", "--stream")\n', None),
    (
        "md",
        "## Los cuatro roles: Estudiante, Tareo, Docencio (P2P) y Profesor\n\n"
        "**Los defectos.** El servidor multicliente lee `recv(4)` y luego `recv(n)` como si "
        "fueran lecturas exactas; el Docencio P2P comparte un socket al Tareo entre los "
        "threads de todos los estudiantes, y las respuestas llegan al estudiante equivocado.",
        "## The four roles: Estudiante, Tareo, Docencio (P2P) and Profesor\n\n"
        "**The defects.** The multi-client server reads `recv(4)` then `recv(n)` as if they "
        "were exact reads; the P2P Docencio shares one socket to the Tareo among the threads "
        "of every student, and answers reach the wrong student.",
    ),
    ("code", 'header = leccion("header")\n', None),
    ("code", 'mixup = leccion("mixup")\n', None),
    (
        "md",
        "**Bien hecho.** Los roles del proyecto, cada uno en su propio proceso (como las "
        "cuatro terminales del cuaderno), en puertos libres. Se detienen en la última celda.",
        "**Done right.** The project's roles, each in its own process (like the notebook's "
        "four terminals), on free ports. They are stopped in the last cell.",
    ),
    ("code", ROLES_START, None),
    (
        "md",
        "Un estudiante hace sus preguntas; cada respuesta le llega a él, y el Profesor cuenta "
        "cada pregunta una vez:",
        "A student asks its questions; every answer reaches it, and the Profesor counts each "
        "question once:",
    ),
    ("code", ROLES_CLASS, None),
    (
        "md",
        "## Webservices\n\n"
        "**El defecto.** El Profesor del cuaderno cuenta con `preguntas += 1` en memoria: un "
        "reintento cuenta dos veces y un reinicio vuelve a 0.",
        "## Webservices\n\n"
        "**The defect.** The notebook's Profesor counts with `preguntas += 1` in memory: a "
        "retry counts twice and a restart goes back to 0.",
    ),
    ("code", 'count = leccion("count")\n', None),
    (
        "md",
        "**Bien hecho.** Las mismas rutas del cuaderno, en el Profesor que iniciamos arriba "
        "(no en la nube): cada informe lleva el id de su pregunta, contado una sola vez en "
        "SQLite. Y la clase entera con `ayudantia run`, que inicia y detiene todo solo:",
        "**Done right.** The notebook's same routes, on the Profesor started above (not in "
        "the cloud): every report carries its question's id, counted once in SQLite. And the "
        "whole class with `ayudantia run`, which starts and stops everything itself:",
    ),
    ("code", WEB_FIX, None),
    ("code", CLI_RUN, None),
    (
        "md",
        "## Fin: detener los roles\n\nNada queda corriendo después de esta celda.",
        "## The end: stop the roles\n\nNothing is left running after this cell.",
    ),
    ("code", LAST, None),
]


def ruff_format(code: str) -> str:
    """The cell as ``ruff format`` writes it (the project's lint reads the notebooks too)."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", "cell.py", "-"],
        input=code,
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE.parent,
    )
    return done.stdout


def build(lang: str) -> nbformat.NotebookNode:
    """The notebook in ``lang``, without outputs."""
    labels = LABELS[lang]
    cells = []
    for index, (kind, es, en) in enumerate(CELLS):
        cell_id = f"c{index:02d}"  # stable ids: a rebuild is byte-identical
        if kind == "md":
            cells.append(new_markdown_cell(es if lang == "es" else en, id=cell_id))
        else:
            source = ruff_format(Template(es).substitute(labels)).rstrip("\n")
            cells.append(new_code_cell(source, id=cell_id))
    notebook = new_notebook(cells=cells)
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    return notebook


def render(lang: str) -> str:
    """The file's text, as written."""
    return nbformat.writes(build(lang)) + "\n"


def write(folder: Path = HERE) -> list[Path]:
    written = []
    for lang, name in FILES.items():
        path = folder / name
        path.write_text(render(lang), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = [n for lang, n in FILES.items() if (HERE / n).read_text("utf-8") != render(lang)]
        for name in stale:
            print(f"{name} differs from notebooks/_build.py: run it", file=sys.stderr)
        return 1 if stale else 0
    for path in write():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
