"""Load generator for issue 9's targets: black-box clients against real server processes.

Run as its own process, so its event loop never shares a core's time slice with the server
it measures through the same interpreter::

    python -m bench.loadgen students     --to HOST:PORT --n 5000 --server-pid PID --json
    python -m bench.loadgen flood        --to HOST:PORT --students 10 --seconds 10 --json
    python -m bench.loadgen echo-small   --to HOST:PORT --sessions 3 --rounds 20000 --json
    python -m bench.loadgen connect-rate --to HOST:PORT --workers 8 --seconds 5 --json

``--to`` is a Docencio for ``students``, ``flood`` and ``connect-rate`` and an ``ayudantia
eco`` for ``echo-small``. The output is one JSON object (``--json``) or ``key: value`` lines;
progress goes to stderr once a second. The clients speak the wire format through the
sans-IO pieces (:func:`~protocol.framing.encode_message`, :class:`~protocol.framing.FrameDecoder`),
never through the blocking :class:`~protocol.transport.Connection`: what is measured is the
server, whatever its implementation. ``echo-small`` uses no project code at all on its
client side (a hand-built header on a blocking socket), as a user of docs/protocol.md would.

The client's event loop is uvloop when it imports, stock asyncio otherwise (``--loop``
chooses); the JSON says which. ``flood --flood-reads`` makes the flooder greedy instead of
silent: it reads every answer at once, so only the server's fairness holds it back.

One module a scenario (``_students``, ``_flood``, ``_connect_rate``, ``_echo_small``), the
student connection they share (``_student``), the server's figures (``_sampler``), the small
shared bits (``_shared``) and the command line (``_cli``); each imports only downward.
"""

from bench.loadgen._cli import main, parse_args, run
from bench.loadgen._connect_rate import connect_rate
from bench.loadgen._echo_small import RawEcho, echo_session, echo_small, mp_echo_server
from bench.loadgen._flood import Flooder, flood, paced_student
from bench.loadgen._sampler import ServerSampler
from bench.loadgen._shared import CONTENIDO, DIFICIL, ECHO_PAYLOAD, TAREA, Progress, loop_name, ms
from bench.loadgen._student import Student, Tally, answer_of, connect, is_answer
from bench.loadgen._students import students

__all__ = [
    "CONTENIDO",
    "DIFICIL",
    "ECHO_PAYLOAD",
    "TAREA",
    "Flooder",
    "Progress",
    "RawEcho",
    "ServerSampler",
    "Student",
    "Tally",
    "answer_of",
    "connect",
    "connect_rate",
    "echo_session",
    "echo_small",
    "flood",
    "is_answer",
    "loop_name",
    "main",
    "mp_echo_server",
    "ms",
    "paced_student",
    "parse_args",
    "run",
    "students",
]
