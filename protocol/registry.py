"""A plug-in registry: things known by name and by a one-byte wire id, extensible by entry points.

Codecs (header byte 4) and content encodings (header byte 5) are both such things, and
both registries need the same machinery: lookups by name or id, plug-ins loaded once and
lazily (thread-safe) from an entry-point group, and an accept-checker the framing layer
calls as soon as a header is in. Only the words of their errors differ, so those are
the hooks a concrete registry fills in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Generic, Protocol, TypeVar


class Registered(Protocol):
    """What a registry holds: a name for the command line, an id for the wire."""

    @property
    def name(self) -> str: ...

    @property
    def id(self) -> int: ...


T = TypeVar("T", bound=Registered)
# Accept-list checkers kept per registry (see _checker); settings make only a few.
_MAX_CHECKERS = 64


class PluginRegistry(Generic[T]):
    """Items by name and by wire id; plug-ins from ``group``'s entry points load on first use.

    A subclass sets ``item_type`` and ``group`` and says, through the ``_refuse_*`` hooks,
    which typed error each failure raises.
    """

    item_type: type[T]
    group: str

    def __init__(self, items: Iterable[T], *, load_plugins: bool = True) -> None:
        self._by_name: dict[str, T] = {}
        self._by_id: dict[int, T] = {}
        self._lock = threading.Lock()
        self._plugins_loaded = not load_plugins
        self._checkers: dict[frozenset[str], Callable[[int], T]] = {}
        for item in items:
            self._add(item, builtin=True)

    # --- hooks: the errors of a concrete registry -------------------------------------------

    def _refuse_add(self, item: T, *, builtin: bool) -> None:
        """Raise when ``item`` may not join (bad id, clashing name or id)."""
        raise NotImplementedError

    def _not_an_item(self, ep_name: str, obj: object) -> Exception:
        """The error for an entry point that gave something else than ``item_type``."""
        raise NotImplementedError

    def _unknown(self, key: str | int) -> Exception:
        """The error for a name or id nobody registered."""
        raise NotImplementedError

    def _disallowed(self, name: str, accepted: frozenset[str]) -> Exception:
        """The error for a known item outside the accept-list."""
        raise NotImplementedError

    # --- the shared machinery -----------------------------------------------------------------

    def _add(self, item: T, *, builtin: bool) -> None:
        self._refuse_add(item, builtin=builtin)
        self._by_name[item.name] = item
        self._by_id[item.id] = item

    def register(self, item: T) -> T:
        """Add a third-party item; the hooks say what a clash raises."""
        self._load_plugins()
        with self._lock:
            self._add(item, builtin=False)
        return item

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        with self._lock:
            if self._plugins_loaded:
                return
            self._plugins_loaded = True
            for ep in entry_points(group=self.group):
                obj = ep.load()
                item = obj() if callable(obj) and not isinstance(obj, self.item_type) else obj
                if not isinstance(item, self.item_type):
                    raise self._not_an_item(ep.name, item)
                self._add(item, builtin=False)

    def get(self, key: str | int) -> T:
        """The item by name or wire id; the ``_unknown`` hook's error otherwise."""
        self._load_plugins()
        found = self._by_id.get(key) if isinstance(key, int) else self._by_name.get(key)
        if found is None:
            raise self._unknown(key)
        return found

    def available(self) -> list[str]:
        """Registered names in wire-id order."""
        self._load_plugins()
        return [item.name for item in sorted(self._by_id.values(), key=lambda item: item.id)]

    def _checker(self, accepted: frozenset[str]) -> Callable[[int], T]:
        """A function id -> item that raises before any payload byte is read.

        One dict lookup per message once an id has been accepted: this runs for every
        message on both front-ends. Refusals are not cached (they end the connection), nor
        unknown ids (a plug-in may register later).

        One checker per accept-list, shared: every connection of a server asks for the same
        one, and a closure with its cache per connection cost 5,000 students 2 MB.

        The checker is its cache's own ``__getitem__`` (see :class:`_Accepted`): an id
        accepted before is answered in C, with no Python frame, which a small round trip
        felt; a new id goes through ``__missing__``, which judges it.
        """
        shared = self._checkers.get(accepted)
        if shared is not None:
            return shared
        check = _Accepted(self, accepted).__getitem__
        if len(self._checkers) >= _MAX_CHECKERS:  # accept-lists come from settings: few
            self._checkers.clear()
        self._checkers[accepted] = check
        return check


class _Accepted(dict[int, T]):
    """The ids an accept-list has accepted, each with its item; a missing id is judged.

    ``__missing__`` is what ``dict.__getitem__`` calls for an id not yet here: it looks the
    id up (the registry's ``_unknown`` error if nobody registered it), refuses it when its
    name is outside the accept-list (``_disallowed``), and only then remembers it.
    """

    __slots__ = ("_accepted", "_registry")

    def __init__(self, registry: PluginRegistry[T], accepted: frozenset[str]) -> None:
        super().__init__()
        self._registry = registry
        self._accepted = accepted

    def __missing__(self, item_id: int) -> T:
        found = self._registry.get(item_id)
        if found.name not in self._accepted:
            raise self._registry._disallowed(found.name, self._accepted)
        self[item_id] = found
        return found
