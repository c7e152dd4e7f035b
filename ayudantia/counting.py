"""Whether the Profesor's count agrees with the answers the students received.

The one rule every verdict of a class applies (``run``'s summary, ``--chaos``'s verdict,
the live view's table), so it lives below all three: they import it, it imports nothing.
"""

from __future__ import annotations

__all__ = ["count_matches"]


def count_matches(count: int | None, answered: int, in_flight: int = 0) -> bool:
    """Whether the Profesor's count agrees with the answers the students received.

    Equal, for a class that ends. A class stopped by Ctrl+C (``--questions 0``) stops its
    students mid-question: the count may also hold answers the Docencio delivered that a
    stopped student never read, at most the questions it still had in flight.
    """
    return count is not None and answered <= count <= answered + in_flight
