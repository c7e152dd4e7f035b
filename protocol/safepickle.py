"""A restricted unpickler: pickle's data opcodes, and an allow-list of exact globals.

``pickle.loads`` imports and calls whatever (module, name) a pickle names; that is how a
crafted ``__reduce__`` runs ``os.system``. ``find_class`` is the only door through which a
pickle reaches a global, so we allow exact ``(module, name)`` pairs and nothing else.
Allowing a whole module is not enough: ``builtins`` alone hands out ``eval``, ``exec``,
``getattr`` and ``__import__``.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

# Plain data only. dict, list, tuple, str, bytes, int, float, bool and None have opcodes of
# their own and need no global at all; so, at pickle protocol 4 and later (what the codec
# writes), do set, frozenset and bytearray (EMPTY_SET/ADDITEMS, FROZENSET, BYTEARRAY8).
#
# The rule (issue 15, defect 9): no allowed callable allocates from a peer's integer.
# ``bytearray(2**31)`` is 2 GiB from a 48-byte pickle, and ``frozenset(range(3 * 10**7))``
# a million-fold blow-up from 66 bytes, so the set, frozenset and bytearray constructors and
# range are not on the list. Through opcodes alone, every object costs pickle bytes, so what
# a pickle builds stays within a constant factor of its size (and so of max_message).
# Every callable left here builds an object of fixed size, or one sized by the bytes or
# string it is given.
SAFE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("builtins", "complex"),
        ("builtins", "slice"),
        ("collections", "OrderedDict"),
        ("datetime", "date"),
        ("datetime", "time"),
        ("datetime", "datetime"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
        ("decimal", "Decimal"),
    }
)


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle asked for a global that is not on the allow-list."""

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name
        super().__init__(f"global {module}.{name} is not allowed")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` answers only the allow-list."""

    def __init__(self, file: Any, allowed: frozenset[tuple[str, str]] = SAFE_GLOBALS) -> None:
        super().__init__(file)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._allowed:
            raise ForbiddenGlobal(module, name)
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def restricted_loads(
    data: bytes | bytearray | memoryview, allowed: frozenset[tuple[str, str]] = SAFE_GLOBALS
) -> Any:
    """``pickle.loads`` that refuses every global outside ``allowed``."""
    return RestrictedUnpickler(io.BytesIO(data), allowed).load()
