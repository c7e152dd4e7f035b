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


def _endless_summary(**over) -> dict:
    """What summarize() says of an endless class stopped by Ctrl+C with 1 question in flight
    whose answer the Docencio delivered (counted) but the stopped student never read."""
    summary = {"reports": 2, "students": 2, "misrouted": 0, "duplicates": 0, "errors": 35}
    summary |= {"answered": 203, "unanswered": 36, "in_flight": 1, "profesor_count": 204}
    return summary | over


def test_chaos_judges_an_endless_class_with_its_questions_in_flight():
    """run --chaos --questions 0 failed every Ctrl+C that caught a question in flight."""
    from ayudantia import chaos

    assert chaos.verdict(_endless_summary())
    assert chaos.verdict(_endless_summary(profesor_count=203))
    assert not chaos.verdict(_endless_summary(profesor_count=205))  # more than in flight
    assert not chaos.verdict(_endless_summary(unanswered=37))  # one silent, not in flight
    assert not chaos.verdict(_endless_summary(in_flight=0))  # a class with an end: exact


def test_chaos_in_an_endless_class_never_calms_down():
    """--chaos with --questions 0 stopped injecting after the first --timeout seconds."""
    from ayudantia.commands.run import calm_after

    settings = {"questions": 0, "interval": 0.05, "timeout": 10.0}
    assert calm_after(settings) == float("inf")
    assert calm_after(settings | {"questions": 100}) == 100 * 0.05 * 3.5 + 10.0
