"""When to read one peer: flow control both ways, in the shape of uvicorn's ``FlowControl``.

* **in**: work the handler took for later (:meth:`FlowControl.hold`) counts against
  ``max_held``; while that many pieces are pending the peer is not read, so TCP pushes back
  on it alone. Reading resumes at half of ``max_held``, so a busy peer is paused and resumed
  a few times, not once per message;
* **out**: while the transport's write buffer is past ``write_high`` (``pause_writing``),
  the peer is not read either (unless ``pause_reads_on_writes`` is off, as for a link);
* **turns**: a peer that had its turn on the loop yields, unread, to the others.

No timers and no loop in here: the connection asks :meth:`FlowControl.update` after each
change and acts on what it returns.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import asyncio

    from protocol.options import Limits


class Change(NamedTuple):
    """What one :meth:`FlowControl.update` did."""

    resumed: bool  # reading resumed: paused time is not the peer's silence
    unblocked: bool  # backpressure lifted: events staged in the decoder can go on


_NOTHING = Change(False, False)


class FlowControl:
    """The read side's state for one peer, and the one place that pauses or resumes it."""

    __slots__ = ("blocked", "held", "limits", "read_paused", "write_paused", "yielding")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.read_paused = False  # the transport's state: blocked or yielding
        self.blocked = False  # backpressure: its answers or its work pile up
        self.write_paused = False
        self.yielding = False  # this peer had its turn; its staged bytes wait for the next
        self.held = 0

    def hold(self) -> bool:
        """One more piece of pending work; whether reading must be looked at again."""
        self.held += 1
        return self.held >= self.limits.max_held and not self.blocked

    def release(self) -> bool:
        """One piece of pending work done; whether reading must be looked at again."""
        self.held -= 1
        return self.blocked

    def update(self, transport: asyncio.Transport) -> Change:
        """Read while this peer has room and its turn; stop while its work or answers pile up."""
        lim = self.limits
        was_blocked = self.blocked
        writes = self.write_paused and lim.pause_reads_on_writes
        if was_blocked:
            self.blocked = writes or self.held > lim.max_held // 2
        else:
            self.blocked = writes or self.held >= lim.max_held
        pause = self.blocked or self.yielding
        resumed = False
        if pause and not self.read_paused:
            self.read_paused = True
            with contextlib.suppress(RuntimeError):
                transport.pause_reading()
        elif not pause and self.read_paused:
            self.read_paused = False
            resumed = True
            with contextlib.suppress(RuntimeError):
                transport.resume_reading()
        unblocked = was_blocked and not self.blocked
        return Change(resumed, unblocked) if resumed or unblocked else _NOTHING

    @property
    def settled(self) -> bool:
        """Nothing pending, nothing unflushed, no turn owed: the peer may be closed."""
        return not (self.held or self.write_paused or self.yielding or self.blocked)
