"""Delivery receipts: a callback per message, called once its last byte left this process.

Queued is not delivered: a peer that stops reading is cut off after ``send_timeout`` with
its queue, and what was in it must not count as delivered (the Docencio counts an answer
only once it is out). A receipt is due once the connection's byte count at the message's
end is below what the transport has flushed; a slowly draining buffer is looked at again
every :data:`CHECK_EVERY` seconds. Made on a connection's first receipt, so the many
connections that never ask for one carry nothing.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("ayudantia.aio")

CHECK_EVERY: Final = 0.05  # seconds between looks at a write buffer that drains slowly


class Receipts:
    """Pending receipts of one connection, in the order their messages were written."""

    __slots__ = ("_flushed", "_loop", "_name", "_pending", "_timer")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, flushed: Callable[[], int | None], name: str
    ) -> None:
        self._loop = loop
        self._flushed = flushed  # bytes that left this process so far (None: closing)
        self._name = name
        self._pending: collections.deque[tuple[int, Callable[[], None]]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, end: int, callback: Callable[[], None]) -> None:
        """``callback`` once the byte count ``end`` has been flushed."""
        self._pending.append((end, callback))
        self.check()

    @property
    def idle(self) -> bool:
        """Nothing pending and no timer: the connection may drop this object (and its deque,
        ~600 bytes: a student with its answers delivered keeps none)."""
        return not self._pending and self._timer is None

    def check(self) -> None:
        """Call the receipts of every message whose bytes have all left the write buffer."""
        if not self._pending:
            return
        flushed = self._flushed()
        if flushed is None:
            return
        self._call(flushed)
        if self._pending and self._timer is None:
            self._timer = self._loop.call_later(CHECK_EVERY, self._tick)

    def settle(self, flushed: bool) -> int:
        """At the end: a close that flushed everything delivered all, an abort none.

        Returns how many receipts were dropped undelivered.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if flushed:
            self._call(math.inf)
            return 0
        dropped = len(self._pending)
        self._pending.clear()
        return dropped

    def _call(self, flushed: float) -> None:
        pending = self._pending
        while pending and pending[0][0] <= flushed:
            _, callback = pending.popleft()
            try:
                callback()
            except Exception:
                log.exception("%s: delivery receipt failed", self._name)

    def _tick(self) -> None:
        self._timer = None
        self.check()
