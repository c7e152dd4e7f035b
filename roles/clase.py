"""The class's vocabulary: question kinds, the four answers, and the shape of every message.

A question is a map ``{"id": str | int, "tipo": <kind>, "de": <student name>}`` (more keys
allowed); an answer is ``{"id": <the question's id>, "respuesta": str, "por": <role>}`` or
``{"id": ..., "error": str}``. Every role validates what it receives with
:func:`check_question`, so a malformed question gets an error answer instead of silence.

HTTP bodies (Tareo and Docencio talking to the Profesor) use the same codecs, chosen by
``Content-Type``/``Accept``: :func:`http_headers` and :func:`http_decode`.
"""

from __future__ import annotations

from typing import Any, Final

from protocol import codecs
from protocol.errors import CodecError

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


def _usable_id(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool)


def check_question(message: Any) -> dict[str, Any]:
    """``message`` if it is a well-formed question (of any kind), else :class:`BadQuestion`."""
    if not isinstance(message, dict):
        raise BadQuestion(f"una pregunta es un mapa, no {type(message).__name__}")
    qid = message.get("id")
    if not _usable_id(qid):
        raise BadQuestion("la pregunta no tiene un id (str o int)")
    if not isinstance(message.get("tipo"), str):
        raise BadQuestion("la pregunta no tiene tipo (str)", qid)
    if "de" in message and not isinstance(message["de"], str):
        raise BadQuestion("'de' debe ser el nombre del estudiante (str)", qid)
    return message


def answer(qid: Any, respuesta: str, por: str) -> dict[str, Any]:
    return {"id": qid, "respuesta": respuesta, "por": por}


def error(qid: Any, reason: str) -> dict[str, Any]:
    return {"id": qid, "error": reason}


def count_key(question: dict[str, Any]) -> str:
    """The key under which the Profesor counts an answered question (once per key)."""
    return f"{question.get('de', '')}/{question['id']}"


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
