"""Fair slots: a few workers shared by sources, so one source cannot take them all.

The Tareo asks the Profesor its hard questions from a pool of ``workers`` threads and
holds at most ``max_in_flight`` of them at once. Served in arrival order, one client with
16 connections (or one busy Docencio link) that fills the queue makes every other
client's hard question wait behind its own, past the queue deadline: starved. Here the
waiting questions are kept per source (a peer address) and the free slots are handed out
round-robin between the sources that have questions waiting, so a source that asks once
is served after at most one question of each other waiting source, however many the
others queued. Admission is max-min fair too: when the whole budget is held, a question
from a lighter source bumps the newest waiting question of the heaviest one (which gets
its error answer at once) instead of being turned away; only a source already among the
heaviest is turned away.

A slot may carry a batch (:meth:`FairSlots.take`: the Tareo asks the Profesor once for
many hard questions): the batch is filled the same way, one item per waiting source in
turn, so a flood shares every batch with the others instead of filling it.

Pure bookkeeping, no I/O and no clock: the loop thread owns it (not thread-safe).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Source(Generic[T]):
    waiting: deque[T] = field(default_factory=deque)
    running: int = 0

    @property
    def held(self) -> int:
        return len(self.waiting) + self.running


@dataclass(frozen=True)
class Admission(Generic[T]):
    """What :meth:`FairSlots.admit` decided: ``admitted``, and the item it bumped if any."""

    admitted: bool
    bumped: T | None = None


class FairSlots(Generic[T]):
    """Items waiting for one of ``slots`` slots, served round-robin by source.

    At most ``capacity`` items are held (waiting or running) in all. :meth:`admit` queues
    an item, :meth:`ready` hands out the items that may start now (one slot each),
    :meth:`done` gives a slot back, :meth:`clear` empties it (a server that stops).
    """

    def __init__(self, slots: int, capacity: int) -> None:
        if slots < 1 or capacity < 1:
            raise ValueError("slots and capacity must be at least 1")
        self.slots = slots
        self.capacity = capacity
        self._sources: dict[str, _Source[T]] = {}
        self._turns: deque[str] = deque()  # sources with items waiting, next to serve first
        self.held = 0
        self.running = 0  # items started and not done
        self.calls = 0  # slots taken: by ready() (one item each) or take() (a batch each)

    def admit(self, source: str, item: T) -> Admission[T]:
        """Queue ``item`` for ``source``; when the budget is full, bump a heavier source's."""
        bumped = None
        if self.held >= self.capacity:
            bumped = self._bump_for(source)
            if bumped is None:
                return Admission(False)
        entry = self._sources.get(source)
        if entry is None:
            entry = self._sources[source] = _Source()
        if not entry.waiting:
            self._turns.append(source)
        entry.waiting.append(item)
        self.held += 1
        return Admission(True, bumped)

    def _bump_for(self, source: str) -> T | None:
        """The newest waiting item of the heaviest source, if it holds more than ``source``
        would with one more; None when ``source`` is (or would become) among the heaviest."""
        mine = self._sources[source].held if source in self._sources else 0
        heaviest, most = None, mine + 1
        for name, entry in self._sources.items():
            if entry.waiting and entry.held > most:
                heaviest, most = name, entry.held
        if heaviest is None:
            return None
        entry = self._sources[heaviest]
        item = entry.waiting.pop()
        self.held -= 1
        if not entry.waiting:
            self._turns.remove(heaviest)
        self._forget_if_idle(heaviest)
        return item

    def ready(self) -> list[tuple[str, T]]:
        """The (source, item) pairs that take a free slot now, one source per turn."""
        started = []
        while self.calls < self.slots and self._turns:
            started.append(self._start_next())
            self.calls += 1
        return started

    def take(self, size: int) -> list[tuple[str, T]]:
        """One free slot's batch: up to ``size`` waiting items, one per source in turn
        ([] when no slot is free or nothing waits). :meth:`finished` gives the slot back."""
        if size < 1:
            raise ValueError("a batch holds at least one item")
        batch: list[tuple[str, T]] = []
        if self.calls >= self.slots:
            return batch
        while len(batch) < size and self._turns:
            batch.append(self._start_next())
        if batch:
            self.calls += 1
        return batch

    def _start_next(self) -> tuple[str, T]:
        source = self._turns.popleft()
        entry = self._sources[source]
        item = entry.waiting.popleft()
        entry.running += 1
        self.running += 1
        if entry.waiting:
            self._turns.append(source)  # its next item waits for the others' turns
        return source, item

    def done(self, source: str) -> None:
        """An item of ``source`` that :meth:`ready` started has finished: its slot is free."""
        if self._item_done(source):
            self.calls -= 1

    def finished(self, batch: list[tuple[str, T]]) -> None:
        """A batch that :meth:`take` started has finished: its items are done, its slot free."""
        ended = False
        for source, _ in batch:
            ended = self._item_done(source) or ended
        if ended:  # not when cleared meanwhile (a Tareo that stops)
            self.calls -= 1

    def _item_done(self, source: str) -> bool:
        """One running item of ``source`` is done; False if none was (cleared meanwhile)."""
        entry = self._sources.get(source)
        if entry is None or entry.running == 0:
            return False
        entry.running -= 1
        self.running -= 1
        self.held -= 1
        self._forget_if_idle(source)
        return True

    def _forget_if_idle(self, source: str) -> None:
        entry = self._sources[source]
        if not entry.held:
            del self._sources[source]

    def held_by(self, source: str) -> int:
        entry = self._sources.get(source)
        return 0 if entry is None else entry.held

    def clear(self) -> list[T]:
        """Every waiting item (not the running ones), and nothing held from then on."""
        waiting = [item for entry in self._sources.values() for item in entry.waiting]
        self._sources.clear()
        self._turns.clear()
        self.held = self.running = self.calls = 0
        return waiting
