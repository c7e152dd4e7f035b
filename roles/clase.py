"""The class's vocabulary: question kinds, the four answers, and the shape of every message.

A question is a map ``{"id": str | int, "tipo": <kind>, "de": <student name>}`` (more keys
allowed); an answer is ``{"id": <the question's id>, "respuesta": str, "por": <role>}`` or
``{"id": ..., "error": str}``. Every role validates what it receives with
:func:`check_question`, so a malformed question gets an error answer instead of silence.

HTTP bodies (Tareo and Docencio talking to the Profesor) use the same codecs, chosen by
``Content-Type``/``Accept``: :func:`http_headers` and :func:`http_decode`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, Final

from protocol import codecs
from protocol.errors import CodecError, EncodeError

CONTENIDO: Final = "Contenido"
TAREA: Final = "Tarea"
DIFICIL: Final = "Pregunta Dificil"
TIPOS: Final = (CONTENIDO, TAREA, DIFICIL)

# The notebook's four answers (its Tareo's copies carried a stray leading space each).
RESPUESTAS: Final = (
    "No puedes usar esa libreria",
    "No es un problema de los tests",
    "Actualizamos los tests",
    "Puedes usar esa librería :D",
)
RESPUESTA_CONTENIDO: Final = "Docencio: respondiendo pregunta de contenido"

DOCENCIO: Final = "Docencio"
TAREO: Final = "Tareo"
PROFESOR: Final = "Profesor"

PROFESOR_PORT: Final = 4444
TAREO_PORT: Final = 4445
DOCENCIO_PORT: Final = 4446


class BadQuestion(ValueError):
    """A message that is not a question; ``id`` is its id when one could be read."""

    def __init__(self, reason: str, id: Any = None) -> None:
        self.id = id
        super().__init__(reason)


# Checked at the door, so a bad name or id gets its own error answer and never reaches the
# count (a key the Profesor refuses would otherwise stop all counting behind it).
MAX_NAME = 128
MAX_ID = 128
_INT64 = 1 << 63


def _encodable(text: str) -> bool:
    """Whether ``text`` is valid Unicode text (a lone surrogate is not: no codec can send it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _id_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return "la pregunta no tiene un id (str o int)"
    if isinstance(value, int):
        return None if -_INT64 <= value < _INT64 else "el id entero no cabe en 64 bits"
    if len(value) > MAX_ID:
        return f"el id tiene {len(value)} caracteres; el máximo es {MAX_ID}"
    if not _encodable(value):
        return "el id no es texto válido (contiene un surrogate suelto)"
    return None


def check_question(message: Any) -> dict[str, Any]:
    """``message`` if it is a well-formed question (of any kind), else :class:`BadQuestion`."""
    if not isinstance(message, dict):
        raise BadQuestion(f"una pregunta es un mapa, no {type(message).__name__}")
    qid = message.get("id")
    problem = _id_problem(qid)
    if problem is not None:
        # an id we cannot send back is no id at all: the error answer goes out without it
        raise BadQuestion(
            problem, qid if isinstance(qid, int | str) and _encodable_id(qid) else None
        )
    if not isinstance(message.get("tipo"), str):
        raise BadQuestion("la pregunta no tiene tipo (str)", qid)
    if "de" in message:
        de = message["de"]
        if not isinstance(de, str):
            raise BadQuestion("'de' debe ser el nombre del estudiante (str)", qid)
        if len(de) > MAX_NAME:
            raise BadQuestion(f"el nombre tiene {len(de)} caracteres; el máximo es {MAX_NAME}", qid)
        if not _encodable(de):
            raise BadQuestion("el nombre no es texto válido (contiene un surrogate suelto)", qid)
    return message


def _encodable_id(qid: Any) -> bool:
    if isinstance(qid, bool):
        return False
    if isinstance(qid, int):
        return -_INT64 <= qid < _INT64
    return isinstance(qid, str) and _encodable(qid)


def answer(qid: Any, respuesta: str, por: str) -> dict[str, Any]:
    return {"id": qid, "respuesta": respuesta, "por": por}


def error(qid: Any, reason: str) -> dict[str, Any]:
    return {"id": qid, "error": reason}


def count_key(question: dict[str, Any], connection: str) -> str:
    """The key under which the Profesor counts an answered question (once per key).

    Who asked and which question, encoded so no two different pairs can meet: a JSON list
    (which quotes and escapes each part, and tells the int 7 from the str "7"), hashed to a
    fixed 64 characters the Profesor always accepts. A student with a name is that name (its
    re-asked questions after a reconnect count once); a student with no name is its
    ``connection`` (never a blank shared by every nameless student).
    """
    who = ["de", question["de"]] if "de" in question else ["conexion", connection]
    canonical = _KEY_JSON.encode([who, question["id"]])
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


# json.dumps with any non-default option builds a JSONEncoder per call (a third of
# count_key's time, once per counted answer); this one writes exactly the same text.
_KEY_JSON = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


# -- HTTP bodies ---------------------------------------------------------------------------


def http_headers(codec_name: str) -> dict[str, str]:
    """Headers asking the Profesor for ``codec_name`` and declaring it for our body."""
    codec = codecs.get(codec_name if codec_name != "raw" else "json")
    return {"Content-Type": codec.content_type, "Accept": codec.content_type}


def http_codec(content_type: str | None) -> codecs.Codec | None:
    """The codec a Content-Type names (parameters ignored), or None."""
    if not content_type:
        return None
    mime = content_type.split(";", 1)[0].strip().lower()
    for name in codecs.available():
        codec = codecs.get(name)
        if codec.content_type == mime and name != "raw":
            return codec
    return None


def http_decode(content_type: str | None, body: bytes, accept: frozenset[str]) -> Any:
    """Decode a response body in the codec its Content-Type names, if we accept that codec."""
    codec = http_codec(content_type)
    if codec is None:
        raise CodecError(f"unexpected Content-Type {content_type!r}")
    if codec.name not in accept:
        raise CodecError(f"refusing {codec.name} body (accepted: {', '.join(sorted(accept))})")
    return codec.decode(body)


def send_answer(
    conn: Any, reply: dict[str, Any], on_delivered: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Send ``reply`` on ``conn``; what was actually sent. ``on_delivered`` follows the reply
    itself (not an error answer sent in its place): see ``FrameConnection.send_obj``.

    A reply that cannot be encoded in the connection's codec (a number json cannot write, a
    ``bin`` value, a lone surrogate) is that reply's error: the student gets an error
    answer with the same id (or none, when the id itself is what cannot be sent), and the
    connection stays up. :class:`ConnectionClosed` still propagates: the student left.
    """
    try:
        conn.send_obj(reply, on_delivered=on_delivered)
        return reply
    except EncodeError as exc:
        fallback = error(reply.get("id"), f"la respuesta no se puede enviar en {exc.codec}: {exc}")
    try:
        conn.send_obj(fallback)
    except EncodeError:
        fallback = error(None, "la respuesta y su id no se pueden enviar en este codec")
        conn.send_obj(fallback)
    return fallback
