"""Review of the lead's merge glue: regressions for the holes found."""

from __future__ import annotations

import pytest

from roles.estudiante import Estudiante, _Asked


@pytest.mark.timeout(10)
def test_a_reasked_question_answered_while_insisting_leaves_the_insist_list():
    """A re-ask answered with an error waits to be asked again; if its answer comes first,
    its entry stayed in ``_insist`` until the next reconnect (an endless student kept one
    per such question, and every question sent paid both locks in ``_ask_again``)."""
    student = Estudiante("127.0.0.1", 9, name="Ana", questions=2, quiet=True)
    qid = f"{student._prefix}1"
    student._last_n = 1
    student._asked[qid] = _Asked("Tarea", 0.0, reasked=True)
    student._take({"id": qid, "error": "el Tareo no está disponible"})
    assert qid in student._insist and qid in student._asked  # insisting, not final
    student._take({"id": qid, "respuesta": "Sí", "por": "Docencio"})
    informe = student.informe
    assert (informe.answered, informe.errors, informe.duplicates) == (1, 0, 0), informe
    assert student._insist == {} and student._asked == {}
    student._take({"id": qid, "respuesta": "Sí", "por": "Docencio"})  # once more: a duplicate
    assert (informe.answered, informe.duplicates, informe.misrouted) == (1, 1, 0), informe
